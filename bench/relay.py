"""Relay benchmark: the same load, side by side, straight to a fake backend, through Potluck, through LiteLLM.

    .venv/bin/python bench/relay.py [--quick] [--scenarios a,b] [--targets direct,potluck,litellm]
                                    [--duration S] [--litellm-python PATH] [--json-out PATH] [--profile]

One run starts a fast fake OpenAI backend (``testing.fake_backend``), a hub and an agent as
subprocesses (and LiteLLM's proxy when it can), then drives every selected scenario against every
target with one closed-loop load generator that runs in its own process(es). It measures
throughput, latency and time to first byte as the client sees them, CPU per request and per chunk
of each server process (from /proc), their RSS, and the hub's memory per idle agent WebSocket.
See bench/README.md for how to read the output. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from rich.console import Console
from rich.table import Table

from potluck import __version__
from potluck.protocol import agent as proto

REPO = Path(__file__).resolve().parent.parent
DEFAULT_JSON = REPO / "bench" / "results" / "relay.json"
MODEL = "fake-model"
BURST_CHUNKS = 64
ALL_TARGETS = ("direct", "potluck", "litellm")
ADMIN_TOKEN = "padm-bench-admin-token"  # noqa: S105 - a throwaway hub on loopback
LITELLM_KEY = "sk-bench-litellm"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1

Kind = Literal["nonstream", "stream", "paced", "idle"]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    kind: Kind
    concurrency: int
    """Concurrent requests (closed loop); for ``idle``, the number of agents."""
    chunks: int = BURST_CHUNKS
    delay: float = 0.0

    @property
    def stream_s(self) -> float:
        """How long one paced stream lasts at the backend."""
        return self.delay * max(0, self.chunks - 1)


def scenario_table(quick: bool) -> dict[str, Scenario]:
    paced = Scenario("paced-c1000", "paced", 200 if quick else 1000, chunks=10 if quick else 40, delay=0.05)
    return {
        s.name: s
        for s in (
            Scenario("nonstream-c1", "nonstream", 1),
            Scenario("nonstream-c64", "nonstream", 64),
            Scenario("nonstream-c256", "nonstream", 256),
            Scenario("stream-c32", "stream", 32),
            Scenario("stream-c256", "stream", 256),
            paced,
            Scenario("idle-agents", "idle", 300 if quick else 10_000),
        )
    }


SCENARIO_GROUPS = {
    "nonstream": ("nonstream-c1", "nonstream-c64", "nonstream-c256"),
    "stream": ("stream-c32", "stream-c256"),
    "paced": ("paced-c1000",),
    "idle": ("idle-agents",),
}


# =============================================================================================
# Load generator (runs in its own process)
#
# Each worker owns one keep-alive connection and sends the same pre-built request again and again
# (no pipelining). The response parser is a small state machine on an asyncio Protocol: no header
# objects, no stream readers, a few µs per response (aiohttp's client costs ~100 µs). It handles
# Content-Length, chunked and read-until-close bodies, notes when the first body byte arrived and
# counts server-sent events ("data:") without decoding them.

_EVENT = b"data:"
_EVENT_TAIL = len(_EVENT) - 1
_DONE = b"[DONE]"
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER, _UNTIL_CLOSE, _IDLE = range(8)

Sample = tuple[float, float, float, int, int, bool]
"""(start, first body byte, end, HTTP status, SSE events, last event was [DONE]); `time.monotonic()` times."""


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

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
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
        """Send ``request``; resolves to (status, first body byte time, end time, events, ended with [DONE])."""
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
        self._tail = (tail + data[-16:])[-16:]

    def _complete(self) -> None:
        end = time.monotonic()
        self._state = _IDLE
        if not self._keep_alive and self.transport is not None:
            self.transport.close()
            self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, self._first or end, end, self._events, _DONE in self._tail))


async def _connect(spec: LoadSpec, loop: asyncio.AbstractEventLoop) -> _Client:
    _, client = await loop.create_connection(lambda: _Client(loop), spec.host, spec.port)
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


def raise_nofile() -> None:
    """Raise the open-files soft limit to the hard limit (thousands of sockets per process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_load(spec: LoadSpec) -> LoadResult:
    """Entry point in a load-generator process."""
    raise_nofile()
    result: LoadResult = _run_loop(_load(spec))
    return result


def build_request(host: str, port: int, token: str | None, scenario: Scenario) -> bytes:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Say something short."}]}
    if scenario.kind in ("stream", "paced"):
        body["stream"] = True
    if scenario.kind == "paced":
        body["fake"] = {"chunks": scenario.chunks, "delay": scenario.delay}
    raw = json.dumps(body, separators=(",", ":")).encode()
    head = [
        "POST /v1/chat/completions HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Accept: */*",
        f"Content-Length: {len(raw)}",
    ]
    if token:
        head.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + raw


# =============================================================================================
# Processes: /proc readings and the services under test


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads, dead ones included), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(eq=False)
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    tree: bool = False
    """Count the CPU and memory of its child processes too."""

    def pids(self) -> list[int]:
        return [self.proc.pid, *descendants(self.proc.pid)] if self.tree else [self.proc.pid]

    def cpu_s(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += proc_cpu_s(pid)
        return total

    def rss_kb(self) -> int:
        return sum(proc_status_kb(pid, "VmRSS") for pid in self.pids())

    def peak_rss_kb(self) -> int:
        return sum(proc_status_kb(pid, "VmHWM") for pid in self.pids())

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def spawn(name: str, argv: Sequence[str], log_dir: Path, env: dict[str, str] | None = None) -> Service:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(  # the child keeps its own copy of the log's descriptor
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            preexec_fn=raise_nofile,  # only setrlimit, before exec: safe with threads around
        )
    return Service(name, proc, log_path)


async def wait_listening(service: Service, timeout: float = 60.0) -> str:
    """The URL from the service's ``listening URL`` line."""
    deadline = time.monotonic() + timeout
    pattern = re.compile(r"^listening (\S+)", re.MULTILINE)
    while time.monotonic() < deadline:
        match = pattern.search(service.log_path.read_text(errors="replace"))
        if match:
            service.url = match.group(1)
            return service.url
        if service.proc.poll() is not None:
            raise RuntimeError(f"{service.name} exited with {service.proc.returncode}:\n{service.log_tail()}")
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{service.name} did not start within {timeout:g} s:\n{service.log_tail()}")


async def wait_quiet(services: Sequence[Service], max_wait: float = 20.0) -> None:
    """Wait until the services stop burning CPU (the previous run's backlog is gone)."""
    deadline = time.monotonic() + max_wait
    before = sum(s.cpu_s() for s in services)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        now = sum(s.cpu_s() for s in services)
        if now - before < 0.3 * 0.05:
            return
        before = now


async def admin_post(http: aiohttp.ClientSession, hub_url: str, path: str, name: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.post(hub_url + path, json={"name": name}, headers=headers) as resp:
        if resp.status != 201:
            raise RuntimeError(f"POST {path} answered {resp.status}: {await resp.text()}")
        body: dict[str, Any] = await resp.json()
        return body


async def start_hub(log_dir: Path, data_dir: Path, name: str = "hub") -> Service:
    argv = [sys.executable, "-m", "potluck", "hub", "--port", "0", "--data-dir", str(data_dir)]
    argv += ["--admin-token", ADMIN_TOKEN, "--log-level", "warning"]
    hub = spawn(name, argv, log_dir)
    await wait_listening(hub)
    return hub


async def wait_model(http: aiohttp.ClientSession, url: str, key: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url + "/v1/models", headers={"Authorization": f"Bearer {key}"}) as resp:
                if resp.status == 200 and any(m.get("id") == MODEL for m in (await resp.json()).get("data", [])):
                    return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{url}/v1/models did not list {MODEL} within {timeout:g} s")


def litellm_argv(python: str) -> list[str] | None:
    """How to start LiteLLM's proxy with ``python``, or None if it is not installed there."""
    probe = subprocess.run(
        [python, "-c", "import litellm.proxy.proxy_cli"], capture_output=True, timeout=120, check=False
    )
    if probe.returncode != 0:
        return None
    script = Path(python).parent / "litellm"
    return [str(script)] if script.exists() else [python, "-m", "litellm.proxy.proxy_cli"]


async def start_litellm(argv: list[str], backend_url: str, log_dir: Path) -> Service:
    config = log_dir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {backend_url}/v1\n"
        "      api_key: sk-fake\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    port = free_port()
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    argv = [*argv, "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    service = spawn("litellm", argv, log_dir, env)
    service.tree = True
    service.url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        try:
            await wait_model(http, service.url, LITELLM_KEY, timeout=180)
        except TimeoutError as exc:
            raise RuntimeError(f"LiteLLM did not come up:\n{service.log_tail()}") from exc
    return service


# =============================================================================================
# The bench: services per target, one run of one scenario against one target


@dataclass
class Options:
    quick: bool
    duration: float
    warmup: float
    scenarios: list[str]
    targets: list[str]
    loadgen_procs: int
    litellm_python: str | None
    json_out: Path
    profile: bool
    py_spy: str | None


@dataclass
class CpuUse:
    cpu_s: float
    us_per_request: float | None
    us_per_chunk: float | None


@dataclass
class RunResult:
    scenario: str
    target: str
    concurrency: int
    window_s: float
    completed: int
    completed_late: int
    """Good answers that finished after the window (a target slower than warm-up + window shows only here)."""
    failed: int
    """Responses that were not 200, or streams that did not end with [DONE]."""
    io_errors: int
    unfinished: int
    rps: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    chunks: int
    chunks_per_s: float
    cpu: dict[str, CpuUse]
    loadgen_cpu_s: float
    machine_busy_cores: float
    """Average CPUs busy machine-wide during the window (of CPUS)."""
    other_busy_cores: float
    """Of that, what no process of this benchmark used: other work on the machine, and kernel time
    (softirq) that /proc charges to no process."""


@dataclass
class Bench:
    opts: Options
    tmp: Path
    pool: ProcessPoolExecutor
    backend: Service
    hub: Service | None = None
    agent: Service | None = None
    litellm: Service | None = None
    api_key: str = ""
    notes: list[str] = field(default_factory=list)

    def endpoint(self, target: str) -> tuple[str, str | None]:
        if target == "direct":
            return self.backend.url, None
        if target == "potluck" and self.hub is not None:
            return self.hub.url, self.api_key
        if target == "litellm" and self.litellm is not None:
            return self.litellm.url, LITELLM_KEY
        raise ValueError(target)

    def services(self, target: str) -> list[Service]:
        if target == "potluck":
            return [s for s in (self.hub, self.agent, self.backend) if s is not None]
        if target == "litellm":
            return [s for s in (self.litellm, self.backend) if s is not None]
        return [self.backend]

    def all_services(self) -> list[Service]:
        return [s for s in (self.backend, self.hub, self.agent, self.litellm) if s is not None]


async def start_bench(opts: Options, tmp: Path, pool: ProcessPoolExecutor, stack: contextlib.AsyncExitStack) -> Bench:
    argv = [sys.executable, "-m", "testing.fake_backend", "--port", "0", "--chunks", str(BURST_CHUNKS)]
    backend = spawn("backend", argv, tmp)
    stack.callback(backend.stop)
    await wait_listening(backend)
    bench = Bench(opts, tmp, pool, backend)
    if "potluck" in opts.targets:
        await start_potluck(bench, stack)
    if "litellm" in opts.targets:
        await start_litellm_target(bench, stack)
    return bench


async def start_potluck(bench: Bench, stack: contextlib.AsyncExitStack) -> None:
    hub = await start_hub(bench.tmp, bench.tmp / "hub-data")
    stack.callback(hub.stop)
    bench.hub = hub
    async with aiohttp.ClientSession() as http:
        bench.api_key = (await admin_post(http, hub.url, "/admin/keys", "bench"))["key"]
        token = (await admin_post(http, hub.url, "/admin/agent-tokens", "bench-agent"))["token"]
        argv = [sys.executable, "-m", "potluck", "agent", "--hub", hub.url, "--token", token]
        argv += ["--backend", bench.backend.url, "--data-dir", str(bench.tmp / "agent-data")]
        argv += ["--max-concurrency", "2048", "--log-level", "warning", "--name", "bench-agent"]
        agent = spawn("agent", argv, bench.tmp)
        stack.callback(agent.stop)
        bench.agent = agent
        await wait_model(http, hub.url, bench.api_key)


async def start_litellm_target(bench: Bench, stack: contextlib.AsyncExitStack) -> None:
    python = bench.opts.litellm_python or sys.executable
    argv = await asyncio.to_thread(litellm_argv, python)
    if argv is None:
        note = f"LiteLLM skipped: `import litellm.proxy.proxy_cli` fails with {python} (try --litellm-python)"
        bench.notes.append(note)
        bench.opts.targets.remove("litellm")
        return
    try:
        service = await start_litellm(argv, bench.backend.url, bench.tmp)
    except RuntimeError as exc:
        bench.notes.append(f"LiteLLM skipped: {exc}")
        bench.opts.targets.remove("litellm")
        return
    stack.callback(service.stop)
    bench.litellm = service


def split_concurrency(total: int, procs: int) -> list[int]:
    procs = max(1, min(procs, total))
    return [total // procs + (1 if i < total % procs else 0) for i in range(procs)]


def plan_times(opts: Options, scenario: Scenario, target: str) -> tuple[float, float, float, float, float]:
    """(start_at, measure_from, measure_to, hard_stop, stagger) for one run, from now."""
    lead = (0.4 if opts.quick else 1.0) + scenario.concurrency / 400
    stagger = scenario.stream_s if scenario.kind == "paced" else 0.0
    start_at = time.monotonic() + lead
    measure_from = start_at + max(opts.warmup, stagger + (0.3 if opts.quick else 1.0))
    measure_to = measure_from + opts.duration
    grace = (2.0 if opts.quick else 5.0) + 2 * scenario.stream_s + (25.0 if target == "litellm" else 0.0)
    return start_at, measure_from, measure_to, measure_to + grace, stagger


async def run_one(bench: Bench, scenario: Scenario, target: str) -> RunResult:
    services = bench.services(target)
    await wait_quiet(bench.all_services())
    url, token = bench.endpoint(target)
    host, _, port = url.removeprefix("http://").partition(":")
    request = build_request(host, int(port), token, scenario)
    start_at, measure_from, measure_to, hard_stop, stagger = plan_times(bench.opts, scenario, target)
    specs = [
        LoadSpec(host, int(port), request, share, start_at, measure_from, measure_to, hard_stop, stagger)
        for share in split_concurrency(scenario.concurrency, bench.opts.loadgen_procs)
    ]
    loop = asyncio.get_running_loop()
    futures = [loop.run_in_executor(bench.pool, run_load, spec) for spec in specs]
    everyone = bench.all_services()
    await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
    cpu_before = {s.name: s.cpu_s() for s in everyone}
    ticks_before = machine_ticks()
    profilers = start_profilers(bench, scenario, target, measure_to - measure_from)
    await asyncio.sleep(max(0.0, measure_to - time.monotonic()))
    cpu_used = {s.name: s.cpu_s() - cpu_before[s.name] for s in everyone}
    ticks_after = machine_ticks()
    window = measure_to - measure_from
    results: list[LoadResult] = await asyncio.gather(*futures)
    await finish_profilers(profilers)
    if crashes := [crash for r in results for crash in r.crashes]:
        raise RuntimeError(f"{len(crashes)} load-generator workers crashed, e.g. {crashes[0]}")
    busy = (ticks_after[0] - ticks_before[0]) / CLK_TCK / window
    measured = {s.name: cpu_used[s.name] for s in services}
    bystanders = sum(cpu_used.values()) - sum(measured.values())
    return summarize(scenario, target, results, (measure_from, measure_to), measured, bystanders, busy)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))  # nearest rank
    return sorted_values[index]


def summarize(
    scenario: Scenario,
    target: str,
    results: Sequence[LoadResult],
    window: tuple[float, float],
    cpu_used: dict[str, float],
    bystanders_cpu_s: float,
    busy_cores: float,
) -> RunResult:
    start, stop = window
    length = stop - start
    streaming = scenario.kind in ("stream", "paced")
    done = [s for r in results for s in r.samples if start <= s[2] <= stop]
    good = [s for s in done if s[3] == 200 and (s[5] or not streaming)]
    late = sum(1 for r in results for s in r.samples if s[2] > stop and s[3] == 200 and (s[5] or not streaming))
    latencies = sorted((s[2] - s[0]) * 1000 for s in good)
    ttfts = sorted((s[1] - s[0]) * 1000 for s in good) if streaming else []
    # Chunks relayed: the SSE events of each stream, [DONE] excluded.
    chunks = sum(s[4] - 1 for s in good) if streaming else 0
    cpu = {
        name: CpuUse(
            cpu_s=used,
            us_per_request=used / len(good) * 1e6 if good else None,
            us_per_chunk=used / chunks * 1e6 if chunks else None,
        )
        for name, used in cpu_used.items()
    }
    loadgen = sum(r.cpu_s for r in results)
    ours = (sum(cpu_used.values()) + bystanders_cpu_s + loadgen) / length
    return RunResult(
        scenario=scenario.name,
        target=target,
        concurrency=scenario.concurrency,
        window_s=round(length, 3),
        completed=len(good),
        completed_late=late,
        failed=len(done) - len(good),
        io_errors=sum(r.io_errors + r.connect_errors for r in results),
        unfinished=sum(r.unfinished for r in results),
        rps=len(good) / length,
        latency_p50_ms=percentile(latencies, 0.50),
        latency_p99_ms=percentile(latencies, 0.99),
        ttft_p50_ms=percentile(ttfts, 0.50),
        ttft_p99_ms=percentile(ttfts, 0.99),
        chunks=chunks,
        chunks_per_s=chunks / length,
        cpu=cpu,
        loadgen_cpu_s=loadgen,
        machine_busy_cores=busy_cores,
        other_busy_cores=max(0.0, busy_cores - ours),
    )


# =============================================================================================
# Profiling (optional): py-spy on the hub and the agent during Potluck's measured window


@dataclass
class Profiler:
    name: str
    proc: asyncio.subprocess.Process
    output: Path


def start_profilers(bench: Bench, scenario: Scenario, target: str, seconds: float) -> list[asyncio.Task[Profiler]]:
    if not bench.opts.profile or target != "potluck" or bench.opts.py_spy is None:
        return []
    out_dir = bench.opts.json_out.parent / "profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = []
    for service in (bench.hub, bench.agent):
        if service is None:
            continue
        output = out_dir / f"{scenario.name}-{service.name}.txt"
        argv = [bench.opts.py_spy, "record", "--pid", str(service.proc.pid), "--duration", str(max(1, int(seconds)))]
        argv += ["--rate", "200", "--format", "raw", "--nonblocking", "--output", str(output)]
        tasks.append(asyncio.create_task(_spawn_profiler(service.name, argv, output)))
    return tasks


async def _spawn_profiler(name: str, argv: list[str], output: Path) -> Profiler:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return Profiler(name, proc, output)


async def finish_profilers(tasks: list[asyncio.Task[Profiler]]) -> None:
    for task in tasks:
        profiler = await task
        try:
            await asyncio.wait_for(profiler.proc.wait(), 30)
        except TimeoutError:
            profiler.proc.kill()


def top_frames(path: Path, limit: int = 12) -> list[tuple[str, float, float]]:
    """(function, self %, inclusive %) of the hottest frames in a py-spy ``raw`` (collapsed) profile."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r" \((.*/)?([^/]+)\)$", r" (\2)", f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return []
    hottest = sorted(own.items(), key=lambda item: -item[1])[:limit]
    return [(frame, 100 * n / total, 100 * inclusive[frame] / total) for frame, n in hottest]


# =============================================================================================
# Idle agents: a client process holds N agent WebSockets open against a fresh hub


@dataclass
class IdleResult:
    agents: int
    connected: int
    online_at_measurement: int
    """Agents the hub counted (``/readyz``) when its RSS was read; the per-agent figure divides by this."""
    handshake_errors: int
    connect_s: float
    hub_rss_before_mb: float
    hub_rss_after_mb: float
    kb_per_agent: float | None
    hub_rss_at_10k_mb: float | None
    """Measured when 10,000 agents were connected, extrapolated from the per-agent figure otherwise."""
    hub_idle_cpu_pct: float
    """Hub CPU while the agents were only exchanging heartbeats, % of one core."""
    pongs_sent: int
    dropped: int
    """Agents whose connection ended while they were supposed to sit idle."""
    welcome_coalesced: int
    """Handshakes where the hub sent the welcome together with another frame in one message."""


async def _enrolment_tokens(http: aiohttp.ClientSession, hub_url: str, count: int) -> list[str]:
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> str:
        async with gate:
            token: str = (await admin_post(http, hub_url, "/admin/agent-tokens", f"idle-{i}"))["token"]
            return token

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _idle_agent(
    http: aiohttp.ClientSession, hub_url: str, token: str, index: int, counters: dict[str, int]
) -> Any:
    """One agent WebSocket through the real handshake: challenge → signed hello (enrolling) → welcome."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ws = await http.ws_connect(
        hub_url.replace("http://", "ws://", 1) + "/agent/connect",
        autoping=True,
        heartbeat=None,
        compress=0,
        max_msg_size=1 << 20,
        timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
    )
    try:
        challenge = _frames(await ws.receive(timeout=60))[0].message
        if not isinstance(challenge, proto.ChallengeMessage):
            raise proto.ProtocolError(f"expected a challenge, got {challenge!r}")
        backend = "http://127.0.0.1:9/v1"
        hello = proto.HelloMessage(
            protocol_version=proto.PROTOCOL_VERSION,
            agent_version=__version__,
            public_key=public,
            signature=key.sign(proto.challenge_payload(challenge.nonce, public)),
            name=f"idle-{index}",
            max_concurrency=8,
            models=[proto.ModelInfo(id="idle-model", backend=backend)],
            backends=[proto.BackendInfo(url=backend)],
            enrol_token=token,
        )
        await ws.send_bytes(proto.encode_frame(hello))
        frames = _frames(await ws.receive(timeout=60))
        if not isinstance(frames[0].message, proto.WelcomeMessage):
            raise proto.ProtocolError(f"expected a welcome, got {frames[0].message!r}")
        if len(frames) > 1:
            # The hub coalesced other frames (a heartbeat PING) into the welcome's message: an agent must
            # handle the frames behind the welcome. Counted and reported.
            counters["coalesced_welcome"] += 1
            await _answer(ws, frames[1:], counters)
    except BaseException:
        await ws.close()
        raise
    return ws


def _frames(msg: aiohttp.WSMessage) -> list[proto.Frame]:
    if msg.type is not aiohttp.WSMsgType.BINARY:
        raise proto.ProtocolError(f"expected a binary frame, got {msg.type.name}")
    frames = list(proto.iter_frames(msg.data))
    if not frames:
        raise proto.ProtocolError("empty message")
    return frames


async def _answer(ws: Any, frames: Sequence[proto.Frame], counters: dict[str, int]) -> None:
    for frame in frames:
        if frame.type == proto.FrameType.PING and isinstance(frame.message, proto.PingMessage):
            await ws.send_bytes(proto.encode_frame(proto.PongMessage(frame.message.sent_at)))
            counters["pongs"] += 1


async def _answer_pings(ws: Any, counters: dict[str, int]) -> None:
    async for msg in ws:
        if msg.type is aiohttp.WSMsgType.BINARY:
            await _answer(ws, list(proto.iter_frames(msg.data)), counters)


async def _idle_client(hub_url: str, count: int, pipe: Connection) -> None:
    async def command() -> Any:
        return await asyncio.to_thread(pipe.recv)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        tokens = await _enrolment_tokens(http, hub_url, count)
        pipe.send(("tokens", len(tokens)))
        await command()
        started = time.monotonic()
        gate = asyncio.Semaphore(64)
        counters = {"pongs": 0, "coalesced_welcome": 0}
        readers: list[asyncio.Task[None]] = []

        async def connect(i: int) -> Any:
            async with gate:
                ws = await _idle_agent(http, hub_url, tokens[i], i, counters)
            # Answer the hub's pings from now on: it drops an agent silent for 15 s.
            readers.append(asyncio.create_task(_answer_pings(ws, counters)))
            return ws

        outcomes = await asyncio.gather(*(connect(i) for i in range(count)), return_exceptions=True)
        sockets = [ws for ws in outcomes if not isinstance(ws, BaseException)]
        errors = [repr(e) for e in outcomes if isinstance(e, BaseException)]
        pipe.send(("connected", len(sockets), len(errors), time.monotonic() - started, errors[:3]))
        await command()
        dropped = sum(1 for task in readers if task.done())
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        pipe.send(("stopped", counters["pongs"], dropped, counters["coalesced_welcome"]))


def idle_client_main(hub_url: str, count: int, pipe: Connection) -> None:
    """Entry point of the idle-agents client process."""
    raise_nofile()
    try:
        _run_loop(_idle_client(hub_url, count, pipe))
    except BaseException as exc:
        pipe.send(("error", repr(exc)))
        raise


async def hub_agent_count(hub_url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(hub_url + "/readyz") as resp:
        body = await resp.json()
        return int(body.get("agents", 0))


async def _reply(pipe: Connection, expect: str, timeout: float) -> tuple[Any, ...]:
    ready = await asyncio.to_thread(pipe.poll, timeout)
    if not ready:
        raise TimeoutError(f"the idle-agents client sent no {expect!r} within {timeout:g} s")
    message: tuple[Any, ...] = pipe.recv()
    if message[0] != expect:
        raise RuntimeError(f"the idle-agents client answered {message!r}")
    return message


async def run_idle(opts: Options, tmp: Path, scenario: Scenario) -> IdleResult:
    count = scenario.concurrency
    hub = await start_hub(tmp, tmp / "idle-hub-data", name="idle-hub")
    parent, child = multiprocessing.get_context("spawn").Pipe()
    client = multiprocessing.get_context("spawn").Process(
        target=idle_client_main, args=(hub.url, count, child), name="idle-agents"
    )
    client.start()
    try:
        await _reply(parent, "tokens", 600)
        await asyncio.sleep(0.3 if opts.quick else 1.0)
        before = hub.rss_kb()
        parent.send("connect")
        _, connected, errors, connect_s, samples = await _reply(parent, "connected", 900)
        # Hold long enough for the hub's heartbeat (every 5 s) to ping everyone once or twice.
        hold = 1.0 if opts.quick else 12.0
        await asyncio.sleep(0.3 if opts.quick else 1.0)
        cpu_before, held_from = hub.cpu_s(), time.monotonic()
        await asyncio.sleep(hold)
        idle_cpu = (hub.cpu_s() - cpu_before) / (time.monotonic() - held_from)
        after = hub.rss_kb()
        online = await hub_agent_count(hub.url)
        parent.send("stop")
        _, pongs, dropped, coalesced = await _reply(parent, "stopped", 120)
    finally:
        client.join(60)
        if client.is_alive():
            client.kill()
        hub.stop()
    per_agent = (after - before) / online if online else None
    at_10k = after / 1024 if online >= 10_000 else None
    if at_10k is None and per_agent is not None:
        at_10k = (before + per_agent * 10_000) / 1024
    if errors:
        print(f"idle agents: {errors} handshakes failed, e.g. {samples}", file=sys.stderr)
    return IdleResult(
        agents=count,
        connected=connected,
        online_at_measurement=online,
        handshake_errors=errors,
        connect_s=round(connect_s, 2),
        hub_rss_before_mb=before / 1024,
        hub_rss_after_mb=after / 1024,
        kb_per_agent=per_agent,
        hub_rss_at_10k_mb=at_10k,
        hub_idle_cpu_pct=100 * idle_cpu,
        pongs_sent=pongs,
        dropped=dropped,
        welcome_coalesced=coalesced,
    )


# =============================================================================================
# Targets to meet, and the report


@dataclass
class Check:
    goal: str
    value: float | None
    limit: float
    unit: str
    higher_is_better: bool = False
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        ok = self.value >= self.limit if self.higher_is_better else self.value <= self.limit
        return "PASS" if ok else "MISS"


def _find(runs: Sequence[RunResult], scenario: str, target: str) -> RunResult | None:
    return next((r for r in runs if r.scenario == scenario and r.target == target), None)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _cpu_chunk(run: RunResult | None, process: str) -> float | None:
    if run is None or process not in run.cpu:
        return None
    return run.cpu[process].us_per_chunk


def _worst(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def checks(runs: Sequence[RunResult], idle: IdleResult | None) -> list[Check]:
    c1p, c1d = _find(runs, "nonstream-c1", "potluck"), _find(runs, "nonstream-c1", "direct")
    c256 = _find(runs, "nonstream-c256", "potluck")
    s256 = _find(runs, "stream-c256", "potluck")
    bursts = [_find(runs, "stream-c32", "potluck"), s256]
    paced = _find(runs, "paced-c1000", "potluck")
    added = _diff(c1p.latency_p50_ms if c1p else None, c1d.latency_p50_ms if c1d else None)
    result = [
        Check("added p50 latency at c=1 (potluck - direct)", added, 0.7, "ms"),
        Check("non-stream RPS at c=256", c256.rps if c256 else None, 4000, "req/s", True),
        Check("64-chunk streams/s at c=256", s256.rps if s256 else None, 1000, "streams/s", True),
    ]
    for process in ("hub", "agent"):
        worst = _worst([_cpu_chunk(run, process) for run in bursts])
        result.append(Check(f"{process} CPU per chunk, burst streams (worst)", worst, 10, "µs"))
        result.append(Check(f"{process} CPU per chunk, paced streams", _cpu_chunk(paced, process), 25, "µs"))
    if idle is not None:
        note = "" if idle.online_at_measurement >= 10_000 else f"extrapolated from {idle.online_at_measurement} agents"
        result.append(Check("hub RSS with 10,000 idle agents", idle.hub_rss_at_10k_mb, 300, "MB", note=note))
    return result


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


PROCESS_COLUMNS = ("hub", "agent", "backend", "litellm")


def _cpu_cells(run: RunResult, per: Literal["request", "chunk"]) -> list[str]:
    cells = []
    for name in PROCESS_COLUMNS:
        use = run.cpu.get(name)
        value = None if use is None else use.us_per_request if per == "request" else use.us_per_chunk
        cells.append(fmt(value, 1))
    return cells


def _machine_cell(run: RunResult) -> str:
    return f"{run.machine_busy_cores:.2f} ({run.other_busy_cores:.2f})"


def _errors_cell(run: RunResult) -> str:
    total = run.failed + run.io_errors + run.unfinished
    return str(total) if total else ""


def nonstream_table(runs: Sequence[RunResult]) -> Table:
    table = Table(title="Non-streaming /v1/chat/completions (64-token answers)", title_justify="left")
    for header in ("scenario", "target", "RPS", "p50 ms", "p99 ms", "added p50 ms", "err"):
        table.add_column(header, justify="left" if header in ("scenario", "target") else "right")
    for name in PROCESS_COLUMNS:
        table.add_column(f"{name} µs/req", justify="right")
    table.add_column("busy cores (other)", justify="right")
    for run in runs:
        if not run.scenario.startswith("nonstream"):
            continue
        direct = _find(runs, run.scenario, "direct")
        added = None if run.target == "direct" or direct is None else _diff(run.latency_p50_ms, direct.latency_p50_ms)
        table.add_row(
            run.scenario,
            run.target,
            fmt(run.rps, 0),
            fmt(run.latency_p50_ms, 2),
            fmt(run.latency_p99_ms, 2),
            fmt(added, 2),
            _errors_cell(run),
            *_cpu_cells(run, "request"),
            _machine_cell(run),
        )
    return table


def stream_table(runs: Sequence[RunResult]) -> Table:
    title = "Streaming /v1/chat/completions (burst: 64 chunks at once; paced: 20 chunks/s)"
    table = Table(title=title, title_justify="left")
    for header in ("scenario", "target", "streams/s", "chunks/s", "TTFT p50", "TTFT p99", "added p50/p99", "err"):
        table.add_column(header, justify="left" if header in ("scenario", "target") else "right")
    for name in PROCESS_COLUMNS:
        table.add_column(f"{name} µs/chunk", justify="right")
    table.add_column("busy cores (other)", justify="right")
    for run in runs:
        if run.scenario.startswith("nonstream"):
            continue
        direct = _find(runs, run.scenario, "direct")
        added = "—"
        if run.target != "direct" and direct is not None:
            p50 = _diff(run.ttft_p50_ms, direct.ttft_p50_ms)
            p99 = _diff(run.ttft_p99_ms, direct.ttft_p99_ms)
            added = f"{fmt(p50, 2)} / {fmt(p99, 2)}"
        table.add_row(
            run.scenario,
            run.target,
            fmt(run.rps, 0),
            fmt(run.chunks_per_s, 0),
            fmt(run.ttft_p50_ms, 2),
            fmt(run.ttft_p99_ms, 2),
            added,
            _errors_cell(run),
            *_cpu_cells(run, "chunk"),
            _machine_cell(run),
        )
    return table


def memory_table(peaks: dict[str, float], idle: IdleResult | None) -> Table:
    table = Table(title="Memory", title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, mb in peaks.items():
        table.add_row(f"peak RSS {name}", f"{mb:.1f} MB")
    if idle is not None:
        table.add_row("idle agents connected", f"{idle.connected:,} of {idle.agents:,} in {idle.connect_s:.1f} s")
        table.add_row("idle agents online when measured", f"{idle.online_at_measurement:,}")
        table.add_row("hub RSS before / after", f"{idle.hub_rss_before_mb:.1f} / {idle.hub_rss_after_mb:.1f} MB")
        table.add_row("hub RSS per idle agent", f"{fmt(idle.kb_per_agent, 1)} KB")
        table.add_row("hub CPU while idle (heartbeats)", f"{idle.hub_idle_cpu_pct:.1f} % of a core")
        table.add_row("agents dropped while idle", str(idle.dropped))
        table.add_row("welcomes that came with other frames", str(idle.welcome_coalesced))
    return table


def checks_table(items: Sequence[Check]) -> Table:
    table = Table(title="Targets", title_justify="left")
    for header in ("goal", "measured", "target", ""):
        table.add_column(header, justify="left" if header == "goal" else "right")
    for check in items:
        limit = f"{'≥' if check.higher_is_better else '≤'} {fmt(check.limit, 1)} {check.unit}"
        style = {"PASS": "green", "MISS": "bold red"}.get(check.verdict, "dim")
        goal = check.goal + (f" ({check.note})" if check.note else "")
        table.add_row(goal, f"{fmt(check.value, 2)} {check.unit}", limit, f"[{style}]{check.verdict}[/]")
    return table


def print_report(
    console: Console,
    runs: Sequence[RunResult],
    peaks: dict[str, float],
    idle: IdleResult | None,
    bench_notes: list[str],
) -> list[Check]:
    if any(r.scenario.startswith("nonstream") for r in runs):
        console.print(nonstream_table(runs))
    if any(not r.scenario.startswith("nonstream") for r in runs):
        console.print(stream_table(runs))
    console.print(memory_table(peaks, idle))
    items = checks(runs, idle)
    console.print(checks_table(items))
    console.print(
        f"[dim]{CPUS} CPUs shared by the load generator, the fake backend, the hub, the agent and LiteLLM; "
        "'busy cores (other)' = machine-wide CPUs busy during the window (of them, not used by this benchmark). "
        "µs/chunk counts SSE events relayed ([DONE] excluded); err = non-200, streams without [DONE], "
        "I/O errors and requests unfinished at the deadline.[/]"
    )
    for run in runs:
        if run.completed == 0:
            bench_notes.append(
                f"{run.scenario} → {run.target}: nothing completed within the {run.window_s:g} s window "
                f"({run.completed_late} completed after it, {run.unfinished} still unfinished at the deadline): "
                "its answers take longer than warm-up + window"
            )
    for note in bench_notes:
        console.print(f"[yellow]note:[/] {note}")
    return items


def print_profiles(console: Console, out_dir: Path) -> dict[str, list[tuple[str, float, float]]]:
    found: dict[str, list[tuple[str, float, float]]] = {}
    for path in sorted((out_dir / "profiles").glob("*.txt")):
        frames = top_frames(path)
        if not frames:
            continue
        found[path.stem] = frames
        table = Table(title=f"py-spy: {path.stem} (self % / inclusive % of samples)", title_justify="left")
        table.add_column("function (file:line)")
        table.add_column("self %", justify="right")
        table.add_column("incl %", justify="right")
        for frame, own, inclusive in frames:
            table.add_row(frame, f"{own:.1f}", f"{inclusive:.1f}")
        console.print(table)
    return found


# =============================================================================================
# Orchestration


def environment() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit.stdout.strip() or None,
        "python": platform.python_version(),
        "cpus": CPUS,
        "loadavg_at_start": os.getloadavg(),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    }


def select(names: Sequence[str], quick: bool) -> list[Scenario]:
    table = scenario_table(quick)
    chosen: list[str] = []
    for name in names:
        for expanded in SCENARIO_GROUPS.get(name, (name,)):
            if expanded not in table:
                raise SystemExit(f"unknown scenario {expanded!r}; choose from {', '.join(table)} or a group")
            if expanded not in chosen:
                chosen.append(expanded)
    return [table[name] for name in table if name in chosen]


async def run_load_scenarios(
    opts: Options, tmp: Path, scenarios: Sequence[Scenario], console: Console, notes: list[str]
) -> tuple[list[RunResult], dict[str, float]]:
    runs: list[RunResult] = []
    peaks: dict[str, float] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(opts.loadgen_procs, mp_context=context, initializer=raise_nofile) as pool:
        async with contextlib.AsyncExitStack() as stack:
            with console.status("starting the fake backend, hub, agent and LiteLLM..."):
                bench = await start_bench(opts, tmp, pool, stack)
            notes.extend(bench.notes)
            # Warm the pool's processes up (imports) before anything is timed.
            warm = [asyncio.wrap_future(pool.submit(time.sleep, 0.1)) for _ in range(opts.loadgen_procs)]
            await asyncio.gather(*warm)
            for scenario in scenarios:
                for target in opts.targets:
                    with console.status(f"{scenario.name} → {target}"):
                        run = await run_one(bench, scenario, target)
                    runs.append(run)
                    console.log(
                        f"{scenario.name:>15} {target:>8}: {run.rps:8.0f}/s  p50 {fmt(run.latency_p50_ms, 2)} ms"
                        f"  ttft p50 {fmt(run.ttft_p50_ms, 2)} ms  err {_errors_cell(run) or 0}"
                    )
            for service in bench.all_services():
                peaks[service.name] = service.peak_rss_kb() / 1024
    return runs, peaks


async def run(opts: Options, scenarios: Sequence[Scenario], console: Console) -> int:
    raise_nofile()
    env = environment()
    if env["loadavg_at_start"][0] > 0.5 * CPUS:
        console.print(f"[yellow]warning:[/] load average {env['loadavg_at_start'][0]:.2f}: the machine is not idle")
    notes: list[str] = []
    load = [s for s in scenarios if s.kind != "idle"]
    idle_scenario = next((s for s in scenarios if s.kind == "idle"), None)
    runs: list[RunResult] = []
    peaks: dict[str, float] = {}
    idle: IdleResult | None = None
    with tempfile.TemporaryDirectory(prefix="potluck-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if load:
            runs, peaks = await run_load_scenarios(opts, tmp, load, console, notes)
        if idle_scenario is not None:
            with console.status(f"{idle_scenario.name}: {idle_scenario.concurrency:,} agent WebSockets"):
                idle = await run_idle(opts, tmp, idle_scenario)
    items = print_report(console, runs, peaks, idle, notes)
    profiles = print_profiles(console, opts.json_out.parent) if opts.profile else {}
    env["loadavg_at_end"] = os.getloadavg()
    write_json(opts, env, runs, peaks, idle, items, notes, profiles)
    console.print(f"[dim]JSON written to {opts.json_out}[/]")
    return 0


def write_json(
    opts: Options,
    env: dict[str, Any],
    runs: Sequence[RunResult],
    peaks: dict[str, float],
    idle: IdleResult | None,
    items: Sequence[Check],
    notes: list[str],
    profiles: dict[str, list[tuple[str, float, float]]],
) -> None:
    document = {
        "environment": env,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "runs": [asdict(r) for r in runs],
        "peak_rss_mb": peaks,
        "idle_agents": asdict(idle) if idle is not None else None,
        "targets": [{**asdict(c), "verdict": c.verdict} for c in items],
        "notes": notes,
        "profiles": profiles,
    }
    opts.json_out.parent.mkdir(parents=True, exist_ok=True)
    opts.json_out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def parse_args(argv: Sequence[str] | None) -> tuple[Options, list[Scenario]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts and short windows (smoke test, < 60 s)")
    parser.add_argument("--scenarios", default="all", help="comma-separated scenarios or groups (nonstream, ...)")
    parser.add_argument("--targets", default=",".join(ALL_TARGETS), help="comma-separated: direct,potluck,litellm")
    parser.add_argument("--duration", type=float, help="measured seconds per scenario and target [8; quick 1]")
    parser.add_argument("--warmup", type=float, help="seconds of load before measuring [2; quick 0.4]")
    parser.add_argument("--loadgen-procs", type=int, default=1, help="load-generator processes [1]")
    parser.add_argument("--litellm-python", help="a Python with `litellm[proxy]` installed [this one]")
    parser.add_argument("--json-out", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--profile", action="store_true", help="py-spy the hub and agent during Potluck's runs")
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="path to py-spy [from PATH]")
    args = parser.parse_args(argv)
    everything = list(scenario_table(args.quick))
    names = everything if args.scenarios == "all" else [n.strip() for n in args.scenarios.split(",") if n.strip()]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if unknown := set(targets) - set(ALL_TARGETS):
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if args.quick and args.targets == parser.get_default("targets") and not args.litellm_python:
        targets.remove("litellm")  # its start-up alone takes ~10-20 s
    if "direct" not in targets:
        targets.insert(0, "direct")  # every comparison is against it
    if args.profile and not args.py_spy:
        parser.error("--profile needs py-spy (pip install py-spy; or give --py-spy PATH)")
    opts = Options(
        quick=args.quick,
        duration=args.duration or (1.0 if args.quick else 8.0),
        warmup=args.warmup if args.warmup is not None else (0.4 if args.quick else 2.0),
        scenarios=names,
        targets=[t for t in ALL_TARGETS if t in targets],
        loadgen_procs=max(1, args.loadgen_procs),
        litellm_python=args.litellm_python,
        json_out=args.json_out.resolve(),
        profile=args.profile,
        py_spy=args.py_spy,
    )
    return opts, select(names, args.quick)


def main(argv: Sequence[str] | None = None) -> int:
    opts, scenarios = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 200)
    return _run_loop(run(opts, scenarios, console))  # type: ignore[no-any-return]


if __name__ == "__main__":
    sys.exit(main())
