"""A small TCP load balancer for cluster tests: each connection goes to the first upstream that accepts it.

It stands for the load balancer in front of hub replicas: agents dial it, and when the replica they were
on dies they reconnect through it to the next live one. Upstreams are tried in order (a dead one refuses
at once on loopback), so which replica an agent lands on is deterministic. It runs its own event loop in
a thread, like `testing.serving.BackgroundServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from testing.serving import new_loop

CONNECT_TIMEOUT_S = 1.0


class Balancer:
    def __init__(self, upstreams: list[tuple[str, int]]) -> None:
        self.upstreams = list(upstreams)
        """(host, port) in order of preference; may be changed while it runs."""
        self.port = 0
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._cut = False
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Balancer:
        self._thread = threading.Thread(target=self._run, name="balancer", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the balancer did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def cut(self) -> None:
        """Close every connection it carries and refuse new ones (closed at once) until `restore`: a network
        cut between its clients and the upstreams."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._cut_now(), self._loop).result(10)

    def restore(self) -> None:
        """Carry connections again after a `cut`."""
        self._cut = False

    async def _cut_now(self) -> None:
        self._cut = True
        for writer in list(self._open):
            writer.close()

    def __enter__(self) -> Balancer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            # Let the connections it carries end, rather than be cancelled under their streams' callbacks.
            await self._cut_now()
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.close()
            return
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        upstream = None
        for host, port in list(self.upstreams):
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    upstream = await asyncio.open_connection(host, port)
                break
            except (OSError, TimeoutError):
                continue
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream
        self._open.update((writer, up_writer))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_pipe(reader, up_writer))
                group.create_task(_pipe(up_reader, writer))
        except* (OSError, ConnectionError):
            pass
        finally:
            for w in (writer, up_writer):
                self._open.discard(w)
                w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()
