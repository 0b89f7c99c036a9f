"""WebSocket messages handed over from the socket's read callback, without waking a task for each one.

aiohttp queues every message a WebSocket reads, and the task that owns the socket wakes for each to
`receive` it: a future, a task step and a few coroutine frames per message, which is a large share of what
relaying one chunk costs. Here aiohttp's parser reads into a `DirectQueue` instead, and while a ``deliver``
callback is set, a binary message that nothing waits ahead of goes straight to it from the read callback.
Everything else (close, ping and pong, messages queued before ``deliver`` was set, and any after them until
the task caught up) queues as before, so order never changes and the owning task still sees the close. An
exception ``deliver`` raises stops direct delivery and reaches the task, after what was queued before it,
as an ERROR message whose data is a `DeliveryFailed` holding it (`failure_of` unwraps it). The owning task
must therefore handle binary messages itself too: they are what it gets when direct delivery is off.

Server side, `DirectWebSocketResponse` reads into a `DirectQueue` from the first byte. Client side,
`read_directly` switches a connected socket over; aiohttp builds the client's parser itself, so that is
only safe at a point where the protocol has the peer send nothing. Both lean on aiohttp's internals (the
queue, the parser, ``_post_start``), so they are used only on the aiohttp releases they were written against
(`SUPPORTED`); on any other, sockets are aiohttp's own and every message wakes the task, as before.
tests/api/test_ws_direct.py fails on such a release, so that moving to it means looking again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import WSMessage, WSMsgType, web
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.helpers import DEFAULT_CHUNK_SIZE

Deliver = Callable[[bytes], None]

SUPPORTED = tuple(int(part) for part in aiohttp.__version__.split(".")[:2]) == (3, 14)
"""This aiohttp is one whose internals this module was written against: 3.14 from 3.14.5, the lowest release
pyproject.toml allows (3.14.5 is the first to keep a reference to the WebSocket parser, as this module does)."""


class DeliveryFailed(Exception):
    """``deliver`` raised ``error`` on a message: the task that owns the socket handles it as if it had read it."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def failure_of(msg: WSMessage) -> Exception | None:
    """The exception direct delivery met, if ``msg`` reports one."""
    return msg.data.error if msg.type is WSMsgType.ERROR and isinstance(msg.data, DeliveryFailed) else None


class DirectQueue(WebSocketDataQueue):
    """aiohttp's message queue, with binary messages handed to ``deliver`` while it is set (module docstring)."""

    deliver: Deliver | None = None

    def feed_data(self, data: Any, size: int) -> None:
        deliver = self.deliver
        if deliver is not None and data.type is WSMsgType.BINARY and not self._buffer:
            try:
                deliver(data.data)
            except Exception as exc:  # noqa: BLE001 - handed to the owning task, which decides
                self.deliver = None
                super().feed_data(WSMessage(WSMsgType.ERROR, DeliveryFailed(exc), None), 0)
            return
        super().feed_data(data, size)


class DirectWebSocketResponse(web.WebSocketResponse):
    """A server-side WebSocket that reads into a `DirectQueue` (`queue`)."""

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
        if not SUPPORTED:
            super()._post_start(request, protocol, writer)
            return
        # aiohttp's own _post_start (3.14), with `DirectQueue` for its queue: the parser must read into it
        # from the first byte after the upgrade, and a protocol takes one parser only.
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        loop = self._loop
        if loop is None:  # set by prepare before this is called
            raise RuntimeError("no event loop")
        queue = DirectQueue(request._protocol, DEFAULT_CHUNK_SIZE, loop=loop)
        self._reader = queue
        self._parser = WebSocketReader(
            queue, self._max_msg_size, compress=bool(self._compress), decode_text=self._decode_text
        )
        data_received = None if self._heartbeat is None else self._on_data_received
        request.protocol.set_parser(self._parser, data_received_cb=data_received)
        request.protocol.keep_alive(False)  # as aiohttp: no HTTP keep-alive under a WebSocket

    @property
    def queue(self) -> DirectQueue | None:
        """The queue to set ``deliver`` on, once prepared (None on an aiohttp this module does not know)."""
        reader = self._reader
        return reader if isinstance(reader, DirectQueue) else None


def read_directly(ws: aiohttp.ClientWebSocketResponse, max_msg_size: int) -> DirectQueue | None:
    """Switch a connected client socket to a new parser reading into a `DirectQueue`, and return the queue
    (None, and nothing switched, on an aiohttp this module does not know or a socket already closed: its
    task then reads every message, the close included).

    Call it only where the peer is sending nothing: a message the old parser has half read would be lost.
    Messages it read whole move to the new queue first, in order."""
    if not SUPPORTED:
        return None
    old = ws._reader
    protocol = ws._conn.protocol if ws._conn is not None else None
    if protocol is None:
        return None
    queue = DirectQueue(protocol, DEFAULT_CHUNK_SIZE, loop=ws._loop)
    while old._buffer:
        message, size = old._buffer.popleft()
        queue.feed_data(message, size)
    ws._reader = queue
    ws._parser = WebSocketReader(queue, max_msg_size, compress=bool(ws.compress), decode_text=True)
    data_received = None if ws._heartbeat is None else ws._on_data_received
    protocol.set_parser(ws._parser, queue, data_received_cb=data_received)
    return queue
