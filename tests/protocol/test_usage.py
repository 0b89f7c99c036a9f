"""The one usage record: read from either dialect, derived to either, no token counted twice."""

from __future__ import annotations

import random

import anthropic.types
import msgspec
import openai.types
import pytest

from potluck.protocol.agent import Usage
from potluck.protocol.anthropic_answer import OutputTokensDetails
from potluck.protocol.anthropic_answer import Usage as AnthropicUsage
from potluck.protocol.usage import CompletionTokensDetails, OpenAIUsage, PromptTokensDetails, TokenUsage


def records(n: int = 300) -> list[TokenUsage]:
    rng = random.Random(11)
    out = [TokenUsage(), TokenUsage(input=1), TokenUsage(cache_read=5), TokenUsage(output=3, reasoning=3)]
    for _ in range(n):
        output = rng.choice([0, rng.randrange(1, 5000)])
        out.append(
            TokenUsage(
                input=rng.choice([0, rng.randrange(1, 200_000)]),
                cache_read=rng.choice([0, rng.randrange(1, 200_000)]),
                cache_write=rng.choice([0, 0, rng.randrange(1, 5000)]),
                output=output,
                reasoning=rng.randrange(0, output + 1),
            )
        )
    return out


def test_openai_prompt_tokens_include_cached_tokens_anthropic_input_tokens_do_not() -> None:
    openai_usage = msgspec.json.decode(
        b'{"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,'
        b' "prompt_tokens_details": {"cached_tokens": 800}, "completion_tokens_details": {"reasoning_tokens": 20}}',
        type=OpenAIUsage,
    )
    tokens = TokenUsage.from_openai(openai_usage)
    assert tokens == TokenUsage(input=200, cache_read=800, output=50, reasoning=20)
    anthropic_usage = anthropic.types.Usage.model_validate_json(msgspec.json.encode(tokens.to_anthropic()))
    assert anthropic_usage.input_tokens == 200
    assert anthropic_usage.cache_read_input_tokens == 800
    assert anthropic_usage.cache_creation_input_tokens == 0
    assert anthropic_usage.output_tokens == 50
    assert anthropic_usage.output_tokens_details is not None
    assert anthropic_usage.output_tokens_details.thinking_tokens == 20
    # The whole prompt once on each side: 200 + 800 is the 1000 OpenAI reported, not 1800.
    assert anthropic_usage.input_tokens + anthropic_usage.cache_read_input_tokens == openai_usage.prompt_tokens


def test_anthropic_usage_to_openai_counts_the_cache_once() -> None:
    anthropic_usage = msgspec.json.decode(
        b'{"input_tokens": 12, "output_tokens": 300, "cache_creation_input_tokens": 2000,'
        b' "cache_read_input_tokens": 40000, "output_tokens_details": {"thinking_tokens": 100}}',
        type=AnthropicUsage,
    )
    tokens = TokenUsage.from_anthropic(anthropic_usage)
    assert tokens == TokenUsage(input=12, cache_read=40000, cache_write=2000, output=300, reasoning=100)
    openai_usage = openai.types.CompletionUsage.model_validate_json(msgspec.json.encode(tokens.to_openai()))
    assert openai_usage.prompt_tokens == 42012
    assert openai_usage.total_tokens == 42312
    assert openai_usage.prompt_tokens_details is not None
    assert openai_usage.prompt_tokens_details.cached_tokens == 40000
    assert openai_usage.completion_tokens_details is not None
    assert openai_usage.completion_tokens_details.reasoning_tokens == 100
    frame = tokens.to_frame()
    assert (frame.prompt_tokens, frame.completion_tokens, frame.total_tokens) == (42012, 300, 42312)
    assert (frame.cache_read_tokens, frame.cache_write_tokens, frame.reasoning_tokens) == (40000, 2000, 100)


def test_both_derivations_read_back_to_the_same_record() -> None:
    for record in records():
        check_round_trips(record)


def check_round_trips(record: TokenUsage) -> None:
    openai_usage = record.to_openai()
    anthropic_usage = record.to_anthropic()
    assert TokenUsage.from_openai(msgspec.json.decode(msgspec.json.encode(openai_usage), type=OpenAIUsage)) == record
    assert (
        TokenUsage.from_anthropic(msgspec.json.decode(msgspec.json.encode(anthropic_usage), type=AnthropicUsage))
        == record
    )
    # Across dialects, through the record, the prompt is one number.
    assert openai_usage.prompt_tokens == record.input + record.cache_read + record.cache_write == record.prompt
    assert anthropic_usage.input_tokens == record.input
    assert TokenUsage.from_openai(openai_usage).to_anthropic() == anthropic_usage
    # The agent→hub frame carries the record whole, through its msgpack encoding.
    frame = msgspec.msgpack.decode(msgspec.msgpack.encode(record.to_frame()), type=Usage)
    assert TokenUsage.from_frame(frame) == record
    assert TokenUsage.from_anthropic(anthropic_usage).to_openai() == openai_usage
    assert (
        openai_usage.total_tokens
        == openai_usage.prompt_tokens + openai_usage.completion_tokens
        == record.to_frame().total_tokens
    )


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (OpenAIUsage(prompt_tokens=10, completion_tokens=2), TokenUsage(input=10, output=2)),
        (
            OpenAIUsage(prompt_tokens=10, prompt_tokens_details=PromptTokensDetails(cached_tokens=25)),
            TokenUsage(cache_read=10),
        ),
        (
            OpenAIUsage(
                prompt_tokens=10, prompt_tokens_details=PromptTokensDetails(cached_tokens=6, cache_write_tokens=9)
            ),
            TokenUsage(cache_read=6, cache_write=4),
        ),
        (
            OpenAIUsage(completion_tokens=5, completion_tokens_details=CompletionTokensDetails(reasoning_tokens=9)),
            TokenUsage(output=5, reasoning=5),
        ),
        (OpenAIUsage(prompt_tokens=-3, completion_tokens=-1), TokenUsage()),
        (
            OpenAIUsage(prompt_tokens=4, prompt_tokens_details=PromptTokensDetails(cached_tokens=None)),
            TokenUsage(input=4),
        ),
    ],
)
def test_odd_backend_reports_never_inflate_the_prompt(usage: OpenAIUsage, expected: TokenUsage) -> None:
    tokens = TokenUsage.from_openai(usage)
    assert tokens == expected
    assert tokens.prompt == max(usage.prompt_tokens, 0)


def test_anthropic_thinking_tokens_are_a_part_of_output() -> None:
    usage = AnthropicUsage(
        input_tokens=1, output_tokens=3, output_tokens_details=OutputTokensDetails(thinking_tokens=7)
    )
    assert TokenUsage.from_anthropic(usage) == TokenUsage(input=1, output=3, reasoning=3)
