"""Slow and abusive connections: header and body read deadlines, and a cap per client address.

aiohttp puts no deadline on reading a request: a client that sends its headers a byte at a time, or
stops halfway through a body, holds a connection (and a file descriptor) for as long as it likes,
and a few hundred of them starve real clients. The guard wraps every connection's protocol and
follows each connection through four phases:

- ``HEADERS``: from the accept, or from the first byte after a keep-alive pause, until the app sees
  the request: at most ``header_timeout`` seconds, however the bytes trickle in.
- ``QUEUED``: the headers are complete (the guard saw their blank line) and the request waits for a
  busy event loop to take it: not the client's doing, so neither a deadline nor the cap applies.
- ``BODY``: the request body is read before the handler runs: at most ``body_timeout`` seconds
  without a byte.
- ``HANDLER``: the request is answered. No deadline here: responses stream for as long as the
  model writes (the request path has its own timeouts).
- ``IDLE``: a keep-alive connection between requests; aiohttp's keep-alive timeout closes it. That
  timeout also bounds a request whose first bytes came in the same packet as the end of the one
  before and that never finishes: the guard sees bytes arrive, not where a request starts.

A connection in ``HEADERS`` or ``BODY`` is *pending*. Once an address holds more than
``max_pending_per_ip`` connections that have been pending for half a deadline or longer, the excess is
closed and its new connections are refused until it is back under the cap; a burst of fast new
connections (a client opening its pool) is never refused. One sweep a second (or faster, for
short deadlines) closes what is past its deadline.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

from aiohttp import web

from potluck._shared.clock import Clock
from potluck.api.parser_errors import handler_factory

if TYPE_CHECKING:
    from potluck.api.front import Front

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_MAX_SWEEP_INTERVAL = 1.0
_MIN_SWEEP_INTERVAL = 0.05


class Phase(enum.Enum):
    HEADERS = "headers"
    BODY = "body"
    QUEUED = "queued"
    """The request's headers are in (a blank line came): waiting for the app to take it, which under load
    can take a while; not slow, so not pending."""
    HANDLER = "handler"
    IDLE = "idle"
    CLOSED = "closed"
    """The connection is gone (or being closed by the guard)."""


class _Connection:
    __slots__ = ("ip", "pending_since", "phase", "since", "tail", "transport", "unread")

    def __init__(self, transport: asyncio.Transport, ip: str, now: float) -> None:
        self.transport = transport
        self.ip = ip
        self.phase = Phase.HEADERS
        self.since = now
        """When the phase began; in ``BODY``, when the last byte came."""
        self.pending_since = now
        self.unread = False
        """Bytes came while the request was answered: the next request (pipelined) has begun."""
        self.tail = b""
        """The last bytes of the headers so far, to see a blank line split across two reads."""


class ConnectionGuard:
    """Deadlines and the per-address cap for every connection of a `GuardedSite` (see the module docstring)."""

    def __init__(self, clock: Clock, *, header_timeout: float, body_timeout: float, max_pending_per_ip: int) -> None:
        self._clock = clock
        self.header_timeout = header_timeout
        """Also the TLS handshake's deadline (see `GuardedSite`)."""
        self._body_timeout = body_timeout
        self._cap = max_pending_per_ip
        self.interval = min(_MAX_SWEEP_INTERVAL, max(_MIN_SWEEP_INTERVAL, min(header_timeout, body_timeout) / 4))
        self.slow_after = max(self.interval, min(header_timeout, body_timeout) / 2)
        """How long a connection must have been pending to count against its address's cap: half a deadline.
        On a saturated machine a real client can take a second to send a request it just connected for (the
        hub closed 28 to 59 of 256 benchmark connections with a one-second threshold); a slowloris client
        holds its connections for the whole deadline."""
        self._pending: dict[str, dict[_Connection, None]] = {}
        """Address -> its pending connections, oldest first."""
        self._crowded: set[str] = set()
        """Addresses at their cap of slow pending connections at the last sweep."""

    def protocol_factory(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """Wrap the server's protocol factory (aiohttp's `web.Server`) so the guard sees every connection."""
        return lambda: _GuardedProtocol(self, make)

    # -- phases -------------------------------------------------------------------------------------

    def _accept(self, transport: asyncio.Transport) -> _Connection | None:
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if ip in self._crowded and len(self._pending.get(ip, ())) >= self._cap:
            log.debug("refused a connection from %s: at its cap of %d pending connections", ip, self._cap)
            return None
        conn = _Connection(transport, ip, self._clock.now())
        self._pending.setdefault(ip, {})[conn] = None
        return conn

    def _enter(self, conn: _Connection, phase: Phase) -> None:
        was_pending = conn.phase is Phase.HEADERS or conn.phase is Phase.BODY
        conn.phase = phase
        if phase is Phase.HEADERS or phase is Phase.BODY:
            conn.since = now = self._clock.now()
            if not was_pending:
                conn.pending_since = now
                self._pending.setdefault(conn.ip, {})[conn] = None
        elif was_pending:
            self._forget(conn)

    def _forget(self, conn: _Connection) -> None:
        conns = self._pending.get(conn.ip)
        if conns is not None:
            conns.pop(conn, None)
            if not conns:
                del self._pending[conn.ip]

    def _lost(self, conn: _Connection) -> None:
        self._forget(conn)
        conn.phase = Phase.CLOSED

    async def watch_request(self, conn: _Connection, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Read the body (under the body deadline), then answer the request (no deadline)."""
        try:
            if request.body_exists and not request.content.is_eof():
                self.reading_body(conn)
                await request.read()  # cached for the handler
            self.answering(conn)
            return await handler(request)
        finally:
            self.answered(conn)

    def reading_body(self, conn: _Connection) -> None:
        """The request's headers are in, its body is not: the body deadline applies."""
        self._enter(conn, Phase.BODY)

    def answering(self, conn: _Connection) -> None:
        """The request is read whole and being answered: no deadline."""
        conn.unread = False
        self._enter(conn, Phase.HANDLER)

    def answered(self, conn: _Connection, *, more: bool = False) -> None:
        """The answer is out; ``more``: bytes of the next request are in already (as if they came after)."""
        if conn.phase is not Phase.CLOSED:
            self._enter(conn, Phase.HEADERS if conn.unread or more else Phase.IDLE)

    # -- deadlines ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Sweep until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            self.sweep()

    def sweep(self) -> None:
        """Close what is past its deadline, and what an address holds beyond its cap."""
        now = self._clock.now()
        closed: Counter[str] = Counter()
        crowded: set[str] = set()
        for ip, conns in list(self._pending.items()):
            slow = 0
            for conn in list(conns):
                deadline = self.header_timeout if conn.phase is Phase.HEADERS else self._body_timeout
                if now - conn.since > deadline:
                    closed[f"{conn.phase.value} too slow"] += 1
                    self._close(conn)
                elif now - conn.pending_since >= self.slow_after:
                    slow += 1
                    if self._cap and slow > self._cap:
                        closed[f"over the cap of {ip}"] += 1
                        self._close(conn)
            if self._cap and slow >= self._cap:
                crowded.add(ip)
        self._crowded = crowded
        if closed:
            log.info("closed slow connections: %s", ", ".join(f"{n} {why}" for why, n in sorted(closed.items())))

    def _close(self, conn: _Connection) -> None:
        self._lost(conn)
        # abort, not close: a client that does not read would keep the socket in close's flush.
        conn.transport.abort()


def guard_of(transport: asyncio.BaseTransport | None) -> tuple[ConnectionGuard, _Connection] | None:
    """The guard watching a connection and its record there; None for a connection no `GuardedSite` accepted
    (e.g. an in-process test server)."""
    protocol = transport.get_protocol() if transport is not None else None
    if not isinstance(protocol, _GuardedProtocol) or protocol.conn is None:
        return None
    return protocol.guard, protocol.conn


def reroute(transport: asyncio.BaseTransport, protocol: asyncio.Protocol) -> None:
    """Make ``protocol`` the guarded connection's own in place of the one there (the front server handing the
    connection over to aiohttp), so that nothing forwards its calls any more; nothing for an unguarded one."""
    guarded = transport.get_protocol()
    if isinstance(guarded, _GuardedProtocol) and guarded.conn is not None:
        guarded._inner = protocol


@web.middleware
async def guard_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection's guard where its request is: body read (under the body deadline), then answered."""
    guarded = guard_of(request.transport)
    if guarded is None:
        return await handler(request)
    guard, conn = guarded
    return await guard.watch_request(conn, request, handler)


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard watching its phases."""

    __slots__ = ("_inner", "_make", "conn", "guard")

    def __init__(self, guard: ConnectionGuard, make: Callable[[], asyncio.Protocol]) -> None:
        self.guard = guard
        self._make = make
        self._inner: asyncio.Protocol | None = None
        self.conn: _Connection | None = None

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast("asyncio.Transport", base)
        conn = self.guard._accept(transport)
        if conn is None:
            transport.abort()
            return
        self.conn = conn
        self._inner = self._make()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        conn, inner = self.conn, self._inner
        if conn is None or inner is None:
            return
        phase = conn.phase
        if phase is Phase.BODY:
            conn.since = self.guard._clock.now()
        elif phase is Phase.IDLE or phase is Phase.HEADERS:
            if phase is Phase.IDLE:
                self.guard._enter(conn, Phase.HEADERS)
                conn.tail = b""
            seen = conn.tail + data
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self.guard._enter(conn, Phase.QUEUED)
            else:
                conn.tail = seen[-3:]
        elif phase is Phase.HANDLER:
            conn.unread = True
        inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.guard._lost(self.conn)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


CONNECTION_GUARD = web.AppKey("potluck_connection_guard", ConnectionGuard)
"""The app's guard: its middleware and sweeper run with the app, and `GuardedSite` feeds it connections."""


class GuardedSite(web.BaseSite):
    """A TCP site (like aiohttp's `TCPSite`) whose connections go through a `ConnectionGuard`."""

    __slots__ = ("_front", "_guard", "_host", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        host: str,
        port: int,
        *,
        front: Front | None = None,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 128,
    ) -> None:
        """``front``: serves the relayed routes ahead of aiohttp (api/front.py)."""
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._guard = guard
        self._front = front
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        if server is None:
            raise RuntimeError("the runner is not set up")
        # Parser refusals answered in the API's error shape (api/parser_errors.py).
        protocol: Callable[[], asyncio.Protocol] = handler_factory(server)
        if self._front is not None:
            protocol = self._front.protocol_factory(protocol)
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(protocol),
            self._host,
            self._port,
            ssl=self._ssl_context,
            # The guard sees a TLS connection once its handshake is done; until then this bounds it.
            ssl_handshake_timeout=self._guard.header_timeout if self._ssl_context else None,
            backlog=self._backlog,
        )

    async def stop(self) -> None:
        await super().stop()
        if self._front is not None:
            self._front.close()  # aiohttp's server closes the connections it was handed
