"""Anthropic Messages and Responses requests through the agent's relay: passed through or translated, their
usage in the END, their errors in the client's dialect, against real fake backends on loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from anthropic.types import Message, MessageTokensCount
from openai.types.responses import Response

from potluck.agent.backend_client import BackendClient
from potluck.agent.backends import make_backend
from potluck.agent.catalog import Catalog
from potluck.agent.dialects.anthropic_request import BILLING_HEADER
from potluck.agent.relay import relay
from potluck.protocol.agent import EndMessage, RequestMessage, Usage
from testing.anthropic_grammar import validate_stream
from testing.fake_backend import BackgroundServer, FakeBackend
from testing.fake_vllm import FakeVLLM
from testing.responses_grammar import check_stream
from tests.agent.test_relay import RecordingSink

MODEL = "fake-model"
MESSAGES = "/v1/messages"
COUNT = "/v1/messages/count_tokens"
RESPONSES = "/v1/responses"
# "be brief" and "say hello to me": six words of prompt, four read from the cache; three tokens out.
MESSAGE_BODY: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 100,
    "system": [{"type": "text", "text": "be brief"}],
    "messages": [{"role": "user", "content": "say hello to me"}],
}
RESPONSES_BODY: dict[str, Any] = {"model": MODEL, "instructions": "be brief", "input": "say hello to me"}
USAGE = Usage(prompt_tokens=6, completion_tokens=3, total_tokens=9, cache_read_tokens=4)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


@pytest.fixture
async def client() -> AsyncIterator[BackendClient]:
    client = BackendClient()
    yield client
    client.close()


@pytest.fixture
def fake() -> Iterator[tuple[FakeBackend, str]]:
    backend = FakeBackend(chunks=3, cached_tokens=4, messages=True, tokenizer=True)
    with BackgroundServer(backend.make_app()) as server:
        yield backend, server.url


async def catalog_of(http: aiohttp.ClientSession, url: str, kind: str) -> Catalog:
    catalog = Catalog([make_backend(url, kind)])
    await catalog.refresh(http)
    return catalog


async def run(
    client: BackendClient, catalog: Catalog, path: str, body: dict[str, Any], *, model: str = MODEL
) -> tuple[EndMessage, RecordingSink]:
    sink = RecordingSink()
    req = RequestMessage("req-d", "POST", path, model, bool(body.get("stream")))
    async with asyncio.timeout(3):
        end = await relay(client, catalog, req, msgspec.json.encode(body), sink)
    return end, sink


PROBE = {"model": MODEL, "messages": [{"role": "user", "content": "ping"}]}


def asked(backend: FakeBackend) -> list[str]:
    return [r.path for r in backend.records if r.method == "POST" and r.json != PROBE]


# -- Messages, translated ---------------------------------------------------------------------------


async def test_a_message_is_translated_for_a_generic_backend(
    http: aiohttp.ClientSession, client: BackendClient, fake: tuple[FakeBackend, str]
) -> None:
    backend, url = fake
    catalog = await catalog_of(http, url, "openai")  # it has /v1/messages, but a generic server is not trusted with it
    end, sink = await run(client, catalog, MESSAGES, MESSAGE_BODY)
    assert asked(backend) == ["/v1/chat/completions"]
    assert end.error is None
    assert end.usage == USAGE
    (head,) = sink.heads
    assert (head.status, head.headers) == (200, [("Content-Type", "application/json")])
    message = Message.model_validate_json(sink.body)
    assert message.content[0].type == "text"
    assert message.content[0].text == "tok0 tok1 tok2 "
    # Anthropic counts the cached tokens beside the input, never inside it.
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (2, 4, 3)


async def test_a_message_stream_is_translated_by_the_state_machine(
    http: aiohttp.ClientSession, client: BackendClient, fake: tuple[FakeBackend, str]
) -> None:
    backend, url = fake
    catalog = await catalog_of(http, url, "openai")
    end, sink = await run(client, catalog, MESSAGES, {**MESSAGE_BODY, "stream": True})
    (chat,) = [r for r in backend.records if r.path == "/v1/chat/completions"]
    assert chat.json is not None
    assert chat.json["stream_options"] == {"include_usage": True}  # always metered
    assert end.error is None
    assert end.usage == USAGE
    assert sink.heads[0].headers == [("Content-Type", "text/event-stream")]
    result = validate_stream(sink.body)
    assert result.message is not None
    assert result.message.usage.cache_read_input_tokens == 4
    assert "".join(b.text for b in result.message.content if b.type == "text") == "tok0 tok1 tok2 "


# -- Messages, passed through ------------------------------------------------------------------------


async def test_a_message_passes_through_a_backend_that_speaks_messages(
    http: aiohttp.ClientSession, client: BackendClient, fake: tuple[FakeBackend, str]
) -> None:
    backend, url = fake
    catalog = await catalog_of(http, url, "llamacpp")
    body = {**MESSAGE_BODY, "metadata": {"user_id": "u1"}, "unknown_field": 1}  # kept, unlike when translated
    end, sink = await run(client, catalog, MESSAGES, body)
    (native,) = [r for r in backend.records if r.path == MESSAGES]
    assert native.body == msgspec.json.encode(body)
    assert asked(backend) == [MESSAGES]
    assert end.error is None
    assert end.usage == USAGE  # the same as translated: one usage record whichever way
    assert sink.body.startswith(b'{"id":"msg_')
    assert Message.model_validate_json(sink.body).usage.cache_read_input_tokens == 4


async def test_a_message_stream_passes_through_as_whole_events_with_its_usage(
    http: aiohttp.ClientSession, client: BackendClient
) -> None:
    backend = FakeBackend(chunks=3, cached_tokens=4, messages=True, delay=0.001)  # one frame per token
    with BackgroundServer(backend.make_app()) as server:
        catalog = await catalog_of(http, server.url, "llamacpp")
        end, sink = await run(client, catalog, MESSAGES, {**MESSAGE_BODY, "stream": True})
    assert end.error is None
    assert end.usage == USAGE  # read from message_start and message_delta
    assert end.ttft_s is not None
    assert all(chunk.endswith(b"\n\n") for chunk in sink.chunks)
    assert len(sink.chunks) >= 3
    result = validate_stream(sink.body)
    assert result.message is not None
    assert result.message.usage.output_tokens == 3


async def test_the_claude_code_billing_header_is_left_out_of_a_passed_through_message(
    http: aiohttp.ClientSession, client: BackendClient, fake: tuple[FakeBackend, str]
) -> None:
    backend, url = fake
    catalog = await catalog_of(http, url, "llamacpp")
    stamp = {"type": "text", "text": f"{BILLING_HEADER}: cc_version=2.1.101.e51; cch=a5145;"}
    body = {**MESSAGE_BODY, "system": [stamp, *MESSAGE_BODY["system"]]}
    end, _ = await run(client, catalog, MESSAGES, body)
    (native,) = [r for r in backend.records if r.path == MESSAGES]
    assert native.json == MESSAGE_BODY  # only the header is gone: the prompt stays cacheable
    assert end.usage == USAGE


# -- count_tokens ------------------------------------------------------------------------------------


async def count(client: BackendClient, catalog: Catalog, model: str = MODEL) -> int:
    end, sink = await run(client, catalog, COUNT, {**MESSAGE_BODY, "model": model}, model=model)
    assert (end.error, end.usage) == (None, None)  # nothing to meter
    assert sink.heads[0].status == 200
    return MessageTokensCount.model_validate_json(sink.body).input_tokens


async def test_count_tokens_is_the_backends_own_count(
    http: aiohttp.ClientSession, client: BackendClient, fake: tuple[FakeBackend, str]
) -> None:
    backend, url = fake
    assert await count(client, await catalog_of(http, url, "llamacpp")) == 6
    assert asked(backend) == [COUNT]


async def test_count_tokens_templates_and_tokenizes_on_a_llamacpp_without_it(
    http: aiohttp.ClientSession, client: BackendClient
) -> None:
    backend = FakeBackend(tokenizer=True)
    with BackgroundServer(backend.make_app()) as server:
        assert await count(client, await catalog_of(http, server.url, "llamacpp")) == 6
    assert asked(backend)[-2:] == ["/apply-template", "/tokenize"]


async def test_count_tokens_tokenizes_on_vllm(http: aiohttp.ClientSession, client: BackendClient) -> None:
    vllm = FakeVLLM("tiny")
    with BackgroundServer(vllm.make_app()) as server:
        assert await count(client, await catalog_of(http, server.url, "vllm"), "tiny") == 6
    assert [r.path for r in vllm.records if r.method == "POST"] == ["/tokenize"]


async def test_count_tokens_is_an_estimate_logged_as_one_without_a_tokenizer(
    http: aiohttp.ClientSession, client: BackendClient, fake: tuple[FakeBackend, str], caplog: pytest.LogCaptureFixture
) -> None:
    backend, url = fake
    with caplog.at_level(logging.WARNING, logger="potluck.agent.counting"):
        estimate = await count(client, await catalog_of(http, url, "openai"))
    assert estimate > 0
    assert asked(backend) == []  # asked nobody
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "ESTIMATE" in record.getMessage()


# -- Responses, translated ---------------------------------------------------------------------------


async def test_a_response_is_translated_whole(
    http: aiohttp.ClientSession, client: BackendClient, fake: tuple[FakeBackend, str]
) -> None:
    backend, url = fake
    end, sink = await run(client, await catalog_of(http, url, "llamacpp"), RESPONSES, RESPONSES_BODY)
    assert asked(backend) == ["/v1/chat/completions"]
    assert end.error is None
    assert end.usage == USAGE
    response = Response.model_validate_json(sink.body)
    assert response.output_text == "tok0 tok1 tok2 "
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.input_tokens_details.cached_tokens) == (6, 4)


async def test_a_response_stream_is_translated_by_the_state_machine(
    http: aiohttp.ClientSession, client: BackendClient, fake: tuple[FakeBackend, str]
) -> None:
    _, url = fake
    end, sink = await run(client, await catalog_of(http, url, "openai"), RESPONSES, {**RESPONSES_BODY, "stream": True})
    assert end.error is None
    assert end.usage == USAGE
    final = check_stream(sink.body)
    assert final["status"] == "completed"
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 4


# -- errors ------------------------------------------------------------------------------------------


async def test_what_the_translation_refuses_is_a_400_in_the_dialects_shape(
    http: aiohttp.ClientSession, client: BackendClient, fake: tuple[FakeBackend, str]
) -> None:
    backend, url = fake
    catalog = await catalog_of(http, url, "openai")
    odd = {**MESSAGE_BODY, "messages": [{"role": "user", "content": [{"type": "hologram"}]}]}
    end, sink = await run(client, catalog, MESSAGES, odd)
    assert end == EndMessage("req-d")
    assert sink.heads[0].status == 400
    assert msgspec.json.decode(sink.body)["type"] == "error"
    assert msgspec.json.decode(sink.body)["error"]["type"] == "invalid_request_error"
    end, sink = await run(client, catalog, RESPONSES, {**RESPONSES_BODY, "previous_response_id": "resp_1"})
    assert sink.heads[0].status == 400
    error = msgspec.json.decode(sink.body)["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "previous_response_id")
    assert asked(backend) == []


@pytest.mark.parametrize("kind", ["openai", "llamacpp"])
async def test_a_backend_error_is_an_error_body_of_the_dialect(
    http: aiohttp.ClientSession, client: BackendClient, fake: tuple[FakeBackend, str], kind: str
) -> None:
    backend, url = fake
    catalog = await catalog_of(http, url, kind)
    backend.defaults = msgspec.structs.replace(backend.defaults, chunks=3, status=503)
    end, sink = await run(client, catalog, MESSAGES, MESSAGE_BODY)
    assert end.error is None  # the answer is the error body itself
    assert sink.heads[0].status == 503
    body = msgspec.json.decode(sink.body)
    assert body["type"] == "error"
    assert body["error"]["message"] == "fake error 503"
    end, sink = await run(client, catalog, RESPONSES, RESPONSES_BODY)
    assert sink.heads[0].status == 503
    assert msgspec.json.decode(sink.body)["error"]["message"] == "fake error 503"


async def test_a_translated_message_stream_cut_off_ends_with_one_error_event_and_says_so(
    http: aiohttp.ClientSession, client: BackendClient, fake: tuple[FakeBackend, str]
) -> None:
    backend, url = fake
    catalog = await catalog_of(http, url, "openai")
    backend.defaults = msgspec.structs.replace(backend.defaults, chunks=6, fail_after=2, delay=0.001)
    end, sink = await run(client, catalog, MESSAGES, {**MESSAGE_BODY, "stream": True})
    result = validate_stream(sink.body)  # grammatical: message_start, a block, then the error
    assert result.types.count("error") == 1
    assert result.types[-1] == "error"
    assert end.error is not None
    assert (end.error.status, end.error.code, end.error.terminal_sent) == (502, "upstream_error", True)
    assert end.error.message.startswith("the backend broke off its response")


async def test_a_translated_response_stream_cut_off_ends_with_response_failed_and_says_so(
    http: aiohttp.ClientSession, client: BackendClient, fake: tuple[FakeBackend, str]
) -> None:
    backend, url = fake
    catalog = await catalog_of(http, url, "openai")
    backend.defaults = msgspec.structs.replace(backend.defaults, chunks=6, fail_after=2, delay=0.001)
    end, sink = await run(client, catalog, RESPONSES, {**RESPONSES_BODY, "stream": True})
    final = check_stream(sink.body)
    assert final["status"] == "failed"
    assert sink.body.count(b"event: response.failed") == 1
    assert end.error is not None
    assert end.error.terminal_sent


async def test_a_passed_through_stream_cut_off_is_left_for_the_hub_to_end(
    http: aiohttp.ClientSession, client: BackendClient, fake: tuple[FakeBackend, str]
) -> None:
    backend, url = fake
    catalog = await catalog_of(http, url, "llamacpp")
    backend.defaults = msgspec.structs.replace(backend.defaults, chunks=6, fail_after=2, delay=0.001)
    end, sink = await run(client, catalog, MESSAGES, {**MESSAGE_BODY, "stream": True})
    assert b"event: error" not in sink.body
    assert end.error is not None
    assert (end.error.code, end.error.terminal_sent) == ("upstream_error", False)
    assert end.usage == Usage(prompt_tokens=6, completion_tokens=1, total_tokens=7, cache_read_tokens=4)


async def test_a_whole_answer_that_cannot_be_translated_ends_with_an_error_and_no_head(
    http: aiohttp.ClientSession, client: BackendClient
) -> None:
    async def in_band_error(request: web.Request) -> web.Response:  # how older vLLM said it, with a 200
        return web.json_response({"object": "error", "message": "boom", "type": "BadRequestError", "code": 400})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", in_band_error)
    async with TestServer(app, host="127.0.0.1") as server:
        catalog = await catalog_of(http, f"http://127.0.0.1:{server.port}", "openai")
        end, sink = await run(client, catalog, MESSAGES, MESSAGE_BODY)
    assert sink.heads == []  # the hub still answers with an error status, in the client's shape
    assert end.error is not None
    assert (end.error.status, end.error.code, end.error.terminal_sent) == (502, "upstream_error", False)
