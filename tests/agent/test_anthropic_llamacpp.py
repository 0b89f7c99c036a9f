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

from potluck.agent.backend_client import BackendClient
from potluck.agent.backends import make_backend
from potluck.agent.catalog import Catalog
from potluck.agent.dialects import anthropic_count
from potluck.agent.dialects.anthropic_request import BILLING_HEADER, ThinkingControl, translate_request
from potluck.agent.dialects.anthropic_response import translate_response
from potluck.agent.dialects.anthropic_stream import MessagesStream
from potluck.agent.relay import relay
from potluck.protocol.agent import EndMessage, RequestMessage
from testing.anthropic_grammar import validate_stream
from testing.llama import start_llama_server
from tests.agent.test_relay import RecordingSink

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


# -- through the agent's relay: llama.cpp's own /v1/messages passed through, and the translation ------


async def through_agent(
    http: aiohttp.ClientSession, url: str, kind: str, path: str, body: dict[str, Any]
) -> tuple[EndMessage, RecordingSink, frozenset[str]]:
    catalog = Catalog([make_backend(url, kind)])
    await catalog.refresh(http)
    backend = catalog.backend_for("tiny")
    assert backend is not None
    client = BackendClient()
    sink = RecordingSink()
    try:
        req = RequestMessage("req-llama", "POST", path, "tiny", bool(body.get("stream")))
        end = await relay(client, catalog, req, msgspec.json.encode(body), sink)
    finally:
        client.close()
    return end, sink, backend.native_paths


@pytest.mark.parametrize("stream", [False, True])
async def test_through_the_agent_passed_through_and_translated_messages_agree(
    http: aiohttp.ClientSession, llama_url: str, stream: bool
) -> None:
    body = {**REQUEST, "stream": stream}
    native_end, native_sink, natives = await through_agent(http, llama_url, "llamacpp", "/v1/messages", body)
    assert natives == {"/v1/messages", "/v1/messages/count_tokens"}  # found by asking llama.cpp itself
    translated_end, translated_sink, none = await through_agent(http, llama_url, "openai", "/v1/messages", body)
    assert none == frozenset()

    def message(raw: bytes) -> Message:
        if not stream:
            return Message.model_validate_json(raw)
        result = validate_stream(raw).message
        assert result is not None
        return result

    native, translated = message(native_sink.body), message(translated_sink.body)
    assert translated.content == native.content
    assert translated.stop_reason == native.stop_reason == "max_tokens"
    for end in (native_end, translated_end):
        assert end.error is None
        assert end.usage is not None
        assert end.usage.completion_tokens == 12
    assert native_end.usage is not None
    assert translated_end.usage is not None
    # The prompt counted once either way (how much of it came from the cache depends on the turn before).
    assert native_end.usage.prompt_tokens == translated_end.usage.prompt_tokens == prompt_tokens(native.usage) > 0


async def test_through_the_agent_count_tokens_is_llamacpps_own(http: aiohttp.ClientSession, llama_url: str) -> None:
    body = {k: v for k, v in REQUEST.items() if k != "max_tokens"}
    native = msgspec.json.decode(await post(http, llama_url + "/v1/messages/count_tokens", msgspec.json.encode(body)))
    end, sink, _ = await through_agent(http, llama_url, "llamacpp", "/v1/messages/count_tokens", body)
    assert end.error is None
    assert msgspec.json.decode(sink.body) == native
