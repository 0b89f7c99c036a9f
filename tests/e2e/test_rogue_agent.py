"""A hand-written hostile agent against a real hub: after authentication, the hub trusts none of its bytes.

Each test answers requests with `testing.rogue_agent.RogueAgent` and checks what a client sees: a stream
pushed past its credit window is reset, hostile headers and content types never reach a client, malformed
heads and an END marked cancelled that nobody asked for become clean failures, and the agent is ejected
after enough of them. The hub runs with ``--eject-failures 3`` (and may eject a model's only agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from potluck.protocol.agent import (
    CancelReason,
    FrameType,
    ModelInfo,
    ModelsMessage,
    PingMessage,
    Usage,
    encode_frame,
)
from testing.processes import HubProcess
from testing.rogue_agent import RogueAgent, nested_msgpack, raw_frame
from tests.e2e.conftest import FAST_HUB_ARGS

SSE = [("Content-Type", "text/event-stream")]
EVENT = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    hub = HubProcess(
        tmp_path_factory.mktemp("rogue-hub"), *FAST_HUB_ARGS, "--eject-failures", "3", "--eject-max-percent", "100"
    )
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def key(hub: HubProcess) -> str:
    return hub.create_key("rogue-tests")


@contextlib.asynccontextmanager
async def rogue(hub: HubProcess, http: aiohttp.ClientSession, model: str) -> AsyncIterator[RogueAgent]:
    name = f"rogue-{uuid.uuid4().hex[:8]}"
    async with RogueAgent(http, hub.url, hub.create_agent_token(name), [model], name) as agent:
        yield agent


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


async def ask(
    http: aiohttp.ClientSession,
    hub: HubProcess,
    key: str,
    model: str,
    *,
    stream: bool,
    path: str = "/v1/chat/completions",
    first_event: asyncio.Event | None = None,
) -> Answer:
    """The whole answer; ``first_event`` is set once the first event of a stream has reached the client."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    if path == "/v1/messages":
        body["max_tokens"] = 16
    async with http.post(hub.url + path, json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        first = b""
        if first_event is not None:
            first = await resp.content.readuntil(b"\n\n")
            first_event.set()
        return Answer(resp.status, resp.headers, first + await resp.read())


def model_name() -> str:
    return f"rogue-m-{uuid.uuid4().hex[:8]}"


# -- finding 1: hub-side flow control ---------------------------------------------------------------


async def test_stream_pushed_past_its_window_is_reset_and_the_client_gets_an_error_event(
    hub: HubProcess, key: str
) -> None:
    model = model_name()
    started = asyncio.Event()
    resets = hub.metric("potluck_hub_stream_resets_total")
    async with aiohttp.ClientSession() as http, rogue(hub, http, model) as agent:
        asking = asyncio.create_task(ask(http, hub, key, model, stream=True, first_event=started))
        sid, request, _ = await agent.next_request()
        await agent.head(sid, 200, SSE)
        await agent.data(sid, EVENT)
        async with asyncio.timeout(10):
            await started.wait()  # the response has started: the reset must end it with an error event
        window = agent.welcome.credit_window if agent.welcome else 0
        await agent.flood(sid, 4 * window)
        cancel = await agent.wait_cancel(sid)
        answer = await asyncio.wait_for(asking, 10)
    assert cancel.reason == CancelReason.PROTOCOL_ERROR
    assert "credit window" in cancel.detail
    assert answer.status == 200
    assert answer.body.startswith(EVENT)
    # Nothing past the window reached the client (bytes within it may have: the hub writes them as they come).
    assert answer.body.count(b"x") <= window
    assert b'"code":"upstream_error"' in answer.body.split(b"\n\n")[-2]
    assert b"[DONE]" not in answer.body
    assert hub.usage_of(request.request_id)["outcome"] == "agent_failed"
    # Operators see it, and the count outlives the rogue's connection (closed by now).
    assert hub.metric("potluck_hub_stream_resets_total") == resets + 1


async def test_stream_pushed_past_its_window_before_a_byte_reached_the_client_is_a_502(
    hub: HubProcess, key: str
) -> None:
    model = model_name()
    async with aiohttp.ClientSession() as http, rogue(hub, http, model) as agent:
        asking = asyncio.create_task(ask(http, hub, key, model, stream=True))
        sid, request, _ = await agent.next_request()
        await agent.head(sid, 200, SSE)
        await agent.flood(sid, 2 << 20)
        await agent.wait_cancel(sid)
        answer = await asyncio.wait_for(asking, 10)
    assert answer.status == 502
    assert answer.json()["error"]["code"] == "upstream_error"
    assert answer.headers["x-request-id"] == request.request_id
    record = hub.usage_of(request.request_id)
    assert record["outcome"] == "agent_failed"
    assert record["prompt_tokens"] == record["completion_tokens"] == 0


# -- finding 3: response header and content-type allow-lists ------------------------------------------


async def test_hostile_response_headers_never_reach_the_client(hub: HubProcess, key: str) -> None:
    model = model_name()
    body = b'{"id":"c1","object":"chat.completion","choices":[]}'
    hostile = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Set-Cookie", "session=stolen; Path=/"),
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Allow-Credentials", "true"),
        ("Location", "https://evil.example/"),
        ("Content-Security-Policy", "default-src *"),
        ("X-Evil", "1"),
    ]
    async with aiohttp.ClientSession() as http, rogue(hub, http, model) as agent:
        asking = asyncio.create_task(ask(http, hub, key, model, stream=False))
        sid, request, _ = await agent.next_request()
        await agent.head(sid, 200, hostile)
        await agent.data(sid, body)
        await agent.end(sid, request.request_id, usage=Usage(1, 1, 2))
        answer = await asyncio.wait_for(asking, 10)
    assert answer.status == 200
    assert answer.body == body
    for name in ("Set-Cookie", "Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Location"):
        assert name not in answer.headers
    assert "X-Evil" not in answer.headers
    assert "Content-Security-Policy" not in answer.headers
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["x-request-id"] == request.request_id


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/v1/chat/completions", "text/html; charset=utf-8"), ("/v1/messages", "text/html"), ("/v1/chat/completions", "")],
)
async def test_an_answer_of_a_content_type_off_the_list_is_refused(
    hub: HubProcess, key: str, path: str, content_type: str
) -> None:
    model = model_name()
    headers = [("Content-Type", content_type)] if content_type else []
    async with aiohttp.ClientSession() as http, rogue(hub, http, model) as agent:
        asking = asyncio.create_task(ask(http, hub, key, model, stream=False, path=path))
        sid, request, _ = await agent.next_request()
        await agent.head(sid, 200, headers)
        await agent.data(sid, b"<html><script>alert(1)</script></html>")
        await agent.end(sid, request.request_id)
        answer = await asyncio.wait_for(asking, 10)
    assert answer.status == 502
    assert b"<script>" not in answer.body
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.headers["x-request-id"] == request.request_id
    error = answer.json()
    if path == "/v1/messages":
        assert error["type"] == "error"
        assert error["error"]["type"] == "api_error"
    else:
        assert error["error"]["code"] == "upstream_error"
    assert "content type" in json.dumps(error)


# -- finding 4: malformed heads -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        (200, [("Content-Type", "application/json"), ("Content-Length", "twelve")]),
        (200, [("Content-Type", "application/json"), ("Content-Length", "-5")]),
        (200, [("Content-Type", "application/json"), ("X-A", "b\r\nSet-Cookie: a=b")]),
        (200, [("Content-Type", "application/json\nX-Injected: 1")]),
        (200, [("Content-Type", "application/json"), ("Bad Name", "v")]),
        (302, [("Location", "https://evil.example/")]),
        (200, [("Content-Type", "application/json"), ("Content-Length", "5"), ("Content-Length", "6")]),
    ],
    ids=["length-words", "length-negative", "crlf-value", "lf-in-type", "bad-name", "redirect", "two-lengths"],
)
async def test_a_malformed_head_is_a_clean_502_and_the_hub_keeps_serving(
    hub: HubProcess, key: str, head: tuple[int, list[tuple[str, str]]]
) -> None:
    model = model_name()
    async with aiohttp.ClientSession() as http, rogue(hub, http, model) as agent:
        asking = asyncio.create_task(ask(http, hub, key, model, stream=False))
        sid, request, _ = await agent.next_request()
        await agent.head(sid, *head)
        await agent.data(sid, b"{}")
        await agent.end(sid, request.request_id)
        answer = await asyncio.wait_for(asking, 10)
        cancel = await agent.wait_cancel(sid)
        async with http.get(hub.url + "/healthz") as health:
            assert health.status == 200
    assert answer.status == 502
    assert answer.json()["error"]["code"] == "upstream_error"
    assert answer.headers["x-request-id"] == request.request_id
    assert "Set-Cookie" not in answer.headers
    assert "X-Injected" not in answer.headers
    assert cancel.reason == CancelReason.PROTOCOL_ERROR
    assert "Traceback" not in hub.log()


# -- finding 5: an END marked cancelled that the hub never asked for ---------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_an_unrequested_cancelled_end_ends_the_stream_with_an_error_event(
    hub: HubProcess, key: str, path: str
) -> None:
    model = model_name()
    first = EVENT if path == "/v1/chat/completions" else b'event: ping\ndata: {"type":"ping"}\n\n'
    async with aiohttp.ClientSession() as http, rogue(hub, http, model) as agent:
        asking = asyncio.create_task(ask(http, hub, key, model, stream=True, path=path))
        sid, request, _ = await agent.next_request()
        await agent.head(sid, 200, SSE)
        await agent.data(sid, first)
        await agent.end(sid, request.request_id, cancelled=True, usage=Usage(3, 1, 4))
        answer = await asyncio.wait_for(asking, 10)
    assert answer.status == 200
    assert answer.body.startswith(first)
    last = answer.body.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    if path == "/v1/messages":
        assert last.startswith(b"event: error\n")
    else:
        assert last.startswith(b'data: {"error"')
    assert b"[DONE]" not in answer.body
    assert hub.usage_of(request.request_id)["outcome"] == "agent_failed"


# -- every violation counts toward ejection -----------------------------------------------------------


async def test_violations_count_toward_ejection(hub: HubProcess, key: str) -> None:
    model = model_name()
    async with aiohttp.ClientSession() as http, rogue(hub, http, model) as agent:
        for violation in ("flood", "head", "cancel"):
            asking = asyncio.create_task(ask(http, hub, key, model, stream=True))
            sid, request, _ = await agent.next_request()
            if violation == "head":
                await agent.head(sid, 200, [("Content-Type", "text/html")])
            else:
                await agent.head(sid, 200, SSE)
                await agent.data(sid, EVENT)
                if violation == "flood":
                    await agent.flood(sid, 2 << 20)
                else:
                    await agent.end(sid, request.request_id, cancelled=True)
            answer = await asyncio.wait_for(asking, 10)
            assert answer.status in (200, 502)
        ejected = await asyncio.to_thread(_wait_ejected, hub)
    assert ejected >= 1


def _wait_ejected(hub: HubProcess) -> float:
    hub.wait_for(lambda: hub.metric("potluck_hub_agents_ejected") >= 1, 5)
    return hub.metric("potluck_hub_agents_ejected")


# -- limits on a connected agent ----------------------------------------------------------------------


async def test_control_frame_flood_is_rejected_and_closed(hub: HubProcess) -> None:
    async with aiohttp.ClientSession() as http, rogue(hub, http, model_name()) as agent:
        await agent.send_now(encode_frame(PingMessage(0.0)) * 2000)
        reject = await agent.wait_closed()
    assert reject is not None
    assert reject.code == "rate_limited"
    assert agent.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION


async def test_a_catalog_over_the_cap_after_the_hello_is_rejected(hub: HubProcess) -> None:
    async with aiohttp.ClientSession() as http, rogue(hub, http, model_name()) as agent:
        await agent.send_now(encode_frame(ModelsMessage([ModelInfo(f"m{i}") for i in range(1025)], [])))
        reject = await agent.wait_closed()
    assert reject is not None
    assert reject.code == "catalog_too_large"
    assert agent.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION


async def test_a_deeply_nested_frame_from_a_connected_agent_is_a_clean_reject(hub: HubProcess) -> None:
    meta = b"\x81\xa4type\xa6models" + nested_msgpack(100_000)
    async with aiohttp.ClientSession() as http, rogue(hub, http, model_name()) as agent:
        await agent.send_now(raw_frame(FrameType.MODELS, meta))
        reject = await agent.wait_closed()
    assert reject is not None
    assert reject.code == "protocol_error"
    assert agent.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION
    assert "Traceback" not in hub.log()
