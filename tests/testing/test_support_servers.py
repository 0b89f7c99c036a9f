"""The test servers themselves, driven by the official openai SDK and raw aiohttp (no Potluck involved)."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from testing.fake_backend import BackgroundServer, FakeBackend, start_in_thread
from testing.helpers import HELLO, run_as_process, sse_events, stop_process
from testing.llama import start_llama_server


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(["m1", "m2"])


@pytest.fixture
def fake_url(backend: FakeBackend) -> Iterator[str]:
    with backend.running() as url:
        yield url


@pytest.fixture
def client(fake_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{fake_url}/v1", api_key="sk-test", max_retries=0, timeout=5) as sdk:
        yield sdk


@pytest.fixture
async def aclient(fake_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{fake_url}/v1", api_key="sk-test", max_retries=0, timeout=5) as sdk:
        yield sdk


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


# ---------------------------------------------------------------------- fake backend, openai SDK (sync)


def test_models_are_listed_in_openai_shape(client: openai.OpenAI) -> None:
    models = client.models.list()

    assert [m.id for m in models.data] == ["m1", "m2"]
    assert {(m.object, m.owned_by) for m in models.data} == {("model", "fake")}
    assert client.models.retrieve("m2").id == "m2"


def test_chat_completion_has_openai_shape_and_usage(client: openai.OpenAI, backend: FakeBackend) -> None:
    reply = client.chat.completions.create(model="m1", messages=HELLO)

    assert reply.id.startswith("chatcmpl-")
    assert reply.object == "chat.completion"
    assert reply.model == "m1"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "".join(f"tok{i} " for i in range(8))
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].logprobs is None
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (4, 8, 12)
    record = backend.records[-1]
    assert (record.path, record.completed, record.disconnected, record.status) == (
        "/v1/chat/completions",
        True,
        False,
        200,
    )
    assert record.headers["authorization"] == "Bearer sk-test"
    assert record.json is not None
    assert record.json["messages"] == HELLO


def test_chat_stream_sends_role_then_one_chunk_per_token_then_finish(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m1",
        messages=HELLO,
        stream=True,
        extra_body={"fake": {"chunks": 3}},
    )
    chunks = list(stream)

    assert [c.choices[0].delta.content for c in chunks] == ["", "tok0 ", "tok1 ", "tok2 ", None]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, None, None, "stop"]
    assert {(c.id, c.object, c.model, c.created) for c in chunks} == {
        (chunks[0].id, "chat.completion.chunk", "m1", chunks[0].created)
    }
    assert all(c.usage is None for c in chunks), "usage only when stream_options.include_usage is set"


def test_chat_stream_with_include_usage_ends_with_a_usage_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m2",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=5,
    )
    chunks = list(stream)

    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == {
        "prompt_tokens": 4,
        "completion_tokens": 5,
        "total_tokens": 9,
        "completion_tokens_details": None,
        "prompt_tokens_details": None,
    }
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 5


def test_max_tokens_above_chunks_stops_naturally(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="m1",
        messages=HELLO,
        max_completion_tokens=20,
        extra_body={"fake": {"chunks": 2}},
    )

    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 2


def test_completions_stream_and_non_stream(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="m1", prompt="once upon a time", max_tokens=3)
    parts = list(
        client.completions.create(
            model="m1", prompt="once upon a time", max_tokens=3, stream=True, stream_options={"include_usage": True}
        )
    )

    assert whole.object == "text_completion"
    assert whole.id.startswith("cmpl-")
    assert whole.choices[0].text == "tok0 tok1 tok2 "
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (4, 3)
    assert "".join(p.choices[0].text for p in parts if p.choices) == whole.choices[0].text
    assert [p.choices[0].finish_reason for p in parts if p.choices][-1] == "length"
    assert parts[-1].usage is not None
    assert parts[-1].usage.total_tokens == 7


def test_embeddings_are_deterministic_per_input(client: openai.OpenAI) -> None:
    # The SDK asks for base64 by default and decodes it; ask for floats too.
    first = client.embeddings.create(model="m1", input=["hello world", "bye"])
    floats = client.embeddings.create(model="m1", input="hello world", encoding_format="float")

    assert [e.index for e in first.data] == [0, 1]
    assert all(len(e.embedding) == 8 for e in first.data)
    assert first.data[0].embedding != first.data[1].embedding
    assert floats.data[0].embedding == pytest.approx(first.data[0].embedding, abs=1e-6)
    assert all(-1 <= x < 1 for x in floats.data[0].embedding)
    assert first.usage.model_dump() == {"prompt_tokens": 3, "total_tokens": 3}


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (422, openai.UnprocessableEntityError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_status_knob_raises_the_sdks_error_class(
    client: openai.OpenAI, status: int, error_class: type[openai.APIStatusError], stream: bool
) -> None:
    with pytest.raises(error_class) as caught:
        client.chat.completions.create(
            model="m1",
            messages=HELLO,
            stream=stream,
            extra_body={"fake": {"status": status}},
        )

    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"] == f"fake error {status}"


def test_unknown_model_is_a_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=HELLO)

    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    assert caught.value.type == "invalid_request_error"


def test_raw_error_is_a_non_json_body(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.completions.create(
            model="m1", prompt="x", extra_body={"fake": {"raw_error": "upstream gone", "status": 503}}
        )

    assert caught.value.status_code == 503
    assert caught.value.response.text == "upstream gone"
    assert caught.value.response.headers["content-type"].startswith("text/plain")


def test_fail_after_cuts_the_stream(client: openai.OpenAI, backend: FakeBackend) -> None:
    stream = client.chat.completions.create(
        model="m1", messages=HELLO, stream=True, extra_body={"fake": {"fail_after": 2}}
    )
    received: list[str | None] = []
    with pytest.raises(openai.APIConnectionError):  # noqa: PT012 - the stream breaks while it is read
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)

    assert received == ["", "tok0 ", "tok1 "]
    record = backend.records[-1]
    assert (record.aborted, record.completed, record.disconnected) == (True, False, False)


def test_fail_after_without_stream_closes_the_connection_unanswered(
    client: openai.OpenAI, backend: FakeBackend
) -> None:
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m1", messages=HELLO, extra_body={"fake": {"fail_after": 2}})

    record = backend.records[-1]
    assert (record.aborted, record.completed, record.status) == (True, False, None)


def test_hang_until_the_client_gives_up_is_recorded_as_a_disconnect(
    client: openai.OpenAI, backend: FakeBackend
) -> None:
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.2).chat.completions.create(
            model="m1",
            messages=HELLO,
            extra_body={"fake": {"hang": True}},
        )

    assert backend.wait_for(lambda: backend.records[-1].disconnected, 1.0)
    record = backend.records[-1]
    assert not record.completed
    assert record.disconnected_at is not None
    assert 0 < record.disconnected_at - record.started_at < 1.0
    assert backend.wait_for(lambda: backend.in_flight == 0, 1.0)


def test_malformed_requests_are_400(fake_url: str, backend: FakeBackend) -> None:
    cases: list[tuple[str, bytes]] = [
        ("/v1/chat/completions", b"{not json"),
        ("/v1/chat/completions", b"[1, 2]"),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}]}'),
        ("/v1/chat/completions", b'{"model": "m1"}'),
        ("/v1/chat/completions", b'{"model": "m1", "messages": [], "stream": "yes"}'),
        ("/v1/chat/completions", b'{"model": "m1", "messages": [{"role": "user"}], "max_tokens": 0}'),
        ("/v1/chat/completions", b'{"model": "m1", "messages": [{"role": "user"}], "fake": {"chunkz": 1}}'),
        ("/v1/completions", b'{"model": "m1"}'),
        ("/v1/embeddings", b'{"model": "m1", "input": 3}'),
    ]

    async def post_all() -> list[tuple[int, Any]]:
        async with aiohttp.ClientSession() as session:
            results = []
            for path, body in cases:
                async with asyncio.timeout(5), session.post(fake_url + path, data=body) as resp:
                    results.append((resp.status, await resp.json()))
            return results

    for status, payload in asyncio.run(post_all()):
        assert status == 400
        assert payload["error"]["type"] == "invalid_request_error"
        assert payload["error"]["message"]
    assert all(r.completed for r in backend.records)


# ---------------------------------------------------------------------- fake backend, async SDK and raw aiohttp


async def test_async_sdk_streams_chat(aclient: openai.AsyncOpenAI) -> None:
    async with asyncio.timeout(5):
        stream = await aclient.chat.completions.create(
            model="m1",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"tok{i} " for i in range(8))
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8


async def test_async_sdk_disconnect_during_hang_is_recorded_within_a_second(
    aclient: openai.AsyncOpenAI, backend: FakeBackend
) -> None:
    request = asyncio.create_task(
        aclient.chat.completions.create(model="m1", messages=HELLO, extra_body={"fake": {"hang": True}})
    )
    assert await backend.wait_for_async(lambda: backend.in_flight == 1, 2.0)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    cancelled_at = time.monotonic()

    assert await backend.wait_for_async(lambda: backend.records[-1].disconnected, 1.0)
    assert backend.records[-1].disconnected_at is not None
    assert backend.records[-1].disconnected_at - cancelled_at < 1.0


async def test_sse_framing_on_the_wire(fake_url: str, http: aiohttp.ClientSession) -> None:
    body = {"model": "m1", "messages": HELLO, "stream": True, "fake": {"chunks": 2}}
    async with asyncio.timeout(5), http.post(f"{fake_url}/v1/chat/completions", json=body) as resp:
        raw = await resp.read()
        headers = resp.headers

    assert headers["Content-Type"] == "text/event-stream"
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    assert [e["choices"][0]["delta"] for e in events[:-1]] == [
        {"role": "assistant", "content": ""},
        {"content": "tok0 "},
        {"content": "tok1 "},
        {},
    ]
    assert events[0]["choices"][0] == {
        "index": 0,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": None,
    }


async def test_delay_paces_each_chunk(fake_url: str, http: aiohttp.ClientSession) -> None:
    delay = 0.05
    body = {"model": "m1", "messages": HELLO, "stream": True, "fake": {"chunks": 4, "delay": delay}}
    arrivals: list[float] = []
    started = time.monotonic()
    async with asyncio.timeout(5), http.post(f"{fake_url}/v1/chat/completions", json=body) as resp:
        async for line in resp.content:
            if line.startswith(b'data: {"') and b'"content":"tok' in line:
                arrivals.append(time.monotonic())

    assert len(arrivals) == 4
    assert arrivals[-1] - started >= 3 * delay
    # The first chunk was flushed on its own, long before the last one was written (robust to a busy client).
    assert arrivals[-1] - arrivals[0] >= delay, arrivals


async def test_client_leaving_mid_stream_is_recorded_as_a_disconnect(
    fake_url: str, backend: FakeBackend, http: aiohttp.ClientSession
) -> None:
    body = {"model": "m1", "messages": HELLO, "stream": True, "fake": {"chunks": 100, "delay": 0.05}}
    async with asyncio.timeout(5), http.post(f"{fake_url}/v1/chat/completions", json=body) as resp:
        async for line in resp.content:
            if b"tok1 " in line:
                break
        resp.close()

    assert await backend.wait_for_async(lambda: backend.records[-1].disconnected, 1.0)
    assert not backend.records[-1].completed
    assert await backend.wait_for_async(lambda: backend.in_flight == 0, 1.0)


async def test_unknown_routes_are_openai_404s(fake_url: str, backend: FakeBackend, http: aiohttp.ClientSession) -> None:
    async with asyncio.timeout(5), http.post(f"{fake_url}/v1/responses", json={}) as resp:
        payload = await resp.json()

    assert resp.status == 404
    assert payload["error"]["message"] == "Invalid URL (POST /v1/responses)"
    assert backend.records[-1].path == "/v1/responses"


async def test_first_delay_holds_the_response_headers(fake_url: str, http: aiohttp.ClientSession) -> None:
    body = {"model": "m1", "messages": HELLO, "stream": True, "fake": {"first_delay": 0.2}}
    started = time.monotonic()
    async with asyncio.timeout(5), http.post(f"{fake_url}/v1/chat/completions", json=body) as resp:
        headers_at = time.monotonic()
        await resp.read()

    assert headers_at - started >= 0.19


async def test_embeddings_in_base64_decode_to_the_float_vector(fake_url: str, http: aiohttp.ClientSession) -> None:
    url = f"{fake_url}/v1/embeddings"
    async with asyncio.timeout(5):
        async with http.post(url, json={"model": "m1", "input": "abc", "encoding_format": "base64"}) as resp:
            packed = (await resp.json())["data"][0]["embedding"]
        async with http.post(url, json={"model": "m1", "input": "abc", "dimensions": 3}) as resp:
            floats = (await resp.json())["data"][0]["embedding"]

    decoded = struct.unpack("<8f", base64.b64decode(packed))
    assert decoded[:3] == pytest.approx(floats, abs=1e-6)


async def test_disconnect_is_seen_without_handler_cancellation(backend: FakeBackend) -> None:
    """In aiohttp's default runner (no handler cancellation), as the main test suite's servers may run it."""
    runner = web.AppRunner(backend.make_app())
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/chat/completions"
        async with aiohttp.ClientSession() as session:
            body = {"model": "m1", "messages": HELLO, "fake": {"hang": True}}
            request = asyncio.create_task(session.post(url, json=body))
            assert await backend.wait_for_async(lambda: backend.in_flight == 1, 2.0)
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
        assert await backend.wait_for_async(lambda: backend.records[-1].disconnected, 1.0)
    finally:
        await runner.cleanup()


async def test_stopping_closes_in_flight_connections(backend: FakeBackend, http: aiohttp.ClientSession) -> None:
    server = BackgroundServer(backend.make_app())
    url = server.start()
    body = {"model": "m1", "messages": HELLO, "fake": {"hang": True}}
    request = asyncio.create_task(http.post(f"{url}/v1/chat/completions", json=body))
    assert await backend.wait_for_async(lambda: backend.in_flight == 1, 2.0)

    started = time.monotonic()
    await asyncio.to_thread(server.stop)

    assert time.monotonic() - started < 1.0
    with pytest.raises(aiohttp.ClientConnectionError):
        async with asyncio.timeout(2):
            await request
    assert backend.in_flight == 0
    assert not backend.records[-1].disconnected, "a shutdown is not a client disconnect"


def test_start_in_thread_serves_any_app() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    url, stop = start_in_thread(app)
    try:

        async def get() -> str:
            async with aiohttp.ClientSession() as session, asyncio.timeout(5), session.get(url) as resp:
                return await resp.text()

        assert asyncio.run(get()) == "hi"
    finally:
        stop()


async def test_runs_as_a_process_until_sigterm() -> None:
    proc, url = await run_as_process("testing.fake_backend", "--models", "a,b", "--chunks", "3")
    try:
        async with aiohttp.ClientSession() as session, asyncio.timeout(5):
            async with session.get(f"{url}/v1/models") as resp:
                assert [m["id"] for m in (await resp.json())["data"]] == ["a", "b"]
            body = {"model": "b", "messages": HELLO, "stream": True}
            async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
                events = sse_events(await resp.read())
        assert len(events) == 1 + 3 + 1 + 1
    finally:
        await stop_process(proc)


# ---------------------------------------------------------------------- llama.cpp's real server


@pytest.fixture(scope="session")
def llama_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with start_llama_server(tmp_path_factory.getbasetemp(), alias="tiny", parallel=2) as url:
        yield url


@pytest.fixture
def llama(llama_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{llama_url}/v1", api_key="unused", max_retries=0, timeout=10) as sdk:
        yield sdk


def test_llama_lists_its_alias(llama: openai.OpenAI) -> None:
    assert [m.id for m in llama.models.list().data] == ["tiny"]


def test_llama_chat_generates_exactly_max_tokens(llama: openai.OpenAI) -> None:
    reply = llama.chat.completions.create(model="tiny", messages=HELLO, max_tokens=12, temperature=0)

    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 12
    assert reply.usage.prompt_tokens > 0
    content = reply.choices[0].message.content
    assert content
    assert content.isascii()


async def test_llama_stream_with_usage_matches_the_whole_reply(llama_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{llama_url}/v1", api_key="unused", max_retries=0, timeout=10) as sdk:
        async with asyncio.timeout(10):
            whole = await sdk.chat.completions.create(model="tiny", messages=HELLO, max_tokens=16, temperature=0)
            stream = await sdk.chat.completions.create(
                model="tiny",
                messages=HELLO,
                max_tokens=16,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]

    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == whole.choices[0].message.content
    assert len(deltas) == 16
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16
