"""The hub's HTTP/1.1 front: the relayed routes answered straight from the socket, everything else by aiohttp.

aiohttp's server costs the hub about 75 µs of CPU per relayed request on this project's benchmark machine,
about as much as the hub's own work (`bench/server_cost.py`: its request, response and protocol objects,
its router and middleware chain). The relayed routes (`api/relay.py` `ROUTES`, all ``POST``) are nearly all
the traffic, so `FrontProtocol` reads those itself, with httptools (llhttp, the parser uvicorn uses), and
writes their answers to the transport, through the same relay (`serve_relay`), the same body check, the
same error shapes and request ids, the same CORS headers and the same connection guard.

Any other request, and any relayed request that is not plain (another HTTP version, ``Transfer-Encoding``,
``Expect``, ``Upgrade``, no ``Content-Length``, a body over the limit, a head over 8 KiB, a repeated
header, anything the parser refuses), is handed to aiohttp on the same connection, from the request's first
byte, once its head is in (at once for bytes that cannot begin a request line): from then on the connection
is aiohttp's, as it would have been without the front. So every refusal and every other route stays
aiohttp's, with its limits and its error pages (api/parser_errors.py). One exception, on every route: an
``Expect`` the hub will not meet is refused here, before the body is sent (`_refuse_expectation`), where
aiohttp would answer it in plain text, or invite an oversized body only to refuse it.

One request is answered at a time per connection. Bytes of the next (a pipelining client) wait in a buffer,
and reading pauses once the buffer holds `_MAX_AHEAD` bytes. A client that goes away cancels its request, as
aiohttp does with ``handler_cancellation``. An idle keep-alive connection is closed after the keep-alive
timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import cast

import httptools

from potluck._shared.ids import new_request_id
from potluck.api.bodies import check_nesting
from potluck.api.cors import Cors
from potluck.api.dialects import dialect_of
from potluck.api.errors import error_answer, failure_answer
from potluck.api.guard import ConnectionGuard, _Connection, guard_of, reroute
from potluck.api.relay import ROUTES, Headers, Route, credential, direct_writer, serve_relay
from potluck.hub.services import HubServices
from potluck.protocol.errors import ErrorCode

log = logging.getLogger(__name__)

_MAX_HEAD = 8190
"""A longer head goes to aiohttp, whose limits (8190 bytes a line) answer it."""
_MAX_AHEAD = 1 << 20
"""Bytes of later requests buffered while one is answered, before reading pauses."""
_PATHS = {route.path.encode(): route for route in ROUTES.values()}
_LONGEST_METHOD = 7
"""``OPTIONS`` and ``CONNECT``: a request with a longer method (WebDAV's) goes to aiohttp at its first bytes."""
_MAX_HEADERS = 128
"""aiohttp's limit: a head with more goes to aiohttp, which refuses it."""
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_NOT_PLAIN = frozenset({b"transfer-encoding", b"expect", b"upgrade"})
"""Request headers that make a relayed request aiohttp's."""


class Front:
    """What every `FrontProtocol` of a listener shares: the hub, its limits, and the connections open."""

    def __init__(
        self,
        hub: HubServices,
        *,
        max_body: int,
        keepalive_timeout: float,
        cors: Cors | None,
    ) -> None:
        self.hub = hub
        self.max_body = max_body
        self.keepalive_timeout = keepalive_timeout
        self.cors = cors
        self.make_aiohttp: Callable[[], asyncio.Protocol] = _unset
        """aiohttp's protocol for a connection handed over (see the module docstring)."""
        self.connections: set[FrontProtocol] = set()
        self._date = (0, "")

    def protocol_factory(self, make_aiohttp: Callable[[], asyncio.Protocol]) -> Callable[[], FrontProtocol]:
        """The listener's protocol factory, handing connections over to ``make_aiohttp``'s protocols."""
        self.make_aiohttp = make_aiohttp
        return lambda: FrontProtocol(self)

    def close(self) -> None:
        """Close the connections the front still holds, at shutdown (after the requests' drain)."""
        for conn in list(self.connections):
            conn.close()

    def date(self) -> str:
        """The Date header's value, made once a second."""
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True))
        return self._date[1]


def _may_be_a_request(start: bytearray) -> bool:
    """Whether bytes could begin a request line of a standard method (``GET``, ``POST``, ``OPTIONS``, ...): the
    front waits for the rest of the head; anything else goes to aiohttp at once (TLS on the plain port, noise)."""
    method = start[: _LONGEST_METHOD + 1].partition(b" ")[0]
    return 0 < len(method) <= _LONGEST_METHOD and method.isalpha() and method.isupper()


def _unset() -> asyncio.Protocol:
    raise RuntimeError("the front serves no listener yet")


class _Request:
    """A request's head, as its parser's callbacks fill it in."""

    __slots__ = ("body_length", "headers", "keep_alive", "plain", "repeated", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.plain = True
        """Nothing in the head makes it aiohttp's (see `_NOT_PLAIN`, and no repeated header)."""
        self.repeated = False
        """A header came twice."""
        self.keep_alive = True
        self.body_length = 0

    @classmethod
    def parse(cls, head: bytes) -> tuple[_Request, httptools.HttpRequestParser] | None:
        """A whole head, parsed, and its parser (for what it read of the request line); None if it refused it."""
        request = cls()
        parser = httptools.HttpRequestParser(request)
        try:
            parser.feed_data(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return None
        return request, parser

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in self.headers:
            self.repeated, self.plain = True, False
        elif name in _NOT_PLAIN or len(self.headers) >= _MAX_HEADERS:
            self.plain = False
        self.headers[name] = value

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None


class FrontProtocol(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    __slots__ = (
        "_ahead_paused",
        "_buffer",
        "_drain",
        "_front",
        "_guarded",
        "_idle_since",
        "_inner",
        "_keepalive",
        "_request",
        "_task",
        "_transport",
        "_write_paused",
    )

    def __init__(self, front: Front) -> None:
        self._front = front
        self._transport: asyncio.Transport | None = None
        self._guarded: tuple[ConnectionGuard, _Connection] | None = None
        self._inner: asyncio.Protocol | None = None
        """aiohttp's protocol, once the connection is handed over."""
        self._buffer = bytearray()
        self._request: tuple[_Request, Route, int] | None = None
        """The request whose head is read and whose body is awaited: its head, route and head length."""
        self._task: asyncio.Task[None] | None = None
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._ahead_paused = False
        self._keepalive: asyncio.TimerHandle | None = None
        self._idle_since = 0.0

    # -- the transport's calls --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is no asyncio subclass
        self._guarded = guard_of(transport)
        self._front.connections.add(self)
        self._idle()

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
            return
        self._buffer += data
        if self._task is None:
            self._next()
        if self._task is not None and len(self._buffer) > _MAX_AHEAD and not self._ahead_paused:
            self._ahead_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        return None  # the transport closes, and `connection_lost` cancels what runs (as aiohttp does)

    def connection_lost(self, exc: Exception | None) -> None:
        self._front.connections.discard(self)
        self._stop_keepalive()
        if self._inner is not None:
            self._inner.connection_lost(exc)
            return
        if self._task is not None:
            self._task.cancel()  # the client went away: its request is cancelled end to end
        self._wake_writer()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()
        self._write_paused = True

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
        self._write_paused = False
        self._wake_writer()

    def close(self) -> None:
        """Close the connection (a request still answered is cancelled)."""
        if self._inner is None and self._transport is not None:
            self._transport.close()

    # -- reading ------------------------------------------------------------------------------------------------

    def _next(self) -> None:
        """Start on the buffered bytes: read a relayed request's head, then, its body in, answer it."""
        buffer = self._buffer
        if self._request is None:
            if not buffer:
                return
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if not _may_be_a_request(buffer) or len(buffer) > _MAX_HEAD or b"\n\n" in buffer:
                    self._hand_over()  # not HTTP, too long, or bare line feeds: aiohttp's to judge
                return
            head = bytes(buffer[: end + 4]) if end + 4 <= _MAX_HEAD else None
            read = self._read_head(head) if head is not None else None
            if read is None:
                if head is None or not self._refuse_expectation(head):
                    self._hand_over()
                return
            self._request = (*read, end + 4)
            if len(buffer) < end + 4 + read[0].body_length and self._guarded is not None:
                guard, conn = self._guarded
                guard.reading_body(conn)
        request, route, head_length = self._request
        total = head_length + request.body_length
        if len(buffer) < total:
            return
        body = bytes(buffer[head_length:total])
        del buffer[:total]
        self._request = None
        if self._guarded is not None:
            guard, conn = self._guarded
            guard.answering(conn)
        self._task = asyncio.get_running_loop().create_task(self._answer(request, route, body))

    def _read_head(self, head: bytes) -> tuple[_Request, Route] | None:
        """The head of a plain relayed request, parsed; None for any other (see the module docstring)."""
        if head.count(b"\n") != head.count(b"\r\n") or head.count(b"\r") != head.count(b"\r\n"):
            return None  # a bare CR or LF: where the head ends is for a stricter reading than ours
        line = head[: head.find(b"\r\n")]
        method, _, rest = line.partition(b" ")
        route = _PATHS.get(rest.rpartition(b" ")[0].partition(b"?")[0]) if method == b"POST" else None
        if route is None:
            return None
        parsed = _Request.parse(head)
        if parsed is None:
            return None  # aiohttp answers it
        request, parser = parsed
        length = request.headers.get(b"content-length")
        if not request.plain or parser.get_http_version() != "1.1" or length is None or not length.isdigit():
            return None
        request.body_length = int(length)
        if request.body_length > self._front.max_body:
            return None  # aiohttp answers 413 in the API's shape
        request.keep_alive = parser.should_keep_alive()
        return request, route

    def _refuse_expectation(self, head: bytes) -> bool:
        """Answer a request whose ``Expect`` cannot be met, on any route, before its body is sent, and close:
        another expectation than ``100-continue`` (417), or a ``Content-Length`` over the body limit (413;
        aiohttp would invite the body, then refuse it). In the route's error shape, with a request id. False
        for any other head (aiohttp's to answer, ``100 Continue`` included)."""
        if b"expect:" not in head.lower():
            return False
        parsed = _Request.parse(head)
        if parsed is None:
            return False
        request, parser = parsed
        expect = request.headers.get(b"expect")
        if expect is None or request.repeated or parser.get_http_version() != "1.1":
            return False  # aiohttp judges a repeated header; HTTP/1.0 has no Expect
        length = request.headers.get(b"content-length")
        max_body = self._front.max_body
        if expect.lower() != b"100-continue":
            status, code = 417, ErrorCode.INVALID_REQUEST
            message = f"Unknown Expect: {expect[:100].decode('latin-1')!r} (only 100-continue is met)"
        elif length is not None and length.isdigit() and int(length) > max_body:
            status, code = 413, ErrorCode.REQUEST_TOO_LARGE
            message = f"Request body too large: Content-Length {int(length)}, the limit is {max_body} bytes"
        else:
            return False
        rid = new_request_id()
        log.info("refused request %s before its body: %s", rid, message)
        path = request.url.partition(b"?")[0].decode("latin-1")
        error = error_answer(status, code, message, rid, dialect=dialect_of(path))
        out = _SocketAnswer(self, [("Date", self._front.date()), ("Connection", "close")])
        out.whole(error.status, list(error.headers.items()), error.body)
        self.transport.close()
        return True

    def _hand_over(self) -> None:
        """Give the connection to aiohttp from the current request's first byte on."""
        transport = self._transport
        if transport is None:
            return
        self._stop_keepalive()
        self._inner = inner = self._front.make_aiohttp()
        self._front.connections.discard(self)  # aiohttp's server closes it at shutdown
        reroute(transport, inner)  # the guard calls aiohttp's protocol itself from now on
        inner.connection_made(transport)
        if self._write_paused:
            inner.pause_writing()
        if self._ahead_paused:
            self._ahead_paused = False
            transport.resume_reading()
        data, self._buffer = bytes(self._buffer), bytearray()
        inner.data_received(data)

    # -- answering ------------------------------------------------------------------------------------------------

    async def _answer(self, request: _Request, route: Route, body: bytes) -> None:
        front = self._front
        rid = new_request_id()
        extra: Headers = [("Date", front.date())]
        if front.cors is not None:
            extra.extend(front.cors.answer_headers(request.header(b"origin")))
        if not request.keep_alive:
            extra.append(("Connection", "close"))
        out = _SocketAnswer(self, extra)
        try:
            try:
                check_nesting(body)
                await serve_relay(
                    front.hub,
                    route,
                    rid,
                    credential(request.header(b"authorization"), request.header(b"x-api-key")),
                    body,
                    out,
                    explain=request.headers.get(b"x-potluck-explain") == b"1",
                )
            except Exception as exc:  # noqa: BLE001 - answered in the route's shape, and logged when unknown
                if out.started:
                    log.warning("request %s failed after its answer began: %r", rid, exc)
                    request.keep_alive = False  # the client cannot tell where this answer ends
                else:
                    error = failure_answer(exc, rid, route.dialect)
                    out.whole(error.status, list(error.headers.items()), error.body)
        except ConnectionError:
            request.keep_alive = False
        finally:
            self._task = None
            self._answered(request.keep_alive and not out.cut_short)

    def _answered(self, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if not keep_alive:
            transport.close()
            return
        if self._guarded is not None:
            guard, conn = self._guarded
            guard.answered(conn, more=bool(self._buffer))
        if self._ahead_paused:
            self._ahead_paused = False
            transport.resume_reading()
        self._idle()
        self._next()

    async def drain(self) -> None:
        """Wait for the client to take what the socket holds (its buffer is over the high-water mark)."""
        while self._write_paused:
            transport = self._transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("the client went away")
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    def _wake_writer(self) -> None:
        waiter, self._drain = self._drain, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- keep-alive -------------------------------------------------------------------------------------------------

    def _idle(self) -> None:
        """Nothing to answer: the keep-alive timeout runs from now (one timer per connection, moved on as
        it fires, not one per request)."""
        loop = asyncio.get_running_loop()
        self._idle_since = loop.time()
        if self._keepalive is None:
            self._keepalive = loop.call_at(self._idle_since + self._front.keepalive_timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._keepalive = None
        if self._inner is not None or self._transport is None:
            return
        loop = asyncio.get_running_loop()
        if self._task is not None or self._buffer:
            # Busy: a request is answered, or one is being read (under the guard's deadlines).
            self._keepalive = loop.call_at(loop.time() + self._front.keepalive_timeout, self._check_idle)
            return
        due = self._idle_since + self._front.keepalive_timeout
        if loop.time() >= due:
            self._transport.close()
        else:
            self._keepalive = loop.call_at(due, self._check_idle)

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    @property
    def transport(self) -> asyncio.Transport:
        if self._transport is None:
            raise ConnectionResetError("not connected")
        return self._transport


class _SocketAnswer:
    """An `Answer` written to the connection's transport (HTTP/1.1)."""

    __slots__ = ("_chunked", "_conn", "_extra", "cut_short", "started")

    def __init__(self, conn: FrontProtocol, extra: Headers) -> None:
        self._conn = conn
        self._extra = extra
        """Headers of every answer on this request: Date, CORS, Connection."""
        self._chunked = False
        self.started = False
        self.cut_short = False

    def _head(self, status: int, headers: Headers, framing: bytes) -> bytes:
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
        lines.extend(f"{name}: {value}\r\n".encode() for name, value in headers)
        lines.extend(f"{name}: {value}\r\n".encode() for name, value in self._extra)
        lines.append(framing)
        return b"".join(lines)

    def _transport(self) -> asyncio.Transport:
        transport = self._conn.transport
        if transport.is_closing():
            raise ConnectionResetError("the client went away")
        return transport

    def whole(self, status: int, headers: Headers, body: bytes) -> None:
        transport = self._transport()
        self.started = True
        transport.write(self._head(status, headers, b"Content-Length: %d\r\n\r\n" % len(body)) + body)

    async def begin(self, status: int, headers: Headers, content_length: int | None) -> None:
        transport = self._transport()
        self.started = True
        self._chunked = content_length is None
        if content_length is None:
            framing = b"Transfer-Encoding: chunked\r\n\r\n"
        else:
            framing = b"Content-Length: %d\r\n\r\n" % content_length
        transport.write(self._head(status, headers, framing))
        await self._conn.drain()

    def direct(self) -> Callable[[bytes], bool] | None:
        return direct_writer(self._conn.transport) if self._chunked else None

    async def write(self, data: bytes) -> None:
        transport = self._transport()
        if not self._chunked:
            transport.write(data)
        elif data:  # an empty chunk would end the body
            transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        await self._conn.drain()

    async def end(self) -> None:
        if self._chunked:
            self._transport().write(b"0\r\n\r\n")

    def cut(self) -> None:
        self.cut_short = True
        self._conn.transport.close()
