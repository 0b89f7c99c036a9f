"""The load generator, run in a process of its own: closed-loop HTTP/1.1 clients on raw asyncio protocols.

Each worker owns one keep-alive connection and sends the same pre-built request again and again
(no pipelining). The response parser is a small state machine on an asyncio Protocol: no header
objects, no stream readers, a few µs per response (aiohttp's client costs ~100 µs). It handles
Content-Length, chunked and read-until-close bodies, notes when the first body byte arrived and
counts server-sent events ("data:") without decoding them.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from dataclasses import dataclass, field

from bench.relaybench.machine import raise_nofile, run_loop

_EVENT = b"data:"
_EVENT_TAIL = len(_EVENT) - 1
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER, _UNTIL_CLOSE, _IDLE = range(8)

Sample = tuple[float, float, float, int, int, bool]
"""(start, first body byte, end, HTTP status, SSE events, ended as a complete stream does); `time.monotonic()` times."""


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """One closed-loop run. Times are `time.monotonic()` values, which are system-wide on Linux."""

    host: str
    port: int
    request: bytes
    """The whole HTTP request (head and body), sent as is every time."""
    concurrency: int
    start_at: float
    measure_from: float
    measure_to: float
    """No request starts after this."""
    hard_stop: float
    """Requests still running then are abandoned and counted as unfinished."""
    stagger_s: float = 0.0
    """Worker i sends its first request at ``start_at + stagger_s * i / concurrency``."""
    connect_parallelism: int = 128
    stream_end: bytes = b"[DONE]"
    """Bytes that only the last event of a complete stream contains (`Api.stream_end`)."""


@dataclass(slots=True)
class LoadResult:
    samples: list[Sample] = field(default_factory=list)
    connect_errors: int = 0
    io_errors: int = 0
    unfinished: int = 0
    crashes: list[str] = field(default_factory=list)
    """Workers that died of an unexpected exception (a load-generator bug): the run is not valid."""
    cpu_s: float = 0.0
    """CPU the load generator process used between measure_from and measure_to."""


class _Client(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; `roundtrip` sends a request and resolves with its response."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stream_end: bytes) -> None:
        self._loop = loop
        self._stream_end = stream_end
        self._keep = max(16, 2 * len(stream_end))
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._waiter: asyncio.Future[tuple[int, float, float, int, bool]] | None = None
        self._buf = bytearray()
        self._state = _IDLE
        self._remaining = 0
        self._status = 0
        self._first = 0.0
        self._events = 0
        self._tail = b""
        self._keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._state == _UNTIL_CLOSE:
            self._complete()
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("connection closed mid-response"))

    def data_received(self, data: bytes) -> None:
        if self._state == _IDLE:
            return
        buf = self._buf
        buf += data
        pos = 0
        if self._state == _HEAD:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self._parse_head(bytes(buf[:end]))
            pos = end + 4
        pos = self._parse_body(buf, pos)
        del buf[:pos]

    def roundtrip(self, request: bytes) -> asyncio.Future[tuple[int, float, float, int, bool]]:
        """Send ``request``; resolves to (status, first body byte time, end time, events, ended as a stream does)."""
        assert self.transport is not None
        self._buf.clear()
        self._state = _HEAD
        self._status = 0
        self._first = 0.0
        self._events = 0
        self._tail = b""
        self._waiter = self._loop.create_future()
        self.transport.write(request)
        return self._waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self._status = int(lines[0][9:12])
        length = -1
        chunked = False
        self._keep_alive = True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                self._keep_alive = b"close" not in value.lower()
        if chunked:
            self._state = _CHUNK_SIZE
        elif length >= 0:
            self._state = _LENGTH
            self._remaining = length
            if length == 0:
                self._complete()
        else:
            self._state = _UNTIL_CLOSE
            self._keep_alive = False

    def _parse_body(self, buf: bytearray, pos: int) -> int:
        size = len(buf)
        while pos < size or self._state == _TRAILER:
            state = self._state
            if state in (_LENGTH, _CHUNK_DATA):
                take = min(self._remaining, size - pos)
                if take:
                    self._body(bytes(buf[pos : pos + take]))
                pos += take
                self._remaining -= take
                if self._remaining:
                    break
                if state == _LENGTH:
                    self._complete()
                    break
                self._state = _CHUNK_CRLF
            elif state == _CHUNK_SIZE:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    break
                self._remaining = int(bytes(buf[pos:line_end]).split(b";", 1)[0], 16)
                pos = line_end + 2
                self._state = _CHUNK_DATA if self._remaining else _TRAILER
            elif state == _CHUNK_CRLF:
                if size - pos < 2:
                    break
                pos += 2
                self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                if size - pos >= 2 and buf[pos : pos + 2] == b"\r\n":
                    pos += 2
                else:
                    end = buf.find(b"\r\n\r\n", pos)
                    if end < 0:
                        break
                    pos = end + 4
                self._complete()
                break
            elif state == _UNTIL_CLOSE:
                self._body(bytes(buf[pos:]))
                pos = size
            else:
                break
        return pos

    def _body(self, data: bytes) -> None:
        if not self._first:
            self._first = time.monotonic()
        tail = self._tail  # counts a "data:" split across two reads too
        self._events += data.count(_EVENT) + (tail[-_EVENT_TAIL:] + data[:_EVENT_TAIL]).count(_EVENT)
        keep = self._keep
        self._tail = (tail + data[-keep:])[-keep:]

    def _complete(self) -> None:
        end = time.monotonic()
        self._state = _IDLE
        if not self._keep_alive and self.transport is not None:
            self.transport.close()
            self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, self._first or end, end, self._events, self._stream_end in self._tail))


async def _connect(spec: LoadSpec, loop: asyncio.AbstractEventLoop) -> _Client:
    _, client = await loop.create_connection(lambda: _Client(loop, spec.stream_end), spec.host, spec.port)
    return client


async def _worker(spec: LoadSpec, index: int, result: LoadResult, gate: asyncio.Semaphore, live: set[_Client]) -> None:
    loop = asyncio.get_running_loop()
    client: _Client | None = None
    async with gate:
        with contextlib.suppress(OSError):
            client = await _connect(spec, loop)
            live.add(client)
    begin = spec.start_at + spec.stagger_s * index / max(1, spec.concurrency)
    await asyncio.sleep(max(0.0, begin - time.monotonic()))
    samples, request = result.samples, spec.request
    while time.monotonic() < spec.measure_to:
        if client is None or client.closed:
            try:
                client = await _connect(spec, loop)
            except OSError:
                result.connect_errors += 1
                client = None
                await asyncio.sleep(0.05)
                continue
            live.add(client)
        start = time.monotonic()
        try:
            status, first, end, events, done = await client.roundtrip(request)
        except ConnectionError:
            result.io_errors += 1
            client = None
            continue
        samples.append((start, first, end, status, events, done))


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _meter_own_cpu(spec: LoadSpec, result: LoadResult) -> None:
    await asyncio.sleep(max(0.0, spec.measure_from - time.monotonic()))
    before = _own_cpu()
    await asyncio.sleep(max(0.0, spec.measure_to - time.monotonic()))
    result.cpu_s = _own_cpu() - before


async def _load(spec: LoadSpec) -> LoadResult:
    result = LoadResult()
    gate = asyncio.Semaphore(spec.connect_parallelism)
    live: set[_Client] = set()
    meter = asyncio.create_task(_meter_own_cpu(spec, result))
    workers = [asyncio.create_task(_worker(spec, i, result, gate, live)) for i in range(spec.concurrency)]
    done, pending = await asyncio.wait(workers, timeout=max(0.0, spec.hard_stop - time.monotonic()))
    result.crashes = [repr(task.exception()) for task in done if task.exception() is not None]
    result.unfinished = len(pending)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for client in live:
        client.close()
    await meter
    return result


def run_load(spec: LoadSpec) -> LoadResult:
    """Entry point in a load-generator process."""
    raise_nofile()
    result: LoadResult = run_loop(_load(spec))
    return result
