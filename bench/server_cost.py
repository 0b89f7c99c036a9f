"""What the hub's HTTP server costs per request: the same hub, answering non-streamed chat completions through
its front server, through aiohttp alone, and through a bare lower bound, side by side.

The hub process runs as usual (`potluck hub`) and also listens on two more ports:

- ``front``: the hub's own port, as it runs: the relayed routes answered by `api/front.py`;
- ``aiohttp``: the same application, connection guard and error handling on aiohttp alone, as the hub ran
  before the front server (every request through aiohttp's protocol, router and middleware);
- ``minimal``: a bare `asyncio.Protocol` on httptools answering non-streamed ``POST /v1/chat/completions``
  only, through the hub's own services (authenticate, decode the routing fields, `RequestOwner.serve`, the
  agent's head, one write). It has none of the rest (a client's request id, body limits, the connection
  guard, CORS, error pages, hand-over): a lower bound, not a server.

Each round sends closed-loop load to one port after the other, and reads the hub's and the agent's CPU
(user and system, from /proc) and the requests served. The agent and the backend are the same for all three.

Run: ``python bench/server_cost.py [--concurrency 64,1] [--duration 6] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import runpy
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import httptools
import msgspec
from aiohttp import web

from bench.relaybench.loadgen import LoadSpec, run_load
from bench.relaybench.machine import CLK_TCK
from bench.relaybench.scenarios import MODEL
from bench.relaybench.services import (
    admin_post,
    agent_argv,
    free_port,
    spawn,
    start_hub,
    wait_listening,
    wait_model,
)
from potluck._shared.ids import new_request_id
from potluck.api.context import HUB
from potluck.api.dialects import id_headers
from potluck.api.guard import GuardedSite
from potluck.api.parser_errors import handler_factory
from potluck.api.relay import parse_routing
from potluck.hub.errors import HubError
from potluck.hub.requests import ClientRequest
from potluck.hub.services import HubServices
from potluck.protocol.openai import Dialect

PORTS_ENV = "POTLUCK_BENCH_PORTS"
PATH = "/v1/chat/completions"


# -- in the hub process: the two other servers -------------------------------------------------------------------


async def _chat(hub: HubServices, authorization: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """One non-streamed chat completion through the hub's request owner, as `api/relay.py` serves it: (status,
    headers, body)."""
    rid = new_request_id()
    try:
        key = hub.keys.authenticate(authorization.partition(" ")[2].strip())
        fields = parse_routing(body)
        request = ClientRequest(rid, key, PATH, body, fields.model or "", stream=False, include_usage=True)
        async with hub.requests.serve(request) as exchange:
            answer = await exchange.read() or b""
            exchange.sent(answer)
            headers = [("X-Content-Type-Options", "nosniff")]
            headers += [(name, value) for name, value in exchange.head.headers if name != "content-length"]
            headers += id_headers(Dialect.OPENAI, rid).items()
            return exchange.status, headers, answer
    except HubError as exc:
        error = msgspec.json.encode({"error": {"message": exc.message, "code": str(exc.code)}})
        return exc.status, [("Content-Type", "application/json")], error


class MinimalServer(asyncio.Protocol):
    """HTTP/1.1 on httptools, keep-alive, one request at a time per connection, non-streamed chat completions."""

    def __init__(self, hub: HubServices) -> None:
        self.hub = hub
        self.parser = httptools.HttpRequestParser(self)
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.answering: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # TCP (uvloop's is no asyncio.Transport subclass)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.headers = {}
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.answering = asyncio.get_running_loop().create_task(self.answer(self.headers, b"".join(self.body)))

    async def answer(self, headers: dict[bytes, bytes], body: bytes) -> None:
        status, fields, answer = await _chat(self.hub, headers.get(b"authorization", b"").decode(), body)
        head = [b"HTTP/1.1 %d X" % status, *(f"{name}: {value}".encode() for name, value in fields)]
        head.append(b"Content-Length: %d" % len(answer))
        if self.transport is not None:
            self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + answer)


def _serve_hub_with_other_servers(argv: list[str]) -> None:
    """Run ``python -m potluck hub ...`` (``argv``), with aiohttp alone and `MinimalServer` listening on the ports
    in $POTLUCK_BENCH_PORTS (comma-separated) next to the hub's own."""
    start = GuardedSite.start

    async def start_with_other_servers(site: GuardedSite) -> None:
        await start(site)
        loop = asyncio.get_running_loop()
        aiohttp_port, minimal_port = (int(port) for port in os.environ[PORTS_ENV].split(","))
        runner = site._runner
        if not isinstance(runner, web.AppRunner) or runner.server is None:
            raise RuntimeError("the hub's runner is not set up")
        aiohttp_alone = site._guard.protocol_factory(handler_factory(runner.server))
        await loop.create_server(aiohttp_alone, "127.0.0.1", aiohttp_port, backlog=4096)
        hub = runner.app[HUB]
        await loop.create_server(lambda: MinimalServer(hub), "127.0.0.1", minimal_port, backlog=4096)

    GuardedSite.start = start_with_other_servers  # type: ignore[method-assign,assignment]
    _python, flag, module, *rest = argv
    if (flag, module) != ("-m", "potluck"):
        sys.exit(f"expected `python -m potluck ...`, got {argv}")
    sys.argv = ["potluck", *rest]
    runpy.run_module("potluck", run_name="__main__", alter_sys=True)


# -- the driver ----------------------------------------------------------------------------------------------------


def _request(port: int, key: str) -> bytes:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, separators=(",", ":"))
    head = [
        f"POST {PATH} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        f"Authorization: Bearer {key}",
    ]
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode()


def _load(port: int, key: str, concurrency: int, duration: float) -> int:
    """Requests answered 200 in ``duration`` seconds of closed-loop load (in a load-generator process)."""
    now = time.monotonic()
    spec = LoadSpec(
        host="127.0.0.1",
        port=port,
        request=_request(port, key),
        concurrency=concurrency,
        start_at=now,
        measure_from=now,
        measure_to=now + duration,
        hard_stop=now + duration + 10,
    )
    result = run_load(spec)

    return sum(1 for sample in result.samples if sample[3] == 200)


def _cpu(pid: int) -> tuple[float, float]:
    """(user, system) seconds of a process."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


@dataclass(frozen=True)
class Row:
    server: str
    concurrency: int
    served: int
    """Requests answered 200."""
    hub_user_us: float
    hub_system_us: float
    agent_us: float


async def measure(args: argparse.Namespace, tmp: Path) -> list[Row]:
    """Every round's rows (printed as they come)."""
    aiohttp_port, minimal_port = free_port(), free_port()
    os.environ[PORTS_ENV] = f"{aiohttp_port},{minimal_port}"
    backend = spawn("backend", [sys.executable, "-m", "testing.fake_backend", "--port", "0", "--chunks", "16"], tmp)
    services = [backend]
    try:
        await wait_listening(backend)
        hub = await start_hub(tmp, tmp / "hub", wrapper=[sys.executable, __file__, "--hub"])
        services.append(hub)
        async with aiohttp.ClientSession() as http:
            key = (await admin_post(http, hub.url, "/admin/keys", "bench"))["key"]
            token = (await admin_post(http, hub.url, "/admin/agent-tokens", "bench-agent"))["token"]
            agent = spawn("agent", agent_argv(hub.url, token, backend.url, tmp / "agent"), tmp)
            services.append(agent)
            await wait_model(http, hub.url, key)
        front_port = int(hub.url.rsplit(":", 1)[1])
        servers = (("front", front_port), ("aiohttp", aiohttp_port), ("minimal", minimal_port))
        rows: list[Row] = []
        print(f"{'round':>5} {'c':>4} {'server':9} {'requests':>8} {'rps':>6}  hub µs/req (user+sys)  agent µs/req")
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            for round_ in range(args.rounds):
                for concurrency in args.concurrency:
                    for name, port in servers:
                        hub0, agent0 = _cpu(hub.proc.pid), _cpu(agent.proc.pid)
                        served = pool.apply(_load, (port, key, concurrency, args.duration))
                        hub1, agent1 = _cpu(hub.proc.pid), _cpu(agent.proc.pid)
                        per = 1e6 / max(1, served)
                        user, system = (hub1[0] - hub0[0]) * per, (hub1[1] - hub0[1]) * per
                        agent_us = (sum(agent1) - sum(agent0)) * per
                        rows.append(Row(name, concurrency, served, user, system, agent_us))
                        print(
                            f"{round_:>5} {concurrency:>4} {name:9} {served:>8} {served / args.duration:>6.0f}  "
                            f"{user + system:6.1f} ({user:5.1f}+{system:4.1f})      {agent_us:6.1f}",
                            flush=True,
                        )
    finally:
        for service in reversed(services):
            service.stop()
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--hub":
        _serve_hub_with_other_servers(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[64, 1])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of load per server and concurrency")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="potluck-server-cost-") as tmp:
        asyncio.run(measure(args, Path(tmp)))


if __name__ == "__main__":
    main()
