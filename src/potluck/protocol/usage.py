"""One usage record for every dialect, and its derivations to each dialect's ``usage`` object.

The dialects count the prompt differently: OpenAI's ``prompt_tokens`` *includes* the tokens read
from (or written to) the prompt cache, while Anthropic's ``input_tokens`` *excludes* them and
reports them beside it. `TokenUsage` keeps the five counts apart so that neither edge can count a
cached token twice; each dialect's object is derived from it where an answer leaves Potluck.
"""

from __future__ import annotations

import msgspec

from potluck.protocol.agent import Usage
from potluck.protocol.anthropic_answer import OutputTokensDetails
from potluck.protocol.anthropic_answer import Usage as AnthropicUsage


class PromptTokensDetails(msgspec.Struct, omit_defaults=True):
    """OpenAI's ``usage.prompt_tokens_details``: parts of ``prompt_tokens``."""

    cached_tokens: int | None = None
    """Prompt tokens read from the prompt cache (llama.cpp, vLLM and OpenAI report this)."""
    cache_write_tokens: int | None = None
    """Prompt tokens written to the prompt cache (OpenRouter's name; few local servers report it)."""


class CompletionTokensDetails(msgspec.Struct, omit_defaults=True):
    """OpenAI's ``usage.completion_tokens_details``: parts of ``completion_tokens``."""

    reasoning_tokens: int | None = None
    """Completion tokens spent on reasoning (already counted in ``completion_tokens``)."""


class OpenAIUsage(msgspec.Struct, omit_defaults=True):
    """OpenAI's ``usage`` object, with the details the usage record needs."""

    prompt_tokens: int = 0
    """Every prompt token, cached or not."""
    completion_tokens: int = 0
    """Every generated token, reasoning included."""
    total_tokens: int = 0
    """``prompt_tokens + completion_tokens``."""
    prompt_tokens_details: PromptTokensDetails | None = None
    """Which prompt tokens came from or went to the cache."""
    completion_tokens_details: CompletionTokensDetails | None = None
    """Which completion tokens were reasoning."""


class TokenUsage(msgspec.Struct, frozen=True, omit_defaults=True):
    """The tokens of one request, each counted once.

    ``input + cache_read + cache_write`` is the whole prompt; ``reasoning`` is the part of
    ``output`` spent thinking (a breakdown, never added to it).
    """

    input: int = 0
    """Prompt tokens neither read from nor written to the prompt cache."""
    cache_read: int = 0
    """Prompt tokens read from the prompt cache."""
    cache_write: int = 0
    """Prompt tokens written to the prompt cache."""
    output: int = 0
    """Generated tokens, reasoning included."""
    reasoning: int = 0
    """Generated tokens spent on reasoning: part of ``output``."""

    @property
    def prompt(self) -> int:
        """Every prompt token: what OpenAI calls ``prompt_tokens``."""
        return self.input + self.cache_read + self.cache_write

    @classmethod
    def of_prompt(
        cls, prompt: int, output: int, *, cache_read: int = 0, cache_write: int = 0, reasoning: int = 0
    ) -> TokenUsage:
        """From counts whose ``prompt`` includes the cached tokens (OpenAI's way, the Responses API's, the frame's).

        A backend that reports more cached tokens than prompt tokens is trusted for the prompt total:
        the cached counts are clamped so the whole prompt is never more than it said (and likewise
        reasoning within the output).
        """
        prompt = max(prompt, 0)
        cache_read = min(max(cache_read, 0), prompt)
        cache_write = min(max(cache_write, 0), prompt - cache_read)
        output = max(output, 0)
        reasoning = min(max(reasoning, 0), output)
        return cls(prompt - cache_read - cache_write, cache_read, cache_write, output, reasoning)

    @classmethod
    def from_openai(cls, usage: OpenAIUsage) -> TokenUsage:
        """Read OpenAI's ``usage``, whose ``prompt_tokens`` includes the cached tokens."""
        details = usage.prompt_tokens_details
        completion = usage.completion_tokens_details
        return cls.of_prompt(
            usage.prompt_tokens,
            usage.completion_tokens,
            cache_read=(details.cached_tokens or 0) if details else 0,
            cache_write=(details.cache_write_tokens or 0) if details else 0,
            reasoning=(completion.reasoning_tokens or 0) if completion else 0,
        )

    @classmethod
    def from_frame(cls, usage: Usage) -> TokenUsage:
        """Read the agent→hub frame's usage (counted as OpenAI does)."""
        return cls.of_prompt(
            usage.prompt_tokens,
            usage.completion_tokens,
            cache_read=usage.cache_read_tokens,
            cache_write=usage.cache_write_tokens,
            reasoning=usage.reasoning_tokens,
        )

    @classmethod
    def from_anthropic(cls, usage: AnthropicUsage) -> TokenUsage:
        """Read Anthropic's ``usage``, whose ``input_tokens`` excludes the cached tokens."""
        details = usage.output_tokens_details
        output = max(usage.output_tokens, 0)
        return cls(
            input=max(usage.input_tokens, 0),
            cache_read=max(usage.cache_read_input_tokens or 0, 0),
            cache_write=max(usage.cache_creation_input_tokens or 0, 0),
            output=output,
            reasoning=min(details.thinking_tokens, output) if details is not None else 0,
        )

    def to_openai(self) -> OpenAIUsage:
        """OpenAI's ``usage``: the cached tokens go into ``prompt_tokens`` and are broken out in its details."""
        prompt = self.prompt
        details = None
        if self.cache_read or self.cache_write:
            details = PromptTokensDetails(cached_tokens=self.cache_read, cache_write_tokens=self.cache_write or None)
        reasoning = CompletionTokensDetails(reasoning_tokens=self.reasoning) if self.reasoning else None
        return OpenAIUsage(prompt, self.output, prompt + self.output, details, reasoning)

    def to_anthropic(self) -> AnthropicUsage:
        """Anthropic's ``usage``: ``input_tokens`` is the uncached part only."""
        details = OutputTokensDetails(thinking_tokens=self.reasoning) if self.reasoning else None
        return AnthropicUsage(
            input_tokens=self.input,
            output_tokens=self.output,
            cache_creation_input_tokens=self.cache_write,
            cache_read_input_tokens=self.cache_read,
            output_tokens_details=details,
        )

    def to_frame(self) -> Usage:
        """The agent→hub frame's usage: OpenAI's three totals, and the cache and reasoning parts of them."""
        prompt = self.prompt
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=self.output,
            total_tokens=prompt + self.output,
            cache_read_tokens=self.cache_read,
            cache_write_tokens=self.cache_write,
            reasoning_tokens=self.reasoning,
        )
