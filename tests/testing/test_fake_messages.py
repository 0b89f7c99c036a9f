"""The fakes' native Anthropic Messages API and tokenizer routes speak the documented shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import msgspec
import pytest
from anthropic.types import Message, MessageTokensCount

from testing.anthropic_grammar import validate_stream
from testing.fake_backend import BackgroundServer, FakeBackend
from testing.fake_vllm import FakeVLLM

MODEL = "fake-model"
REQUEST = {
    "model": MODEL,
    "max_tokens": 100,
    "system": [{"type": "text", "text": "be brief"}],
    "messages": [{"role": "user", "content": [{"type": "text", "text": "say hello to me"}]}],
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: object) -> tuple[int, bytes]:
    async with http.post(url, data=msgspec.json.encode(body), headers={"Content-Type": "application/json"}) as resp:
        return resp.status, await resp.read()


async def test_a_native_message_is_anthropics_shape_with_cache_reads(http: aiohttp.ClientSession) -> None:
    fake = FakeBackend(chunks=3, messages=True, cached_tokens=4)
    with BackgroundServer(fake.make_app()) as server:
        status, body = await post(http, server.url + "/v1/messages", REQUEST)
        _, streamed = await post(http, server.url + "/v1/messages", {**REQUEST, "stream": True})
        _, counted = await post(http, server.url + "/v1/messages/count_tokens", REQUEST)
    assert status == 200
    message = Message.model_validate_json(body)
    assert message.content[0].type == "text"
    assert message.content[0].text == "tok0 tok1 tok2 "
    assert message.stop_reason == "end_turn"
    # Six words of prompt, four of them read from the cache.
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (2, 4, 3)
    result = validate_stream(streamed)
    assert result.message is not None
    assert result.message.content == message.content
    assert result.message.usage.output_tokens == 3
    assert result.message.usage.cache_read_input_tokens == 4
    assert "ping" in result.types
    assert MessageTokensCount.model_validate_json(counted).input_tokens == 6


async def test_native_messages_errors_limits_and_cuts(http: aiohttp.ClientSession) -> None:
    fake = FakeBackend(chunks=5, messages=True)
    with BackgroundServer(fake.make_app()) as server:
        url = server.url + "/v1/messages"
        no_max = {k: v for k, v in REQUEST.items() if k != "max_tokens"}
        assert (await post(http, url, no_max))[0] == 400
        status, body = await post(http, url, {**REQUEST, "model": "nope"})
        assert status == 404
        assert msgspec.json.decode(body) == {
            "type": "error",
            "error": {"type": "not_found_error", "message": "model: nope"},
        }
        status, body = await post(http, url, {**REQUEST, "fake": {"status": 529}})
        assert (status, msgspec.json.decode(body)["error"]["type"]) == (529, "overloaded_error")
        _, body = await post(http, url, {**REQUEST, "max_tokens": 2})
        assert Message.model_validate_json(body).stop_reason == "max_tokens"
        with pytest.raises(aiohttp.ClientPayloadError):
            await post(http, url, {**REQUEST, "stream": True, "fake": {"fail_after": 2}})
    assert [r.path for r in fake.records] == ["/v1/messages"] * 5


async def test_without_messages_the_fake_has_no_such_path(http: aiohttp.ClientSession) -> None:
    with BackgroundServer(FakeBackend().make_app()) as server:
        assert (await post(http, server.url + "/v1/messages/count_tokens", REQUEST))[0] == 404


async def test_llamacpp_tokenizer_routes_count_the_templated_prompt(http: aiohttp.ClientSession) -> None:
    fake = FakeBackend(tokenizer=True)
    chat = {
        "model": MODEL,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi you"}],
    }
    with BackgroundServer(fake.make_app()) as server:
        _, templated = await post(http, server.url + "/apply-template", chat)
        prompt = msgspec.json.decode(templated)["prompt"]
        _, tokens = await post(http, server.url + "/tokenize", {"content": prompt, "add_special": True})
    assert len(msgspec.json.decode(tokens)["tokens"]) == 4


async def test_fake_vllm_tokenizes_documents_its_routes_and_may_speak_messages(http: aiohttp.ClientSession) -> None:
    fake = FakeVLLM("tiny", messages=True)
    with BackgroundServer(fake.make_app()) as server:
        _, counted = await post(
            http, server.url + "/tokenize", {"model": "tiny", "messages": [{"role": "user", "content": "a b c"}]}
        )
        async with http.get(server.url + "/openapi.json") as resp:
            paths = (await resp.json())["paths"]
        status, _ = await post(http, server.url + "/v1/messages", {**REQUEST, "model": "tiny"})
    assert msgspec.json.decode(counted)["count"] == 3
    assert {"/v1/chat/completions", "/tokenize", "/v1/messages", "/v1/messages/count_tokens"} <= set(paths)
    assert "/v1/responses" not in paths
    assert status == 200
