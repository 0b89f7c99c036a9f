"""The agent's lifecycle: connect, serve, reconnect with jittered backoff; drain on SIGTERM.

On SIGTERM (or SIGINT) the agent tells the hub it is draining, so no new work arrives, lets the
requests in flight finish for up to ``drain_timeout`` seconds, cancels what is left, and exits 0.

A front end that runs the daemon in-process (the tray) reads it through `status()`, pauses it with
`set_paused()` (the agent tells the hub it is draining, and stays so across reconnects) and ends it
with `stop()`; it runs it with ``handle_signals=False`` when the daemon's loop is not in the main thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time

import aiohttp

from potluck.agent.backend_client import BackendClient
from potluck.agent.backends import make_backend
from potluck.agent.backoff import Backoff
from potluck.agent.catalog import Catalog
from potluck.agent.connection import HubConnection, RejectedError
from potluck.agent.discovery import WELL_KNOWN_PORTS
from potluck.agent.gpu import MetricsProbe
from potluck.agent.identity import load_or_create
from potluck.agent.settings import AgentSettings, parse_backend
from potluck.agent.status import AgentStatus, BackendView, Link, ModelView, Tally
from potluck.protocol.agent import LoadMessage, ProtocolError, encode_frame
from potluck.protocol.metrics import HostMetrics

log = logging.getLogger(__name__)


def describe_failure(exc: BaseException, hub_url: str) -> str:
    """One line on why a connection to the hub failed (aiohttp's reprs span a screen)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"the hub's TLS certificate is not trusted ({exc.certificate_error})"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        reason = getattr(exc.os_error, "reason", None) or exc.os_error
        hint = "; is the hub serving plain HTTP (http://)?" if reason == "WRONG_VERSION_NUMBER" else ""
        return f"TLS with the hub at {exc.host}:{exc.port} failed ({reason}){hint}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        # A refused connect's message is "Connect call failed (...)": the errno's text says more. Name
        # lookups fail with negative (getaddrinfo) codes, whose text is in strerror.
        code = error.errno or 0
        why = os.strerror(code) if code > 0 else (error.strerror or str(error) or type(error).__name__)
        return f"cannot connect to the hub at {exc.host}:{exc.port}: {why}"
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"the hub at {hub_url} refused the WebSocket upgrade: {exc.status} {exc.message}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the hub closed the connection"
    if isinstance(exc, TimeoutError):
        return "the hub did not answer in time"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class FatalAgentError(Exception):
    """The agent cannot go on (e.g. the hub refused its identity for good)."""


class AgentDaemon:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.identity = load_or_create(settings.data_dir)
        configured = [make_backend(url, kind or "openai") for url, kind in map(parse_backend, settings.backends)]
        ports = [*WELL_KNOWN_PORTS, *settings.scan_ports] if settings.detecting else []
        self.catalog = Catalog(configured, scan_ports=ports)
        self._refresh = self.catalog.wake
        self.metrics = MetricsProbe.from_system()
        self.connection: HubConnection | None = None
        self.client = BackendClient()
        """The relay's connections to the backends (the catalog's probes go through aiohttp)."""
        self._stopping = asyncio.Event()
        self._rng = random.Random()  # noqa: S311 - backoff jitter, not a secret
        self.paused = False
        self.link = Link.CONNECTING
        self.last_error: str | None = None
        self.host: HostMetrics | None = None
        self.tally = Tally()

    def status(self) -> AgentStatus:
        """What the agent is doing now; call it on the daemon's loop."""
        conn = self.connection
        self.tally.roll()
        backends = tuple(
            BackendView(b.url, b.kind, b.healthy, b.version, tuple(ModelView(m.id, m.hot) for m in b.models))
            for b in self.catalog.backends
        )
        return AgentStatus(
            hub_url=self.settings.hub_url,
            link=self.link,
            agent_id=conn.agent_id if conn is not None else self.identity.enrolled_with(self.settings.hub_url),
            paused=self.paused,
            in_flight=conn.running() if conn is not None else 0,
            max_concurrency=self.settings.max_concurrency,
            last_error=self.last_error,
            backends=backends,
            host=self.host,
            day=self.tally.day,
            requests_today=self.tally.requests,
            failed_today=self.tally.failed,
            prompt_tokens_today=self.tally.prompt_tokens,
            completion_tokens_today=self.tally.completion_tokens,
        )

    def set_paused(self, paused: bool) -> None:
        """Take no new work (what runs finishes), or take it again; the hub hears it at once, and again
        on every reconnect. Call it on the daemon's loop."""
        self.paused = paused
        conn = self.connection
        if conn is not None and not self._stopping.is_set() and conn.draining != paused:
            conn.draining = paused
            conn.announce_state()
        log.info("paused: no new work" if paused else "resumed: taking work")

    def stop(self) -> None:
        """Drain and end `run`, as SIGTERM does; call it on the daemon's loop."""
        self._stopping.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self._stopping.set)
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
        # No overall timeout: generations can run for minutes. Connecting must be quick.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as http:
                await self._typed_kinds(http)
                await self.catalog.rescan(http)
                await self.catalog.refresh(http)
                await self._run(http)
            await self.metrics.aclose()
        finally:
            self.client.close()
            for sig in signals:
                loop.remove_signal_handler(sig)

    async def _run(self, http: aiohttp.ClientSession) -> None:
        backoff = Backoff(self.settings.reconnect_min, self.settings.reconnect_max, self._rng)
        background = [
            asyncio.create_task(self._catalog_loop(http), name="catalog"),
            asyncio.create_task(self._rescan_loop(http), name="rescan"),
            asyncio.create_task(self._metrics_loop(), name="metrics"),
        ]
        try:
            while not self._stopping.is_set():
                reason = "the hub closed the connection"
                try:
                    await self._session(http, backoff)
                except RejectedError as exc:
                    if not exc.reject.retry:
                        raise FatalAgentError(f"the hub refused this agent: {exc}") from exc
                    reason = f"the hub asked us to come back later ({exc})"
                except (aiohttp.ClientError, OSError, ProtocolError, TimeoutError) as exc:
                    reason = describe_failure(exc, self.settings.hub_url)
                self.link = Link.OFFLINE
                self.last_error = reason
                if self._stopping.is_set():
                    break
                delay = backoff.next_delay(time.monotonic())
                log.warning("%s; reconnecting in %.2f s", reason, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)

    async def _session(self, http: aiohttp.ClientSession, backoff: Backoff) -> None:
        settings = self.settings
        async with http.ws_connect(
            settings.connect_url,
            max_msg_size=64 << 20,
            compress=0,
            autoping=True,
            heartbeat=None,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
        ) as ws:
            conn = HubConnection(
                settings, self.identity, self.catalog, self.client, ws, self._refresh, tally=self.tally
            )
            welcome = await conn.handshake(draining=self.paused)
            backoff.connected(time.monotonic())
            self.link = Link.CONNECTED
            self.last_error = None
            log.info("connected to %s as agent %s", settings.hub_url, welcome.agent_id)
            self.connection = conn
            serve = asyncio.create_task(conn.serve(), name="serve")
            stop = asyncio.create_task(self._stopping.wait(), name="stop-wait")
            try:
                done, _ = await asyncio.wait({serve, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    await self._drain(conn, serve)
                else:
                    serve.result()
            finally:
                self.connection = None
                stop.cancel()
                if not serve.done():
                    serve.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await serve

    async def _drain(self, conn: HubConnection, serve: asyncio.Task[None]) -> None:
        timeout = self.settings.drain_timeout
        log.info("draining: %d requests in flight, up to %.0f s", len(conn.active), timeout)
        conn.start_draining()
        if not await conn.wait_idle(timeout):
            log.warning("drain deadline reached; cancelling %d requests", len(conn.active))
        await conn.close()

    async def _typed_kinds(self, http: aiohttp.ClientSession) -> None:
        """Configured backends without a kind= hint get the kind their fingerprint says."""
        from potluck.agent.discovery import fingerprint

        typed = []
        for (url, kind), backend in zip(
            map(parse_backend, self.settings.backends), self.catalog.configured, strict=True
        ):
            if kind is None:
                found = await fingerprint(http, backend.base)
                if found is not None and found != backend.kind:
                    backend = make_backend(url, found)
            typed.append(backend)
        self.catalog.configured = typed

    async def _catalog_loop(self, http: aiohttp.ClientSession) -> None:
        while True:
            # Faster while a request waits on a cold model, so the hub learns it is hot soon.
            interval = 0.5 if self.catalog.cold_waiters else self.settings.catalog_interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._refresh.wait()
            self._refresh.clear()
            if await self.catalog.refresh(http):
                log.info("models changed: %s", [(m.id, "hot" if m.hot else "cold") for m in self.catalog.models()])
                conn = self.connection
                if conn is not None:
                    conn.announce_models()

    async def _rescan_loop(self, http: aiohttp.ClientSession) -> None:
        if not self.catalog.scan_ports:
            return
        while True:
            await asyncio.sleep(self.settings.rescan_interval)
            await self.catalog.rescan(http)
            self._refresh.set()

    async def _metrics_loop(self) -> None:
        # The first sample at once: status() has GPUs to show from the start; LOAD reports go out on the cadence.
        self.host = await self.metrics.sample()
        while True:
            await asyncio.sleep(self.settings.metrics_interval)
            host = self.host = await self.metrics.sample()
            conn = self.connection
            if conn is None:
                continue
            conn.send(encode_frame(LoadMessage(conn.running(), host, self.catalog.infos())))
