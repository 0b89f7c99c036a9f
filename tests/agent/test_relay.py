"""Relaying one request to a backend: what is refused, how failures end, and how answers stream through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestServer

from potluck.agent.backend_client import BackendClient
from potluck.agent.backends import make_backend
from potluck.agent.catalog import Catalog
from potluck.agent.relay import StreamSink, relay
from potluck.protocol.agent import EndMessage, HeadMessage, RequestMessage, Usage
from testing.fake_backend import BackgroundServer
from testing.fake_ollama import FakeOllama

MODEL = "m"
USAGE = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}


def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def event(payload: object) -> bytes:
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


USAGE_EVENT = event({**chunk({}), "choices": [], "usage": USAGE})
STREAM = (
    event(chunk({"role": "assistant", "content": ""}))
    + event(chunk({"content": "Hello"}))
    + event(chunk({"content": " world"}))
    + event(chunk({}, "stop"))
    + USAGE_EVENT
    + b"data: [DONE]\n\n"
)
# Cuts in the middle of events, so that what arrives together is never a whole number of events.
CUTS = (7, 130, 131, 260, len(STREAM) - 20, len(STREAM) - 3)
COMPLETION = {
    "id": "chatcmpl-2",
    "object": "chat.completion",
    "created": 1,
    "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": USAGE,
}


@dataclass
class Seen:
    method: str
    path: str
    body: bytes


@dataclass
class RecordingBackend:
    """An OpenAI-compatible server that records every request and streams `STREAM` in awkward pieces."""

    seen: list[Seen] = field(default_factory=list)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_route("*", "/{path:.*}", self._anything)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "me"}]})

    async def _anything(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.raw_path, body))
        if request.method != "POST" or request.path != "/v1/chat/completions":
            return web.json_response({"error": {"message": "not here", "type": "invalid_request_error"}}, status=404)
        if not msgspec.json.decode(body).get("stream"):
            return web.json_response(COMPLETION, headers={"Server": "backend/1.0", "X-Backend": "yes"})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Backend": "yes"})
        await resp.prepare(request)
        start = 0
        for cut in (*CUTS, len(STREAM)):
            await resp.write(STREAM[start:cut])
            start = cut
            await asyncio.sleep(0.002)  # pacing, so that the pieces travel apart
        await resp.write_eof()
        return resp


class RecordingSink(StreamSink):
    def __init__(self) -> None:
        self.heads: list[HeadMessage] = []
        self.chunks: list[bytes] = []

    def head(self, head: HeadMessage) -> None:
        assert not self.heads, "one head per response"
        self.heads.append(head)

    async def data(self, payload: bytes) -> None:
        assert self.heads, "data comes after the head"
        assert payload, "no empty data frames"
        self.chunks.append(payload)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def request(
    path: str = "/v1/chat/completions",
    *,
    method: str = "POST",
    model: str = MODEL,
    stream: bool = False,
    strip_usage: bool = False,
) -> RequestMessage:
    return RequestMessage("req-1", method, path, model, stream, strip_usage)


def body(*, stream: bool = False, **extra: object) -> bytes:
    return msgspec.json.encode(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream, **extra}
    )


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
async def backend() -> AsyncIterator[tuple[RecordingBackend, BaseTestServer]]:
    fake = RecordingBackend()
    async with TestServer(fake.make_app(), host="127.0.0.1") as server:
        yield fake, server


@pytest.fixture
async def catalog(http: aiohttp.ClientSession, backend: tuple[RecordingBackend, BaseTestServer]) -> Catalog:
    _, server = backend
    catalog = Catalog([make_backend(f"http://127.0.0.1:{server.port}/v1")])
    await catalog.refresh(http)
    assert catalog.backend_for(MODEL) is not None
    return catalog


async def run(
    client: BackendClient, catalog: Catalog, req: RequestMessage, payload: bytes
) -> tuple[EndMessage, RecordingSink]:
    sink = RecordingSink()
    async with asyncio.timeout(2):
        end = await relay(client, catalog, req, payload, sink)
    assert end.request_id == req.request_id
    return end, sink


# -- refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/pull"),
        ("POST", "/api/delete"),
        ("DELETE", "/api/delete"),
        ("POST", "/v1/models"),
        ("GET", "/v1/models"),
        ("POST", "/../api/delete"),
        ("POST", "/v1/chat/completions/../../api/delete"),
        ("POST", "/v1/chat/completions?x=1"),
        ("POST", "//evil.example/v1/chat/completions"),
        ("GET", "/v1/chat/completions"),
        ("PUT", "/v1/chat/completions"),
        ("post", "/v1/chat/completions"),
    ],
)
async def test_only_inference_posts_are_forwarded(
    client: BackendClient,
    catalog: Catalog,
    backend: tuple[RecordingBackend, BaseTestServer],
    method: str,
    path: str,
) -> None:
    fake, _ = backend
    end, sink = await run(client, catalog, request(path, method=method), body())
    assert end.error is not None
    assert (end.error.status, end.error.code, end.error.retriable) == (404, "not_found", False)
    assert sink.heads == []
    assert sink.chunks == []
    assert fake.seen == []


async def test_unknown_model_is_a_retriable_model_not_found(
    client: BackendClient, catalog: Catalog, backend: tuple[RecordingBackend, BaseTestServer]
) -> None:
    fake, _ = backend
    end, sink = await run(client, catalog, request(model="nope"), body())
    assert end.error is not None
    assert (end.error.status, end.error.code, end.error.retriable) == (404, "model_not_found", True)
    assert "nope" in end.error.message
    assert (sink.heads, fake.seen) == ([], [])


async def test_backend_refusing_connections_is_a_retriable_backend_unavailable(
    catalog: Catalog, backend: tuple[RecordingBackend, BaseTestServer]
) -> None:
    _, server = backend
    await server.close()  # the backend died after the catalog last saw it
    # A new client: no pooled connection to the dead backend, so the connect itself is refused.
    fresh = BackendClient()
    end, sink = await run(fresh, catalog, request(), body())
    assert end.error is not None
    assert (end.error.status, end.error.code, end.error.retriable) == (502, "backend_unavailable", True)
    assert "connect" in end.error.message
    assert sink.heads == []
    assert catalog.cold_waiters == 0


async def test_backend_gone_behind_a_pooled_keep_alive_connection_is_retriable(
    client: BackendClient, catalog: Catalog, backend: tuple[RecordingBackend, BaseTestServer]
) -> None:
    # A first request left a keep-alive connection in the pool; the backend then restarts (or closes the idle
    # connection, as llama.cpp does after 5 s) just before a request reuses it: nothing reached the model, so
    # another agent may be tried.
    _, server = backend
    first, _ = await run(client, catalog, request(), body())
    assert first.error is None
    await server.close()
    end, sink = await run(client, catalog, request(), body())
    assert end.error is not None
    assert end.error.status == 502
    assert end.error.retriable is True, end.error
    assert sink.heads == []


# -- pass-through --------------------------------------------------------------------------------------


async def test_stream_is_relayed_as_whole_events_byte_for_byte_with_its_usage(
    client: BackendClient, catalog: Catalog, backend: tuple[RecordingBackend, BaseTestServer]
) -> None:
    fake, _ = backend
    payload = body(stream=True, stream_options={"include_usage": True})
    end, sink = await run(client, catalog, request(stream=True), payload)
    assert end.error is None
    assert end.usage == Usage(**USAGE)
    assert end.ttft_s is not None
    assert end.total_s is not None
    assert 0 <= end.ttft_s <= end.total_s
    assert [(s.method, s.path, s.body) for s in fake.seen] == [("POST", "/v1/chat/completions", payload)]
    (head,) = sink.heads
    assert head.status == 200
    headers = {k.lower(): v for k, v in head.headers}
    assert headers["content-type"] == "text/event-stream"
    assert headers["x-backend"] == "yes"
    assert not {"transfer-encoding", "date", "server", "connection"} & set(headers)
    assert sink.body == STREAM
    assert all(c.endswith(b"\n\n") for c in sink.chunks), sink.chunks


async def test_strip_usage_asks_for_the_usage_chunk_and_removes_it(
    client: BackendClient, catalog: Catalog, backend: tuple[RecordingBackend, BaseTestServer]
) -> None:
    fake, _ = backend
    end, sink = await run(client, catalog, request(stream=True, strip_usage=True), body(stream=True))
    assert end.error is None
    assert end.usage == Usage(**USAGE)
    (seen,) = fake.seen
    assert msgspec.json.decode(seen.body)["stream_options"] == {"include_usage": True}
    assert sink.body == STREAM.replace(USAGE_EVENT, b"")
    assert sink.body.endswith(b"data: [DONE]\n\n")
    assert all(c.endswith(b"\n\n") for c in sink.chunks)


async def test_whole_answer_is_relayed_unchanged_with_its_usage(
    client: BackendClient, catalog: Catalog, backend: tuple[RecordingBackend, BaseTestServer]
) -> None:
    end, sink = await run(client, catalog, request(), body())
    assert end.error is None
    assert end.usage == Usage(**USAGE)
    assert msgspec.json.decode(sink.body) == COMPLETION
    headers = {k.lower() for k, _ in sink.heads[0].headers}
    assert "server" not in headers
    assert "x-backend" in headers


# -- native Ollama, translated -------------------------------------------------------------------------


async def test_ollama_native_request_is_translated_on_the_way_back(
    client: BackendClient, http: aiohttp.ClientSession
) -> None:
    fake = FakeOllama(["llama3.2:latest"], loaded=["llama3.2:latest"], chunks=3)
    with BackgroundServer(fake.make_app()) as server:
        catalog = Catalog([make_backend(server.url, "ollama")])
        await catalog.refresh(http)
        req = RequestMessage("req-2", "POST", "/v1/chat/completions", "llama3.2", True, True)
        payload = msgspec.json.encode(
            {
                "model": "llama3.2",
                "messages": [{"role": "user", "content": "hi there"}],
                "stream": True,
                "options": {"num_ctx": 2048},
            }
        )
        end, sink = await run(client, catalog, req, payload)
    assert end.error is None
    assert end.usage is not None
    assert end.usage.completion_tokens == 3
    assert [r.path for r in fake.records if r.path.startswith(("/api/chat", "/v1/"))] == ["/api/chat"]
    assert sink.heads[0] == HeadMessage(200, [("Content-Type", "text/event-stream")])
    frames = sink.body.split(b"\n\n")
    assert frames[-2:] == [b"data: [DONE]", b""]
    decoded = [msgspec.json.decode(f.removeprefix(b"data: ")) for f in frames[:-2]]
    assert all(d["object"] == "chat.completion.chunk" for d in decoded)
    assert all(d["choices"] for d in decoded), "no usage chunk: the client did not ask for one"
    assert "".join(d["choices"][0]["delta"].get("content", "") for d in decoded) == "tok0 tok1 tok2 "


async def test_ollama_error_status_becomes_an_openai_error_body(
    client: BackendClient, http: aiohttp.ClientSession
) -> None:
    fake = FakeOllama(["llama3.2:latest"])
    with BackgroundServer(fake.make_app()) as server:
        catalog = Catalog([make_backend(server.url, "ollama")])
        await catalog.refresh(http)
        fake.delete("llama3.2:latest")  # gone since the catalog looked
        req = RequestMessage("req-3", "POST", "/v1/chat/completions", "llama3.2", False, False)
        payload = msgspec.json.encode({"model": "llama3.2", "messages": [], "keep_alive": "1m"})
        end, sink = await run(client, catalog, req, payload)
    assert end.error is None  # the answer is the error body itself
    assert sink.heads[0].status == 404
    assert msgspec.json.decode(sink.body) == {
        "error": {"message": "model 'llama3.2' not found", "type": "invalid_request_error", "code": "model_not_found"}
    }
