"""The relay's HTTP/1.1 client: one POST to a backend, its answer streamed back as it arrives.

A pool of keep-alive connections per backend, each an asyncio protocol whose bytes llhttp parses
(through httptools; llhttp is aiohttp's parser too, and it runs in aiohttp's lenient mode for
responses). It does only what the relay needs, which is why it is here instead of aiohttp's
``ClientSession``: that cost the agent about 40 µs more CPU per relayed request (measured on the
relay alone), spent on URL, header, request, response, payload and stream-reader objects and a
task per request. The catalog's probes (rare GETs) still use aiohttp.

Body bytes come back as the socket delivered them, so what arrived together stays together, and
reading stops while the relay is not taking them (the hub has granted no credit).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass
from types import TracebackType

import httptools
import yarl

from potluck import __version__

CONNECT_TIMEOUT = 10.0
KEEPALIVE_S = 60.0
"""An idle pooled connection older than this is closed (servers close theirs sooner or later too)."""
_PAUSE_AT = 1 << 16
"""Unread body bytes at which reading from the backend pauses until the relay catches up."""
_FRAMING = (b"content-length", b"transfer-encoding")
"""Headers that mark where a body ends; without them it ends with the connection."""


class BackendError(Exception):
    """The backend request failed."""


class BackendConnectError(BackendError):
    """No connection could be made: nothing reached the backend."""

    def __init__(self, os_error: OSError) -> None:
        super().__init__(str(os_error) or type(os_error).__name__)
        self.os_error = os_error


class BackendDisconnectedError(BackendError):
    """The connection closed before the response's head."""


class BackendPayloadError(BackendError):
    """The response broke off or was not valid HTTP after its head."""


@dataclass(frozen=True, slots=True)
class _Origin:
    host: str
    port: int
    ssl: bool
    prefix: bytes
    """The base URL's path (without a trailing slash), put before every request path."""
    fixed_headers: bytes
    """Every request header but Content-Length, each ending in CRLF."""

    @classmethod
    def parse(cls, base: str) -> _Origin:
        url = yarl.URL(base)
        if url.scheme not in ("http", "https") or not url.raw_host or url.port is None:
            raise ValueError(f"not an http(s) URL: {base!r}")
        lines = [
            f"Host: {url.host_port_subcomponent}",
            "Content-Type: application/json",
            "Accept: */*",
            "Accept-Encoding: identity",
            f"User-Agent: potluck-agent/{__version__}",
        ]
        if url.raw_user is not None:
            credentials = f"{url.user or ''}:{url.password or ''}".encode()
            lines.append(f"Authorization: Basic {base64.b64encode(credentials).decode()}")
        return cls(
            host=url.raw_host,
            port=url.port,
            ssl=url.scheme == "https",
            prefix=url.raw_path.rstrip("/").encode("ascii"),
            fixed_headers="".join(line + "\r\n" for line in lines).encode("latin-1"),
        )


class BackendResponse:
    """A backend's answer: status and headers now, the body as it arrives.

    Use as an async context manager: leaving it returns the connection to the pool when the body
    was read to its end, and closes it otherwise (which is how a cancelled relay aborts the request).
    """

    __slots__ = ("_conn", "content_type", "raw_headers", "status")

    def __init__(self, conn: _Connection, status: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self._conn = conn
        self.status = status
        self.raw_headers = raw_headers
        """As the backend sent them, in order (the relay decodes only those it passes on)."""
        self.content_type = ""
        for name, value in raw_headers:
            if name.lower() == b"content-type":
                self.content_type = value.decode("latin-1")
                break

    async def read_some(self) -> bytes:
        """The body bytes received since the last call (waiting for some); b"" at the end of the body."""
        conn = self._conn
        while not conn.body:
            if conn.error is not None:
                raise conn.error
            if conn.complete:
                return b""
            conn.body_waiter = waiter = conn.loop.create_future()
            try:
                await waiter
            finally:
                conn.body_waiter = None
        body = conn.body
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        conn.buffered = 0
        if conn.paused:
            conn.paused = False
            conn.transport.resume_reading()
        return data

    async def read(self, limit: int) -> bytes:
        """The body to its end, or up to about ``limit`` bytes of it."""
        parts: list[bytes] = []
        size = 0
        while size < limit and (data := await self.read_some()):
            parts.append(data)
            size += len(data)
        return b"".join(parts)

    async def __aenter__(self) -> BackendResponse:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._conn.release()


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a backend; one request at a time."""

    def __init__(self, client: BackendClient, origin: _Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.origin = origin
        self.loop = loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.parser = httptools.HttpResponseParser(self)
        self.parser.set_dangerous_leniencies(
            lenient_headers=True, lenient_optional_cr_before_lf=True, lenient_spaces_after_chunk_size=True
        )
        self.closed = False
        self.idle_since = 0.0
        # The request in flight, if any:
        self.active = False
        self.head_waiter: asyncio.Future[BackendResponse] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.body_waiter: asyncio.Future[None] | None = None
        self.complete = False
        self.keep_alive = False
        self.error: BackendError | None = None

    # -- the request ----------------------------------------------------------------------------------

    def send(self, path: bytes, body: bytes) -> asyncio.Future[BackendResponse]:
        self.active = True
        self.complete = False
        self.error = None
        self.head_waiter = waiter = self.loop.create_future()
        origin = self.origin
        head = b"POST %s%s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n" % (
            origin.prefix,
            path,
            origin.fixed_headers,
            len(body),
        )
        if len(body) < 16384:
            self.transport.write(head + body)
        else:
            self.transport.writelines((head, body))
        return waiter

    def release(self) -> None:
        """The relay is done with the response: pool the connection if it can serve another."""
        reusable = self.complete and self.keep_alive and self.error is None and not self.closed
        self.active = False
        self.head_waiter = None
        self.body.clear()
        self.buffered = 0
        if reusable:
            if self.paused:
                self.paused = False
                self.transport.resume_reading()
            self.client._pool(self)
        else:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    # -- asyncio.Protocol -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP connection's transport

    def data_received(self, data: bytes) -> None:
        if not self.active:
            self.close()  # bytes nobody asked for: the connection is not in a known state
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.complete:
                self._fail(BackendPayloadError(f"the backend sent invalid HTTP: {exc}"))
            self.keep_alive = False
            self.close()
        if self.body:
            self._wake()
            if self.buffered >= _PAUSE_AT and not self.paused and not self.closed:
                self.paused = True
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client._forget(self)
        if not self.active or self.complete:
            return
        if self.head_waiter is not None and not self.head_waiter.done():
            self._fail(BackendDisconnectedError("the backend closed the connection without answering"))
        elif self.error is None and not any(name.lower() in _FRAMING for name, _ in self.headers):
            self.complete = True  # a body without Content-Length or chunking ends with the connection
            self._wake()
        else:
            self._fail(BackendPayloadError("the backend closed the connection in the middle of its response"))

    # -- httptools callbacks --------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # more after the answer: not an HTTP/1.1 server we can keep talking to
            raise BackendPayloadError("the backend sent bytes after its response")
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            return
        waiter = self.head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(BackendResponse(self, status, self.headers))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    # -- failures -------------------------------------------------------------------------------------

    def _fail(self, error: BackendError) -> None:
        if self.error is None:
            self.error = error
        waiter = self.head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        waiter = self.body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class BackendClient:
    """Pooled keep-alive HTTP/1.1 connections to the backends, for the relay's POSTs."""

    def __init__(self, *, connect_timeout: float = CONNECT_TIMEOUT, keepalive_s: float = KEEPALIVE_S) -> None:
        self.connect_timeout = connect_timeout
        self.keepalive_s = keepalive_s
        self._origins: dict[str, _Origin] = {}
        self._idle: dict[_Origin, dict[_Connection, None]] = {}
        """Idle connections per backend, oldest first (a dict: removal in O(1), LIFO with popitem)."""
        self._sweeper: asyncio.TimerHandle | None = None
        self._ssl: ssl.SSLContext | None = None

    async def post(self, base: str, path: str, body: bytes) -> BackendResponse:
        """POST ``body`` (JSON) to ``base + path``; returns once the response's head is in.

        A pooled connection that turns out to be dead (servers close idle ones on their own schedule:
        llama.cpp after ~5 s) before it answered anything is replaced by a fresh one, once.
        """
        origin = self._origins.get(base)
        if origin is None:
            origin = self._origins[base] = _Origin.parse(base)
        target = path.encode("ascii")
        conn = self._take_idle(origin)
        if conn is not None:
            try:
                return await self._exchange(conn, target, body)
            except BackendDisconnectedError:
                pass
        conn = await self._connect(origin)
        return await self._exchange(conn, target, body)

    async def _exchange(self, conn: _Connection, target: bytes, body: bytes) -> BackendResponse:
        waiter = conn.send(target, body)
        try:
            return await waiter
        except BaseException:
            conn.release()  # not complete: closes it
            raise

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if origin.ssl:
            context = self._ssl = self._ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, origin, loop), origin.host, origin.port, ssl=context
                )
        except TimeoutError as exc:
            raise BackendConnectError(TimeoutError(f"connecting took over {self.connect_timeout:g} s")) from exc
        except OSError as exc:
            raise BackendConnectError(exc) from exc
        return conn

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn, _ = idle.popitem()
            if not conn.closed:
                return conn
        return None

    def _pool(self, conn: _Connection) -> None:
        conn.idle_since = conn.loop.time()
        self._idle.setdefault(conn.origin, {})[conn] = None
        if self._sweeper is None:
            self._sweeper = conn.loop.call_later(self.keepalive_s, self._sweep)

    def _forget(self, conn: _Connection) -> None:
        idle = self._idle.get(conn.origin)
        if idle is not None:
            idle.pop(conn, None)

    def _sweep(self) -> None:
        self._sweeper = None
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - self.keepalive_s
        for idle in self._idle.values():
            while idle:
                oldest = next(iter(idle))
                if oldest.idle_since > cutoff:
                    break
                del idle[oldest]
                oldest.close()
        if any(self._idle.values()):
            self._sweeper = loop.call_later(self.keepalive_s / 2, self._sweep)

    def close(self) -> None:
        """Close the idle connections (requests in flight close theirs when they end)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()
