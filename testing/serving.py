"""What the fake servers share to serve: request bookkeeping (`FakeServer`), a server in a thread of its own
(`BackgroundServer`) and a server in a process of its own (`serve_forever`)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Generic, TypeVar

from aiohttp import web

from testing.recording import Recorder, RequestRecord

MAX_BODY_BYTES = 64 * 1024 * 1024
POLL_S = 0.05
"""How often a wait re-checks the connection when the runner does not cancel handlers on disconnect."""

_R = TypeVar("_R", bound=RequestRecord)
_E = TypeVar("_E", bound=Exception)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ClientGoneError(Exception):
    """The connection closed while the handler was waiting (runners without handler cancellation)."""


class Servable:
    """Builds an aiohttp application (`make_app`) and serves it in a thread of its own (`running`)."""

    def make_app(self) -> web.Application:
        raise NotImplementedError

    @contextlib.contextmanager
    def running(self, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Serve on `host:port` in a thread of its own; yield the base URL (`http://127.0.0.1:PORT`)."""
        with BackgroundServer(self.make_app(), host=host, port=port) as server:
            yield server.url


class FakeServer(Servable, Recorder[_R], Generic[_R, _E]):
    """The bookkeeping of a fake aiohttp server: records (`Recorder`), in-flight count, disconnects, shutdown.

    A subclass builds its application in `make_app` (wrapping each answer in `_handler`), records a request in
    `_begin`, and renders the 400 of its request error (`request_error`, raised by an answer) in `_reject`.
    """

    def __init__(self, request_error: type[_E]) -> None:
        super().__init__()
        self._request_error = request_error
        self._in_flight = 0
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._shutdown_cancelled: set[asyncio.Task[Any]] = set()

    @property
    def in_flight(self) -> int:
        """Requests being answered right now."""
        return self._in_flight

    async def _on_shutdown(self, app: web.Application) -> None:
        # Answers that wait (hang, loads, delays) would hold the runner's shutdown for its whole timeout.
        loop = asyncio.get_running_loop()
        for task in list(self._tasks):
            if task.get_loop() is loop and not task.done():
                self._shutdown_cancelled.add(task)
                task.cancel()

    # ------------------------------------------------------------------ request bookkeeping

    def _begin(self, request: web.Request, body: bytes) -> _R:
        """Count the request in flight (and record it); called first by every handler."""
        raise NotImplementedError

    def _reject(self, request: web.Request, exc: _E) -> web.Response:
        """The 400 answering a request error raised by an answer."""
        raise NotImplementedError

    def _handler(self, answer: Callable[[web.Request, _R], Awaitable[web.StreamResponse]]) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            rec = self._begin(request, body)
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                return await answer(request, rec)
            except self._request_error as exc:  # from routes that do not shape their own 400s
                return await self._send(request, rec, self._reject(request, exc))
            except asyncio.CancelledError:
                if task not in self._shutdown_cancelled:
                    rec.mark_disconnected()
                raise
            except (ConnectionResetError, ClientGoneError):
                rec.mark_disconnected()
                # Nothing can be sent any more; aiohttp treats the failed write as a client disconnect.
                return web.Response(status=499)
            finally:
                self._tasks.discard(task)
                self._shutdown_cancelled.discard(task)
                with self._lock:
                    self._in_flight -= 1
                self._changed()

        return handle

    async def _send(self, request: web.Request, rec: _R, resp: web.Response) -> web.Response:
        """Write a whole response now, so that `completed` is known before the handler returns."""
        rec.status = resp.status
        await resp.prepare(request)
        await resp.write_eof()
        rec.mark_completed()
        return resp

    async def _pause(self, request: web.Request, seconds: float | None, step: float = POLL_S) -> None:
        """Sleep `seconds` (forever when None), ending early with `ClientGoneError` if the client goes away.

        Under a runner with `handler_cancellation=True` the handler is cancelled on disconnect anyway; the
        polling is for runners without it (aiohttp's default, e.g. `TestServer`).
        """
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        while True:
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ClientGoneError
            left = step if deadline is None else min(step, deadline - loop.time())
            if left <= 0:
                return
            await asyncio.sleep(left)

    def _abort(self, request: web.Request, rec: _R, resp: web.StreamResponse | None = None) -> web.StreamResponse:
        # close() (not abort()) so that the chunks already written still reach the client first.
        rec.aborted = True
        transport = request.transport
        if transport is not None:
            transport.close()
        # aiohttp's final write to the closed transport fails as a client disconnect: nothing is logged.
        return resp if resp is not None else web.Response(status=499)


# ---------------------------------------------------------------------- a server in its own thread


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it installs
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class BackgroundServer:
    """Serves an aiohttp application on `host:port` (port 0: any free one) from a thread of its own.

    The thread runs its own event loop (uvloop when installed), so it serves sync tests and async tests
    alike without touching their loop. The runner cancels a handler when its client disconnects
    (`handler_cancellation=True`). `stop()` closes every connection, in-flight ones included.

        with BackgroundServer(app) as server:
            requests.get(server.url + "/health")
    """

    def __init__(
        self, app: web.Application, *, host: str = "127.0.0.1", port: int = 0, shutdown_timeout: float = 2.0
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._shutdown_timeout = shutdown_timeout
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """`http://HOST:PORT`, with the port actually bound."""
        if self._url is None:
            raise RuntimeError("the server is not running")
        return self._url

    def start(self, timeout: float = 10.0) -> str:
        """Start serving; return the base URL once the socket listens."""
        if self._thread is not None:
            raise RuntimeError("a BackgroundServer starts once")
        self._thread = threading.Thread(target=self._run, name="fake-backend-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the server did not start within {timeout} s")
        if self._error is not None:
            self._thread.join(timeout)
            raise RuntimeError("the server failed to start") from self._error
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listening socket and every connection, then end the thread."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"the server thread did not end within {timeout} s")

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=new_loop) as runner:
                runner.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread, never lost in this one
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(
            self._app, handler_cancellation=True, access_log=None, shutdown_timeout=self._shutdown_timeout
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
            port = runner.addresses[0][1]
            self._url = f"http://{self._host}:{port}"
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()


# ---------------------------------------------------------------------- a server in its own process


def serve_forever(make_app: Callable[[], web.Application], host: str, port: int) -> None:
    """Serve `make_app()` on this thread's own loop (uvloop when installed), print one line,
    `listening http://HOST:PORT`, and return on SIGTERM or SIGINT."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(_serve_forever(make_app, host, port))


async def _serve_forever(make_app: Callable[[], web.Application], host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(make_app(), handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        sys.stdout.write(f"listening http://{host}:{runner.addresses[0][1]}\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await runner.cleanup()


def serve_until_signalled(app: web.Application, host: str, port: int) -> None:
    """Serve `app` from a `BackgroundServer`, print `listening URL`, and return on SIGTERM or SIGINT."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with BackgroundServer(app, host=host, port=port) as server:
        sys.stdout.write(f"listening {server.url}\n")
        sys.stdout.flush()
        while not stop.wait(0.2):
            pass
