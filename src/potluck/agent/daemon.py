"""The agent's lifecycle: connect, serve, reconnect with jittered backoff; drain on SIGTERM.

On SIGTERM (or SIGINT) the agent tells the hub it is draining, so no new work arrives, lets the
requests in flight finish for up to ``drain_timeout`` seconds, cancels what is left, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time

import aiohttp

from potluck.agent.backend import Backend, Catalog
from potluck.agent.connection import HubConnection, RejectedError
from potluck.agent.identity import load_or_create
from potluck.agent.settings import AgentSettings
from potluck.protocol.agent import ProtocolError

log = logging.getLogger(__name__)

# A connection that stayed up this long resets the backoff.
_STABLE_AFTER_S = 10.0


class FatalAgentError(Exception):
    """The agent cannot go on (e.g. the hub refused its identity for good)."""


class AgentDaemon:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.identity = load_or_create(settings.data_dir)
        self.catalog = Catalog([Backend(url) for url in settings.backends])
        self.connection: HubConnection | None = None
        self._stopping = asyncio.Event()
        self._refresh = asyncio.Event()
        self._rng = random.Random()  # noqa: S311 - backoff jitter, not a secret

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
        # No overall timeout: generations can run for minutes. Connecting must be quick.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as http:
                await self.catalog.refresh(http)
                await self._run(http)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _run(self, http: aiohttp.ClientSession) -> None:
        attempt = 0
        catalog_task = asyncio.create_task(self._catalog_loop(http), name="catalog")
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                try:
                    await self._session(http)
                except RejectedError as exc:
                    if not exc.reject.retry:
                        raise FatalAgentError(f"the hub refused this agent: {exc}") from exc
                    log.info("the hub asked us to come back later: %s", exc)
                except (aiohttp.ClientError, OSError, ProtocolError, TimeoutError) as exc:
                    log.warning("hub connection failed: %r", exc)
                if self._stopping.is_set():
                    break
                attempt = 0 if time.monotonic() - started > _STABLE_AFTER_S else attempt + 1
                delay = self._backoff(attempt)
                log.info("reconnecting in %.2f s", delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
        finally:
            catalog_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await catalog_task

    def _backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff, so a fleet reconnecting after a hub restart spreads out."""
        cap = min(self.settings.reconnect_max, self.settings.reconnect_min * (2 ** max(0, attempt - 1)))
        return self._rng.uniform(self.settings.reconnect_min / 2, max(self.settings.reconnect_min, cap))

    async def _session(self, http: aiohttp.ClientSession) -> None:
        settings = self.settings
        async with http.ws_connect(
            settings.connect_url,
            max_msg_size=64 << 20,
            compress=0,
            autoping=True,
            heartbeat=None,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
        ) as ws:
            conn = HubConnection(settings, self.identity, self.catalog, http, ws, self._refresh)
            welcome = await conn.handshake(draining=False)
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

    async def _catalog_loop(self, http: aiohttp.ClientSession) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.catalog_interval):
                    await self._refresh.wait()
            self._refresh.clear()
            if await self.catalog.refresh(http):
                log.info("models changed: %s", [m.id for m in self.catalog.models()])
                conn = self.connection
                if conn is not None:
                    conn.announce_models()
