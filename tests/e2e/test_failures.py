"""What happens when things go wrong: clients leave, agents die, backends fail, everything is busy."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Callable

import aiohttp
import openai
import psutil
import pytest
from openai.types.chat import ChatCompletion

from tests.e2e.conftest import Fleet

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"


def _body(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def _served(backend_records: list, path: str = CHAT) -> list:  # type: ignore[type-arg]
    return [r for r in backend_records if r.path == path]


QUEUE_DEPTH = "potluck_hub_queue_depth"


async def _until_queued(fleet: Fleet, depth: float) -> None:
    """Wait until the hub's /metrics counts ``depth`` requests waiting for a slot."""
    reached = await asyncio.to_thread(fleet.hub.wait_for, lambda: fleet.hub.metric(QUEUE_DEPTH) >= depth, 5.0)
    assert reached, f"the hub never queued {depth:g} requests"


# -- client disconnects -----------------------------------------------------------------------------


async def test_client_disconnect_mid_stream_closes_backend_and_frees_slot(fleet: Fleet) -> None:
    model = fleet.model()
    backend, url = fleet.backend(model, chunks=100, delay=0.1)
    fleet.agent(url, max_concurrency=1)
    client = fleet.async_client()

    stream = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], stream=True)
    async for _chunk in stream:
        break
    await stream.close()
    closed_at = time.monotonic()

    assert await backend.wait_for_async(lambda: _served(backend.records)[-1].disconnected, 1.0)
    assert _served(backend.records)[-1].disconnected_at - closed_at < 1.0
    # The single slot is free at once: the next request is served now, not after the stream's 10 s.
    started = time.monotonic()
    reply = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "x"}], extra_body={"fake": {"chunks": 2, "delay": 0}}
    )
    assert reply.choices[0].message.content == "tok0 tok1 "
    assert time.monotonic() - started < 1.0
    await client.close()


async def test_client_disconnect_non_stream_closes_backend_and_frees_slot(fleet: Fleet) -> None:
    model = fleet.model()
    backend, url = fleet.backend(model)
    fleet.agent(url, max_concurrency=1)

    async with aiohttp.ClientSession() as http:
        request = asyncio.ensure_future(
            http.post(fleet.hub.url + CHAT, json=_body(model, fake={"hang": True}), headers={"x-api-key": fleet.key})
        )
        assert await backend.wait_for_async(lambda: len(_served(backend.records)) == 1, 2.0)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request

    assert await backend.wait_for_async(lambda: _served(backend.records)[0].disconnected, 1.0)
    client = fleet.client(timeout=2)
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content
    agent = fleet.hub.agents()
    assert all(a["in_flight"] == 0 for a in agent if a["state"] == "online")


async def test_client_disconnect_while_queued_leaks_no_slot(fleet: Fleet) -> None:
    model = fleet.model()
    backend, url = fleet.backend(model)
    agent = fleet.agent(url, max_concurrency=1)
    headers = {"x-api-key": fleet.key}

    async with aiohttp.ClientSession() as http:
        first = asyncio.ensure_future(
            http.post(fleet.hub.url + CHAT, json=_body(model, fake={"hang": True}), headers=headers)
        )
        assert await backend.wait_for_async(lambda: len(_served(backend.records)) == 1, 2.0)
        depth = fleet.hub.metric(QUEUE_DEPTH) + 1  # the hub is shared: count from what is queued now
        queued = asyncio.ensure_future(http.post(fleet.hub.url + CHAT, json=_body(model), headers=headers))
        await _until_queued(fleet, depth)
        queued.cancel()
        first.cancel()
        await asyncio.gather(first, queued, return_exceptions=True)

    assert await backend.wait_for_async(lambda: _served(backend.records)[0].disconnected, 1.0)
    # The queued request never reached the backend, and the slot is free for the next one.
    reply = fleet.client(timeout=2).chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content
    assert len(_served(backend.records)) == 2
    assert fleet.hub.wait_agent(agent.name)["in_flight"] == 0


# -- agent failures ---------------------------------------------------------------------------------


def test_agent_killed_before_first_byte_is_retried_on_another_agent(fleet: Fleet) -> None:
    model = fleet.model()
    slow_backend, slow_url = fleet.backend(model, first_delay=30)
    doomed = fleet.agent(slow_url)
    client = fleet.client(timeout=10)

    with fleet_request_in_background(client, model) as result:
        assert slow_backend.wait_for(lambda: len(_served(slow_backend.records)) == 1, 5.0)
        healthy_backend, healthy_url = fleet.backend(model, chunks=3)
        fleet.agent(healthy_url)
        doomed.kill()
    reply = result.value

    assert isinstance(reply, ChatCompletion)
    assert reply.choices[0].message.content == "tok0 tok1 tok2 "
    assert len(_served(healthy_backend.records)) == 1


async def test_agent_killed_mid_stream_ends_stream_with_error_event_and_no_done(fleet: Fleet) -> None:
    model = fleet.model()
    backend, url = fleet.backend(model, chunks=200, delay=0.05)
    agent = fleet.agent(url)

    async with (
        aiohttp.ClientSession() as http,
        http.post(fleet.hub.url + CHAT, json=_body(model, stream=True), headers={"x-api-key": fleet.key}) as resp,
    ):
        assert resp.status == 200
        received = b""
        while received.count(b"\n\n") < 3:
            received += await resp.content.readany()
        agent.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        async with asyncio.timeout(2.0):
            received += await resp.content.read()
        ended_after = time.monotonic() - killed_at

    assert ended_after < 2.0
    events = [e for e in received.split(b"\n\n") if e]
    assert b"[DONE]" not in received
    last = json.loads(events[-1].removeprefix(b"data: "))
    assert last["error"]["code"] == "upstream_error"
    # Every event before the error is a whole chunk.
    for event in events[:-1]:
        assert json.loads(event.removeprefix(b"data: "))["object"] == "chat.completion.chunk"
    assert await backend.wait_for_async(lambda: _served(backend.records)[-1].disconnected, 2.0)


def test_agent_killed_mid_stream_raises_in_the_openai_sdk(fleet: Fleet) -> None:
    model = fleet.model()
    _backend, url = fleet.backend(model, chunks=200, delay=0.05)
    agent = fleet.agent(url)
    client = fleet.client()

    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], stream=True)

    def read_killing_the_agent_at_the_third_chunk() -> None:
        for i, _chunk in enumerate(stream):
            if i == 2:
                agent.kill()

    with pytest.raises(openai.APIError, match="agent"):
        read_killing_the_agent_at_the_third_chunk()


# -- backend failures -------------------------------------------------------------------------------


def test_backend_refusing_connections_fails_that_request_only(fleet: Fleet) -> None:
    broken, working = fleet.model("broken"), fleet.model("working")
    down, down_url = fleet.backend(broken)
    _up, up_url = fleet.backend(working)
    agent = fleet.agent(down_url, up_url)
    fleet.hub.wait_agent(agent.name, models={broken, working})
    fleet.stop_backend(down)
    client = fleet.client()

    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=broken, messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 502
    assert refused.value.body["code"] == "backend_unavailable"  # type: ignore[index]
    assert refused.value.response.headers["x-request-id"].startswith("req_")

    reply = client.chat.completions.create(model=working, messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content
    assert fleet.hub.agent_by_name(agent.name)["state"] == "online"  # type: ignore[index]


def test_backend_error_status_and_body_pass_through(fleet: Fleet) -> None:
    model = fleet.model()
    _backend, url = fleet.backend(model)
    fleet.agent(url)
    client = fleet.client()

    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=model, messages="not a list")  # type: ignore[arg-type]
    assert bad.value.status_code == 400
    assert bad.value.response.headers["x-request-id"].startswith("req_")

    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], extra_body={"fake": {"status": 500}}
        )
    assert failed.value.status_code == 500


def test_non_json_backend_error_is_wrapped_in_openai_shape(fleet: Fleet) -> None:
    model = fleet.model()
    _backend, url = fleet.backend(model)
    fleet.agent(url)

    with pytest.raises(openai.APIStatusError) as failed:
        fleet.client().chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "x"}],
            extra_body={"fake": {"raw_error": "<html>gateway exploded</html>", "status": 503}},
        )
    assert failed.value.status_code == 503
    assert failed.value.body["code"] == "upstream_error"  # type: ignore[index]
    assert "gateway exploded" in failed.value.body["message"]  # type: ignore[index]


def test_upstream_error_on_streaming_request_keeps_status_and_body(fleet: Fleet) -> None:
    model = fleet.model()
    _backend, url = fleet.backend(model)
    fleet.agent(url)

    with pytest.raises(openai.RateLimitError) as limited:
        fleet.client().chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], stream=True, extra_body={"fake": {"status": 429}}
        )
    assert limited.value.status_code == 429
    assert limited.value.response.headers["content-type"].startswith("application/json")


# -- timeouts, queueing, unknown models ------------------------------------------------------------


def test_stream_longer_than_every_timeout_completes_intact(hub_factory: Callable[..., Fleet]) -> None:
    fleet = hub_factory("--idle-timeout", "1.0", "--first-byte-timeout", "1.0")
    model = fleet.model()
    _backend, url = fleet.backend(model, chunks=25, delay=0.12)  # 3 s: > idle, first-byte and heartbeat timeouts
    fleet.agent(url)

    started = time.monotonic()
    chunks = list(
        fleet.client().chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], stream=True)
    )

    assert time.monotonic() - started > 2.5
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"tok{i} " for i in range(25))


def test_unknown_model_is_404_model_not_found_at_once(fleet: Fleet) -> None:
    started = time.monotonic()
    with pytest.raises(openai.NotFoundError) as missing:
        fleet.client().chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert time.monotonic() - started < 1.0
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert missing.value.body["param"] == "model"  # type: ignore[index]


async def test_queue_full_is_503_with_retry_after(hub_factory: Callable[..., Fleet]) -> None:
    fleet = hub_factory("--max-queue", "1", "--queue-timeout", "10")
    model = fleet.model()
    backend, url = fleet.backend(model, hang=True)
    fleet.agent(url, max_concurrency=1)
    headers = {"x-api-key": fleet.key}

    async with aiohttp.ClientSession() as http:
        busy = asyncio.ensure_future(http.post(fleet.hub.url + CHAT, json=_body(model), headers=headers))
        assert await backend.wait_for_async(lambda: len(_served(backend.records)) == 1, 2.0)
        queued = asyncio.ensure_future(http.post(fleet.hub.url + CHAT, json=_body(model), headers=headers))
        await _until_queued(fleet, 1)
        async with http.post(fleet.hub.url + CHAT, json=_body(model), headers=headers) as rejected:
            assert rejected.status == 503
            assert 1 <= int(rejected.headers["Retry-After"]) <= 60
            assert rejected.headers["x-request-id"].startswith("req_")
            error = (await rejected.json())["error"]
        busy.cancel()
        queued.cancel()
        await asyncio.gather(busy, queued, return_exceptions=True)

    assert error["code"] == "server_overloaded"
    assert error["type"] == "server_error"


def test_queue_wait_exceeded_is_503(hub_factory: Callable[..., Fleet]) -> None:
    fleet = hub_factory("--queue-timeout", "0.5")
    model = fleet.model()
    backend, url = fleet.backend(model)
    fleet.agent(url, max_concurrency=1)
    client = fleet.client(timeout=10)

    with fleet_request_in_background(client, model, fake={"first_delay": 3}) as _first:
        assert backend.wait_for(lambda: len(_served(backend.records)) == 1, 3.0)
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as overloaded:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        waited = time.monotonic() - started

    assert overloaded.value.status_code == 503
    assert overloaded.value.body["code"] == "server_overloaded"  # type: ignore[index]
    assert "Retry-After" in overloaded.value.response.headers
    assert 0.4 < waited < 2.0


async def test_queued_request_starts_within_100ms_of_a_free_slot(fleet: Fleet) -> None:
    model = fleet.model()
    backend, url = fleet.backend(model)
    fleet.agent(url, max_concurrency=1)
    client = fleet.async_client()

    first = asyncio.ensure_future(
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], extra_body={"fake": {"first_delay": 1.0}}
        )
    )
    assert await backend.wait_for_async(lambda: len(_served(backend.records)) == 1, 2.0)
    second = asyncio.ensure_future(
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "y"}])
    )
    await asyncio.gather(first, second)
    records = _served(backend.records)
    first_done = records[0].started_at + 1.0
    assert records[1].started_at - first_done < 0.1
    await client.close()


# -- helpers ----------------------------------------------------------------------------------------


class _Result:
    value: object = None
    error: BaseException | None = None


class fleet_request_in_background:
    """Run a blocking SDK call in a thread for the duration of a ``with`` block; join it on exit."""

    def __init__(self, client: openai.OpenAI, model: str, **fake: object) -> None:
        import threading

        self.result = _Result()

        def call() -> None:
            try:
                self.result.value = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "x"}], extra_body={"fake": fake.get("fake", {})}
                )
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                self.result.error = exc

        self._thread = threading.Thread(target=call, daemon=True)

    def __enter__(self) -> _Result:
        self._thread.start()
        return self.result

    def __exit__(self, *exc: object) -> None:
        self._thread.join(15)
        if self.result.error is not None and exc[0] is None:
            raise self.result.error


async def test_slow_client_applies_backpressure_instead_of_growing_hub_memory(fleet: Fleet) -> None:
    model = fleet.model()
    backend, url = fleet.backend(model, chunks=100_000)  # ~19 MB of SSE, written as fast as the socket takes it
    fleet.agent(url)
    hub = psutil.Process(fleet.hub.proc.pid)
    rss_before = hub.memory_info().rss

    async with (
        aiohttp.ClientSession() as http,
        http.post(fleet.hub.url + CHAT, json=_body(model, stream=True), headers={"x-api-key": fleet.key}) as resp,
    ):
        first = await resp.content.read(1024)
        assert first.startswith(b"data: ")
        # The client stops reading. The hub stops granting credit, the agent stops reading the
        # backend, and the backend's writes block: the body waits in socket buffers, not in the hub.
        # Not a wait for something to happen: the stall itself, held 2 s, is what is under test.
        await asyncio.sleep(2.0)
        rss_stalled = hub.memory_info().rss
        assert not _served(backend.records)[-1].completed
        rest = await resp.content.read()

    body = first + rest
    assert body.endswith(b"data: [DONE]\n\n")
    # Whole and in order, across the switches between chunks written from the frame loop and, while the
    # client's socket was backed up, by the relay task (api/relay.py `_direct_writer`).
    assert [int(n) for n in re.findall(rb'"content":"tok(\d+) ', body)] == list(range(100_000))
    assert rss_stalled - rss_before < 8 * 1024 * 1024, f"hub grew {(rss_stalled - rss_before) >> 20} MB"


async def test_queued_request_is_taken_by_an_agent_that_connects(fleet: Fleet) -> None:
    model = fleet.model()
    busy_backend, busy_url = fleet.backend(model, hang=True)
    fleet.agent(busy_url, max_concurrency=1)
    client = fleet.async_client()
    holder = asyncio.ensure_future(
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    )
    assert await busy_backend.wait_for_async(lambda: len(_served(busy_backend.records)) == 1, 2.0)
    depth = fleet.hub.metric(QUEUE_DEPTH) + 1
    queued = asyncio.ensure_future(
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "y"}])
    )
    await _until_queued(fleet, depth)
    assert not queued.done()

    fresh_backend, fresh_url = fleet.backend(model, chunks=2)
    await asyncio.to_thread(fleet.agent, fresh_url)

    async with asyncio.timeout(2):
        reply = await queued
    assert reply.choices[0].message.content == "tok0 tok1 "
    assert len(_served(fresh_backend.records)) == 1
    holder.cancel()
    await asyncio.gather(holder, return_exceptions=True)
    await client.close()
