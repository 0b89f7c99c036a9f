"""Cluster mode, measured: what a replica-to-replica hop costs, and what two replicas serve next to one.

Starts a real Redis and PostgreSQL (testing/redis.py, testing/postgres.py), hub replicas on them, one agent
on replica B and the fake backend, then drives closed-loop load with bench/relaybench's load generator:

- ``hop``: non-streaming requests at c=1 through replica B (which holds the agent) and through replica A
  (which forwards them to B over the peer link): the p50 of each and their difference, the added p50;
- ``chunks``: paced streams (40 chunks 10 ms apart, c=64) through A: CPU per relayed chunk on A (the
  forwarding replica) and on B, from /proc, next to the same load through B alone;
- ``rps``: non-streaming requests at c=64 against one replica, then split over two replicas (an agent on
  each): requests per second;
- ``rehome`` (``--rehome N``): three replicas behind testing/balancer.py, an agent dialing the balancer;
  N times the replica holding the agent is killed (SIGKILL) and a new one started: seconds from the kill
  until a request at a surviving replica is served by the agent again (p50 and max).

Run: ``python bench/cluster.py [--duration S]``; prints a table and writes bench/results/cluster.json.
Numbers from a shared, loaded machine are indicative only: compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.relaybench.loadgen import LoadResult, LoadSpec, run_load
from bench.relaybench.machine import proc_cpu_s
from testing.balancer import Balancer
from testing.fake_backend import BackgroundServer, FakeBackend
from testing.postgres import PostgresServer
from testing.processes import AgentProcess, HubProcess, http_json
from testing.redis import RedisServer

MODEL = "bench-model"
SECRET = "bench-cluster-secret"  # noqa: S105 - a benchmark's


def _request(url: str, key: str, body: dict[str, Any]) -> bytes:
    parts = urlsplit(url)
    raw = json.dumps(body, separators=(",", ":")).encode()
    head = [
        "POST /v1/chat/completions HTTP/1.1",
        f"Host: {parts.hostname}:{parts.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(raw)}",
        f"Authorization: Bearer {key}",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + raw


def _load(url: str, request: bytes, concurrency: int, duration: float, warmup: float = 1.0) -> LoadResult:
    parts = urlsplit(url)
    now = time.monotonic()
    spec = LoadSpec(
        host=str(parts.hostname),
        port=int(parts.port or 0),
        request=request,
        concurrency=concurrency,
        start_at=now,
        measure_from=now + warmup,
        measure_to=now + warmup + duration,
        hard_stop=now + warmup + duration + 10,
    )
    return run_load(spec)


def _agent(hub: HubProcess, root: Path, backend_url: str) -> AgentProcess:
    """An agent on the backend tunnelled to ``hub``, named after its directory, once the hub has it."""
    name = root.name
    agent = AgentProcess(hub, root, [backend_url], name=name, token=hub.create_agent_token(name), max_concurrency=512)
    hub.wait_agent(name)
    return agent


def _measured(result: LoadResult, duration: float) -> list[tuple[float, float, float, int, int, bool]]:
    if result.crashes:
        raise RuntimeError(f"load generator crashed: {result.crashes[:2]}")
    return [s for s in result.samples if s[3] == 200]


def _p50_ms(samples: list[tuple[float, float, float, int, int, bool]]) -> float:
    return statistics.median(s[2] - s[0] for s in samples) * 1000


def _cpu(hubs: list[HubProcess]) -> list[float]:
    return [proc_cpu_s(h.proc.pid) for h in hubs]


@dataclass(frozen=True)
class _Paced:
    cpu: list[float]
    """CPU seconds of each replica over the run."""
    requests: int
    chunks: int

    def per_request(self, replica: int) -> float:
        return self.cpu[replica] / max(1, self.requests)

    @property
    def chunks_per_request(self) -> float:
        return self.chunks / max(1, self.requests)


def _paced_cpu(hub: HubProcess, hubs: list[HubProcess], key: str, chunks: int, duration: float) -> _Paced:
    """Paced streams of ``chunks`` chunks 10 ms apart through ``hub``, at c=64: the replicas' CPU, and what was
    served. Everything started in the window is counted, so the CPU and the requests cover the same work."""
    body = _body(stream=True, fake={"chunks": chunks, "delay": 0.01})
    before = _cpu(hubs)
    result = _load(hub.url, _request(hub.url, key, body), 64, duration, warmup=0.0)
    after = _cpu(hubs)
    served = _measured(result, duration)
    return _Paced([a - b for a, b in zip(after, before, strict=True)], len(served), sum(s[4] for s in served))


def _profile(
    py_spy: str | None, run: str, hubs: dict[str, HubProcess], seconds: float
) -> list[subprocess.Popen[bytes]]:
    """py-spy (when asked for) on each replica for the run's measured window."""
    if py_spy is None:
        return []
    out = Path(__file__).parent / "results" / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    # --native shows the C below Python (uvloop, the parsers, the write syscalls); it pauses the process to sample.
    record = ("record", "--duration", str(max(1, int(seconds))), "--rate", "200", "--format", "raw", "--native")
    return [
        subprocess.Popen(
            [py_spy, *record, "--pid", str(hub.proc.pid), "--output", str(out / f"cluster-{run}-{name}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, hub in hubs.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--rehome", type=int, default=5, help="replica kills to time (0: none)")
    parser.add_argument(
        "--phases", default="hop,chunks,rps", help="which of hop, chunks, rps to run (comma-separated; all by default)"
    )
    parser.add_argument(
        "--profile",
        metavar="PY_SPY",
        help="record both replicas with this py-spy during the chunks runs (collapsed stacks in "
        "bench/results/profiles/cluster-<run>-<replica>.txt; do not compare a profiled run's numbers)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of the chunks phase; the median of each measure and its range"
    )
    args = parser.parse_args()
    duration: float = args.duration
    results: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="potluck-cluster-bench-"))
    with RedisServer() as redis, PostgresServer() as postgres:
        database = postgres.create_database()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "potluck",
                "hub",
                "--data-dir",
                str(root / "m"),
                "--database-url",
                database,
                "migrate",
            ],
            check=True,
            capture_output=True,
        )
        backend = FakeBackend([MODEL], chunks=64)
        with BackgroundServer(backend.make_app()) as server:
            common = ("--redis-url", redis.url, "--cluster-secret", SECRET, "--database-url", database)
            hub_b = HubProcess(root / "b", *common)
            hub_a = HubProcess(root / "a", *common)
            hubs = [hub_a, hub_b]
            agents: list[AgentProcess] = []
            try:
                key = hub_b.create_key("bench")
                agents.append(_agent(hub_b, root / "agent-b", server.url))
                hub_b.wait_agent("agent-b")
                assert HubProcess.wait_for(
                    lambda: http_json("POST", hub_a.url + "/v1/chat/completions", _body(), key)[0] == 200, 15
                ), "replica A never served through B"

                phases = set(args.phases.split(","))
                # hop: p50 at c=1 through the holder and through the forwarder
                small = _body(fake={"chunks": 64})
                for name, hub in (("holder", hub_b), ("forwarded", hub_a)) if "hop" in phases else ():
                    samples = _measured(_load(hub.url, _request(hub.url, key, small), 1, duration), duration)
                    results[f"p50_ms_{name}"] = round(_p50_ms(samples), 3)
                if "hop" in phases:
                    results["added_p50_ms"] = round(results["p50_ms_forwarded"] - results["p50_ms_holder"], 3)

                # chunks: CPU per relayed chunk, paced streams (each chunk its own frame): per chunk of the
                # whole run (a request's own costs spread over its 40 chunks), and the marginal cost of one
                # more chunk (the difference per request between 40-chunk and 2-chunk streams, per chunk)
                for name, hub in (("direct_at_holder", hub_b), ("forwarded", hub_a)) if "chunks" in phases else ():
                    taken: dict[str, list[float]] = {}
                    for attempt in range(args.repeat):
                        spies = _profile(args.profile, name, {"a": hub_a, "b": hub_b}, duration) if not attempt else []
                        long = _paced_cpu(hub, hubs, key, 40, duration)
                        for spy in spies:
                            spy.wait(30)
                        short = _paced_cpu(hub, hubs, key, 2, duration)
                        results[f"chunks_{name}"] = long.chunks
                        for i, replica in enumerate(("a", "b")):
                            marginal = (long.per_request(i) - short.per_request(i)) / (
                                long.chunks_per_request - short.chunks_per_request
                            )
                            for measure, value in (
                                (f"cpu_us_per_chunk_{name}_on_{replica}", long.cpu[i] / long.chunks),
                                (f"marginal_cpu_us_per_chunk_{name}_on_{replica}", marginal),
                            ):
                                taken.setdefault(measure, []).append(value * 1e6)
                    for measure, values in taken.items():
                        # On a shared machine one run can be far off: the median of --repeat runs, and their range.
                        results[measure] = round(statistics.median(values), 2)
                        if len(values) > 1:
                            results[f"{measure}_range"] = [round(min(values), 2), round(max(values), 2)]

                if "rps" in phases:
                    # rps: one replica, then two (an agent on each, load split evenly)
                    whole = _body(fake={"chunks": 64})
                    results["rps_one_replica"] = round(
                        len(_measured(_load(hub_b.url, _request(hub_b.url, key, whole), 64, duration), duration))
                        / duration,
                        1,
                    )
                    agents.append(_agent(hub_a, root / "agent-a", server.url))
                    hub_a.wait_agent("agent-a")
                    split: list[LoadResult] = []
                    threads = [
                        threading.Thread(
                            target=lambda h=h: split.append(_load(h.url, _request(h.url, key, whole), 32, duration))
                        )
                        for h in hubs
                    ]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()
                    results["rps_two_replicas"] = round(sum(len(_measured(r, duration)) for r in split) / duration, 1)
            finally:
                for agent in agents:
                    agent.stop()
                for hub in hubs:
                    hub.stop()
            if args.rehome:
                results.update(_rehome(root / "rehome", redis, database, server.url, args.rehome))
    out = Path(__file__).parent / "results" / "cluster.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for name, value in results.items():
        print(f"{name:40} {value}")


def _rehome(root: Path, redis: RedisServer, database: str, backend_url: str, kills: int) -> dict[str, Any]:
    """Seconds from killing the agent's replica to the agent serving again through a survivor."""
    common: tuple[str, ...] = ("--redis-url", redis.url, "--cluster-secret", SECRET, "--database-url", database)
    common += ("--replica-lease-s", "1.5", "--heartbeat-interval", "0.3", "--heartbeat-timeout", "1.5")
    hubs = [HubProcess(root / f"hub-{i}", *common) for i in range(3)]
    born = len(hubs)
    balancer = Balancer([_address(h.url) for h in hubs]).start()
    agent = AgentProcess(
        hubs[0],
        root / "agent",
        [backend_url],
        name="mover",
        token=hubs[0].create_agent_token("mover"),
        extra=("--hub", balancer.url),
    )
    key = hubs[0].create_key("rehome")
    times: list[float] = []
    try:
        for _ in range(kills):
            if not HubProcess.wait_for(lambda hubs=hubs: any(_holds(h, "mover") for h in hubs), 30):
                raise RuntimeError("the agent never connected")
            holder = next(h for h in hubs if _holds(h, "mover"))
            holder.kill()
            killed = time.monotonic()
            survivors = [h for h in hubs if h is not holder]
            url = survivors[0].url + "/v1/chat/completions"
            if not HubProcess.wait_for(lambda url=url: http_json("POST", url, _body(), key)[0] == 200, 30):
                raise RuntimeError("the agent did not serve again within 30 s")
            times.append(time.monotonic() - killed)
            holder.stop()
            hubs = [*survivors, HubProcess(root / f"hub-{born}", *common)]
            born += 1
            balancer.upstreams = [_address(h.url) for h in hubs]
    finally:
        agent.stop()
        for hub in hubs:
            hub.stop()
        balancer.stop()
    return {"rehome_s_p50": round(statistics.median(times), 2), "rehome_s_max": round(max(times), 2), "kills": kills}


def _holds(hub: HubProcess, name: str) -> bool:
    """Whether the agent's tunnel is at this replica (not a proxy of another's)."""
    status, view = hub.admin("GET", "/admin/cluster")
    if status != 200:
        return False
    mine = next(r for r in view["replicas"] if r["id"] == view["replica"])
    return any(a["name"] == name for a in mine["agents"])


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return str(parts.hostname), int(parts.port or 0)


def _body(*, stream: bool = False, fake: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
    if stream:
        body["stream"] = True
    if fake:
        body["fake"] = fake
    return body


if __name__ == "__main__":
    main()
