"""The agent daemon on an event loop of its own thread, with the status page on the same loop.

GUI toolkits want the main thread, so the tray runs `AgentDaemon` (the same daemon `potluck agent`
runs) here, without its signal handlers, and with SIGINT/SIGTERM blocked: the tray's main thread takes
them and turns them into `stop()`.
Every method is safe to call from any thread: each hops onto the daemon's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from typing import TypeVar

from potluck._shared import heap
from potluck._shared.clock import SystemClock
from potluck.agent.daemon import AgentDaemon, FatalAgentError
from potluck.agent.doctor import http_base
from potluck.agent.settings import AgentSettings
from potluck.agent.status import AgentStatus
from potluck.tray.earnings import Earnings
from potluck.tray.page import StatusPage

log = logging.getLogger(__name__)

T = TypeVar("T")

CALL_TIMEOUT_S = 5.0


def keep_signals_off_this_thread() -> None:
    """Block SIGINT and SIGTERM in the calling thread (and the threads it starts), so that the main thread
    gets them (see `potluck.tray._route_signals`); a no-op where there are no signal masks (Windows)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


class AgentRunner:
    def __init__(
        self, settings: AgentSettings, *, page_port: int = 0, dashboard_url: str, owner_token: str | None = None
    ) -> None:
        self.settings = settings
        self._owner_token = owner_token
        self._page_port = page_port
        self._dashboard_url = dashboard_url
        self._loop: asyncio.AbstractEventLoop | None = None
        self._daemon: AgentDaemon | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="potluck-agent", daemon=True)
        self.page_url: str | None = None
        self.error: BaseException | None = None
        """Why the agent ended on its own (e.g. the hub refused it for good); None while it runs."""
        self.finished = threading.Event()

    def start(self, timeout: float = 30.0) -> str:
        """Start the thread; the status page's URL once it listens (raises what stopped it starting)."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the agent did not start in time")
        if self.page_url is None:
            raise RuntimeError(f"the agent did not start: {self.error}") from self.error
        return self.page_url

    def status(self) -> AgentStatus | None:
        """The agent's status now; None once it has stopped."""
        return self._call(lambda daemon: daemon.status())

    def set_paused(self, paused: bool) -> None:
        self._call(lambda daemon: daemon.set_paused(paused))

    def stop(self) -> None:
        """Drain and stop the agent (as SIGTERM stops `potluck agent`); returns at once."""
        loop, daemon = self._loop, self._daemon
        if loop is not None and daemon is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(daemon.stop)

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _call(self, fn: Callable[[AgentDaemon], T]) -> T | None:
        loop, daemon = self._loop, self._daemon
        if loop is None or daemon is None or self.finished.is_set():
            return None

        async def call() -> T:
            return fn(daemon)

        try:
            future = asyncio.run_coroutine_threadsafe(call(), loop)
            return future.result(CALL_TIMEOUT_S)
        except (RuntimeError, concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            return None

    def _main(self) -> None:
        keep_signals_off_this_thread()
        try:
            import uvloop

            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        except ImportError:  # pragma: no cover - uvloop is a dependency on every POSIX platform
            factory = asyncio.new_event_loop
        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(self._run())
        except FatalAgentError as exc:
            log.error("the agent stopped: %s", exc)
            self.error = exc
        except Exception as exc:
            log.exception("the agent failed")
            self.error = exc
        finally:
            self.finished.set()
            self._ready.set()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        daemon = self._daemon = AgentDaemon(self.settings)
        earnings = None
        if self._owner_token:
            earnings = Earnings(http_base(self.settings.hub_url), self._owner_token, SystemClock())
        page = StatusPage(
            daemon.status, daemon.set_paused, dashboard_url=self._dashboard_url, port=self._page_port, earnings=earnings
        )
        async with page.serving() as url:
            self.page_url = url
            heap.settle()  # started: what startup built stays for good, as in `potluck agent`
            self._ready.set()
            await daemon.run(handle_signals=False)
