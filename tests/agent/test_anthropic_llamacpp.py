"""The translation against a real llama.cpp server, whose own ``/v1/messages`` is the reference.

Greedy decoding on the tiny model makes both paths say the same thing, so the translated answer
(Messages → chat completions → back) must match llama.cpp's native Messages answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import msgspec
import pytest
from anthropic.types import Message

from potluck.agent.dialects import anthropic_count
from potluck.agent.dialects.anthropic_request import BILLING_HEADER, ThinkingControl, translate_request
from potluck.agent.dialects.anthropic_response import translate_response
from potluck.agent.dialects.anthropic_stream import MessagesStream
from testing.anthropic_grammar import validate_stream
from testing.llama import start_llama_server

pytestmark = pytest.mark.slow

JSON = {"Content-Type": "application/json"}
REQUEST: dict[str, Any] = {
    "model": "tiny",
    "max_tokens": 12,
    "temperature": 0,
    "system": [{"type": "text", "text": "Say hello to the world."}],
    "messages": [{"role": "user", "content": "Hello, how are you today?"}],
}


@pytest.fixture(scope="module")
def llama_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with start_llama_server(tmp_path_factory.mktemp("llama"), alias="tiny", parallel=1) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # llama.cpp drops idle keep-alive connections on its own schedule: one connection per request.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: bytes) -> bytes:
    async with http.post(url, data=body, headers=JSON) as resp:
        data = await resp.read()
        assert resp.status == 200, data
        return data


def prompt_tokens(usage: Any) -> int:
    return int(usage.input_tokens + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0))


async def test_translated_answer_matches_native_messages(http: aiohttp.ClientSession, llama_url: str) -> None:
    body = msgspec.json.encode(REQUEST)
    native = Message.model_validate_json(await post(http, llama_url + "/v1/messages", body))
    translated = translate_request(body, control=ThinkingControl.LLAMACPP)
    out, tokens = translate_response(
        await post(http, llama_url + "/v1/chat/completions", translated.body), translated.answer
    )
    message = Message.model_validate_json(out)

    assert message.content == native.content
    assert message.content[0].type == "text"
    assert message.stop_reason == native.stop_reason == "max_tokens"
    assert message.usage.output_tokens == native.usage.output_tokens == 12
    assert prompt_tokens(message.usage) == prompt_tokens(native.usage) > 0
    assert tokens is not None
    assert tokens.output == 12


async def test_translated_stream_matches_native_stream(http: aiohttp.ClientSession, llama_url: str) -> None:
    body = msgspec.json.encode({**REQUEST, "stream": True})
    native = validate_stream(await post(http, llama_url + "/v1/messages", body)).message
    translated = translate_request(body, control=ThinkingControl.LLAMACPP)
    stream = MessagesStream(translated.answer)
    out = b""
    async with http.post(llama_url + "/v1/chat/completions", data=translated.body, headers=JSON) as resp:
        assert resp.status == 200
        async for piece in resp.content.iter_any():
            out += stream.feed(piece)
    out += stream.finish()
    message = validate_stream(out).message

    assert native is not None
    assert message is not None
    assert message.content == native.content
    assert message.stop_reason == native.stop_reason == "max_tokens"
    assert message.usage.output_tokens == native.usage.output_tokens == 12
    assert prompt_tokens(message.usage) == prompt_tokens(native.usage) > 0
    assert stream.usage is not None
    assert stream.usage.completion_tokens == 12


async def test_token_count_matches_native_count_tokens(http: aiohttp.ClientSession, llama_url: str) -> None:
    body = msgspec.json.encode({k: v for k, v in REQUEST.items() if k != "max_tokens"})
    native = msgspec.json.decode(await post(http, llama_url + "/v1/messages/count_tokens", body))["input_tokens"]
    count = anthropic_count.count_request(body)

    templated = await post(http, llama_url + "/apply-template", anthropic_count.apply_template_body(count))
    prompt = anthropic_count.read_prompt(templated)
    tokenized = await post(http, llama_url + "/tokenize", anthropic_count.llamacpp_tokenize_body(prompt))
    whole = await post(
        http, llama_url + "/v1/chat/completions/input_tokens", anthropic_count.apply_template_body(count)
    )

    assert anthropic_count.read_token_count(tokenized) == native > 10
    assert anthropic_count.read_token_count(whole) == native


async def test_without_the_billing_header_the_next_turn_reuses_the_prompt_cache(
    http: aiohttp.ClientSession, llama_url: str
) -> None:
    """Claude Code's header changes every turn; stripped, the next turn's prompt extends the last one's."""
    system = [{"type": "text", "text": "You are a relay. " * 20}]
    first_turn = [{"role": "user", "content": "Hello, how are you today?"}]
    next_turn = [*first_turn, {"role": "assistant", "content": "Fine."}, {"role": "user", "content": "Say hello."}]

    async def cached(stamp: str, messages: list[dict[str, Any]]) -> tuple[int, int]:
        header = {"type": "text", "text": f"{BILLING_HEADER}: cc_version=2.1.101.e51; cc_entrypoint=cli; cch={stamp};"}
        body = msgspec.json.encode({**REQUEST, "max_tokens": 1, "system": [header, *system], "messages": messages})
        translated = translate_request(body, control=ThinkingControl.LLAMACPP)
        assert b"cch=" not in translated.body
        _, tokens = translate_response(
            await post(http, llama_url + "/v1/chat/completions", translated.body), translated.answer
        )
        assert tokens is not None
        return tokens.cache_read, tokens.prompt

    _, first_prompt = await cached("a5145", first_turn)
    reused, _ = await cached("9f3e2", next_turn)
    assert reused >= first_prompt - 2  # all of the first turn's prompt but its generation prompt
