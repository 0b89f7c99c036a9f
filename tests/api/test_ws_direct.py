"""api/ws_direct.py: binary messages reach ``deliver`` from the read callback, in order, and the owning task
still sees everything else. These tests also fail if an aiohttp release moves the internals it relies on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from potluck.api import ws_direct
from potluck.api.ws_direct import DirectQueue, DirectWebSocketResponse, failure_of, read_directly


class Echo:
    """A server whose socket delivers directly from the `go` message on, and tells what its task saw."""

    def __init__(self) -> None:
        self.delivered: list[bytes] = []
        self.task_saw: list[tuple[WSMsgType, object]] = []
        self.queue: DirectQueue | None = None
        self.done = asyncio.Event()
        self.fail_on: bytes | None = None

    def deliver(self, data: bytes) -> None:
        if data == self.fail_on:
            raise ValueError(f"cannot take {data!r}")
        self.delivered.append(data)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = DirectWebSocketResponse()
        await ws.prepare(request)
        self.queue = ws.queue
        try:
            async for msg in ws:
                self.task_saw.append((msg.type, failure_of(msg) or msg.data))
                if msg.type is WSMsgType.BINARY and msg.data == b"go":
                    if self.queue is not None:
                        self.queue.deliver = self.deliver
                    await ws.send_bytes(b"delivering")
                elif msg.type is WSMsgType.ERROR:
                    await ws.send_bytes(b"failed")
        finally:
            self.done.set()
        return ws


@pytest.fixture
async def echo() -> AsyncIterator[tuple[Echo, str]]:
    server = Echo()
    app = web.Application()
    app.router.add_get("/ws", server.handle)
    async with TestServer(app) as test_server:
        yield server, str(test_server.make_url("/ws"))


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` (state another task or the read callback changes) until it holds."""
    try:
        async with asyncio.timeout(5):
            while not condition():
                await asyncio.sleep(0.001)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_this_aiohttp_is_one_the_module_was_written_for() -> None:
    # On another release the hub still works (aiohttp's own sockets), but a task wakes per agent message
    # again: read ws_direct.py against the new aiohttp, then widen SUPPORTED.
    assert ws_direct.SUPPORTED, f"api/ws_direct.py does not know aiohttp {aiohttp.__version__}"


async def test_on_an_unknown_aiohttp_sockets_are_aiohttps_own_and_the_task_reads_everything(
    echo: tuple[Echo, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws_direct, "SUPPORTED", False)
    server, url = echo
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        assert read_directly(ws, 1 << 20) is None
        await ws.send_bytes(b"go")
        assert (await ws.receive()).data == b"delivering"
        await ws.send_bytes(b"after")
        await _until(lambda: server.task_saw[-1:] == [(WSMsgType.BINARY, b"after")], "the task reading it")
    assert server.queue is None
    assert server.delivered == []


async def test_binary_messages_go_to_deliver_in_order_and_the_task_still_sees_the_rest(
    echo: tuple[Echo, str],
) -> None:
    server, url = echo
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_bytes(b"before")
        await ws.send_bytes(b"go")
        assert (await ws.receive()).data == b"delivering"
        for i in range(100):
            await ws.send_bytes(b"%d" % i)
        await ws.send_str("text")  # not binary: queued for the task
        await ws.send_bytes(b"after-text")  # queued behind the text, so the task reads it too
        await _until(lambda: len(server.task_saw) >= 4, "the task's messages")
        await ws.send_bytes(b"direct-again")  # nothing queued now: straight to deliver
        await _until(lambda: server.delivered[-1:] == [b"direct-again"], "direct delivery")
    await asyncio.wait_for(server.done.wait(), 5)
    assert server.delivered == [b"%d" % i for i in range(100)] + [b"direct-again"]
    assert server.task_saw[:4] == [
        (WSMsgType.BINARY, b"before"),
        (WSMsgType.BINARY, b"go"),
        (WSMsgType.TEXT, "text"),
        (WSMsgType.BINARY, b"after-text"),
    ]
    # ...and the close still reached the task: its loop ended (server.done) once the client closed.
    assert server.queue is not None


async def test_an_exception_in_deliver_reaches_the_task_and_stops_direct_delivery(echo: tuple[Echo, str]) -> None:
    server, url = echo
    server.fail_on = b"bad"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_bytes(b"go")
        assert (await ws.receive()).data == b"delivering"
        await ws.send_bytes(b"ok")
        await ws.send_bytes(b"bad")
        assert (await ws.receive()).data == b"failed"
        await ws.send_bytes(b"later")  # delivery stopped: the task reads it
        await _until(lambda: server.task_saw[-1:] == [(WSMsgType.BINARY, b"later")], "the task reading again")
    assert server.delivered == [b"ok"]
    kind, error = server.task_saw[1]
    assert kind is WSMsgType.ERROR
    assert isinstance(error, ValueError)
    assert "bad" in str(error)


async def test_a_client_socket_switched_over_keeps_what_it_had_read_and_delivers_the_rest() -> None:
    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_bytes(b"early")  # read by the old parser before the switch
        assert (await ws.receive()).data == b"switched"
        for i in range(50):
            await ws.send_bytes(b"%d" % i)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handle)
    delivered: list[bytes] = []
    async with (
        TestServer(app) as test_server,
        aiohttp.ClientSession() as http,
        http.ws_connect(test_server.make_url("/ws")) as ws,
    ):
        await _until(lambda: bool(ws._reader._buffer), "the early message")
        queue = read_directly(ws, 1 << 20)
        assert queue is not None
        queue.deliver = delivered.append
        first = await ws.receive()  # moved over from the old queue, not delivered
        await ws.send_bytes(b"switched")
        last = await ws.receive()
    assert first.data == b"early"
    assert delivered == [b"%d" % i for i in range(50)]
    assert last.type is WSMsgType.CLOSE
    assert read_directly(ws, 1 << 20) is None  # closed: nothing to switch, and no error
