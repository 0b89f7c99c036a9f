"""Live fleet check: the three scheduler policies on a real hub and real agents, in front of fake Ollamas
that load cold models and evict them, replaying one seeded trace.

    .venv/bin/python bench/fleet_live.py [--agents N] [--requests N] [--rate R] [--seed S]
                                         [--cold-tail] [--policies round_robin,least_loaded,potluck]
                                         [--json] [--json-out PATH]

It checks that what bench/fleet.py's simulator predicts holds on the real thing: for each policy, a fresh
hub (``--scheduler-policy P``) and fresh agents, each in front of its own ``FakeOllama`` (a thread of this
process) with every model of a small catalogue pulled, room for one or two of them in "VRAM"
(``max_loaded``) and its own cold-load time (scaled down from 10-60 s to about a second). The same trace
(Zipf model popularity, Poisson arrivals) is replayed with the official ``openai`` client, streaming; TTFT is
the time to the first content chunk. Cold loads are counted by the fakes. The agents learn what is hot from
``/api/ps`` every second (every 0.5 s while a cold request waits), so the hub's view lags the backends'.

The default run takes about two minutes on two cores; results go to bench/results/fleet_live.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/fleet_live.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(REPO))

import openai  # noqa: E402

from testing.fake_ollama import FakeOllama  # noqa: E402
from testing.processes import AgentProcess, HubProcess  # noqa: E402
from testing.serving import BackgroundServer  # noqa: E402

DEFAULT_JSON = REPO / "bench" / "results" / "fleet_live.json"
POLICIES = ("round_robin", "least_loaded", "potluck")
MODELS = ("gemma2:2b", "llama3.2:3b", "qwen2.5:3b", "phi3.5:3.8b", "mistral:7b", "qwen2.5:7b")
ZIPF_S = 1.1
"""Model popularity ∝ 1 / rank^s, as in bench/fleet_model.py."""
REQUEST_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class AgentSpec:
    name: str
    load_delay: float
    """Seconds a cold load takes on this agent's backend."""
    max_loaded: int
    loaded: tuple[str, ...]
    """Models resident when the run starts."""


@dataclass(frozen=True, slots=True)
class FleetSpec:
    models: tuple[str, ...]
    agents: tuple[AgentSpec, ...]
    chunks: int = 6
    token_delay: float = 0.03
    """Between content chunks: a hot request takes about chunks * token_delay."""
    num_parallel: int = 2
    """Requests one model generates at once on one backend (OLLAMA_NUM_PARALLEL)."""
    max_concurrency: int = 4
    """Slots each agent offers the hub."""


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float
    """Seconds after the replay starts."""
    model: str


@dataclass(slots=True)
class PolicyResult:
    policy: str
    requests: int
    errors: int
    mean_ttft_s: float
    p50_ttft_s: float
    p95_ttft_s: float
    cold_loads: int
    evictions: int
    overlapping_loads: int
    """Cold loads started while the same model was already loading on another agent (a second load, not a join)."""
    replay_s: float
    """From the first request sent to the last answer."""
    wall_s: float
    """Everything: start-up, replay and shutdown."""
    error_samples: list[str] = field(default_factory=list)


def popularity(models: Sequence[str]) -> list[float]:
    weights = [1.0 / (rank + 1) ** ZIPF_S for rank in range(len(models))]
    total = sum(weights)
    return [w / total for w in weights]


def make_fleet(
    agents: int,
    *,
    models: Sequence[str] = MODELS,
    seed: int = 7,
    load_delay: tuple[float, float] = (0.5, 1.5),
    token_delay: float = 0.03,
    cold_tail: bool = False,
) -> FleetSpec:
    """Heterogeneous agents: load delays spread over ``load_delay`` and room for one or two models each. At the
    start every model is hot somewhere (dealt out most popular first, one per agent), and the rooms left are
    filled with models drawn by popularity, as bench/fleet_model.py does. With ``cold_tail``, every room is
    drawn by popularity: the least popular models may start cold everywhere (the most popular stays hot)."""
    rng = random.Random(seed)
    lo, hi = load_delay
    delays = [lo + (hi - lo) * i / max(1, agents - 1) for i in range(agents)]
    rng.shuffle(delays)
    rooms = [1 + i % 2 for i in range(agents)]
    weights = popularity(models)
    dealt: list[list[str]] = [[models[i]] if i < len(models) and not cold_tail else [] for i in range(agents)]
    if cold_tail:
        dealt[0].append(models[0])
    for room, picks in zip(rooms, dealt, strict=True):
        while len(picks) < room:
            pool = [m for m in models if m not in picks]
            picks.append(rng.choices(pool, [weights[models.index(m)] for m in pool])[0])
    specs = tuple(AgentSpec(f"live-{i}", round(delays[i], 3), rooms[i], tuple(dealt[i])) for i in range(agents))
    return FleetSpec(tuple(models), specs, token_delay=token_delay)


def make_trace(requests: int, rate: float, models: Sequence[str], *, seed: int = 7) -> list[Arrival]:
    """Poisson arrivals at ``rate`` per second; each picks a model by Zipf popularity."""
    rng = random.Random(seed + 1)
    weights = popularity(models)
    at = 0.0
    trace = []
    for _ in range(requests):
        at += rng.expovariate(rate)
        trace.append(Arrival(round(at, 4), rng.choices(models, weights)[0]))
    return trace


# ---------------------------------------------------------------------- one policy


async def _one(client: openai.AsyncOpenAI, arrival: Arrival, start: float) -> float | str:
    """Send at ``start + arrival.at``; seconds to the first content chunk, or the error's text."""
    await asyncio.sleep(max(0.0, start + arrival.at - time.monotonic()))
    sent = time.monotonic()
    first: float | None = None
    try:
        stream = await client.chat.completions.create(
            model=arrival.model, messages=[{"role": "user", "content": "hello there"}], stream=True
        )
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.monotonic() - sent
    except openai.OpenAIError as exc:
        return f"{type(exc).__name__}: {exc}"
    return first if first is not None else "no content"


async def replay(url: str, key: str, trace: Sequence[Arrival]) -> list[float | str]:
    async with openai.AsyncOpenAI(
        base_url=url + "/v1", api_key=key, max_retries=0, timeout=REQUEST_TIMEOUT_S
    ) as client:
        start = time.monotonic() + 0.2
        return list(await asyncio.gather(*(_one(client, a, start) for a in trace)))


def run_policy(policy: str, fleet: FleetSpec, trace: Sequence[Arrival], root: Path) -> PolicyResult:
    """A fresh hub with ``policy``, fresh fakes and agents; replay ``trace``; stop everything."""
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        fakes = []
        urls = []
        for spec in fleet.agents:
            fake = FakeOllama(
                fleet.models,
                loaded=spec.loaded,
                load_delay=spec.load_delay,
                token_delay=fleet.token_delay,
                chunks=fleet.chunks,
                num_parallel=fleet.num_parallel,
                max_loaded=spec.max_loaded,
            )
            fakes.append(fake)
            urls.append(stack.enter_context(BackgroundServer(fake.make_app())).url)
        hub = HubProcess(root / f"hub-{policy}", "--scheduler-policy", policy, "--log-level", "warning")
        stack.callback(hub.stop)
        key = hub.create_key("fleet-live")
        agents = [
            AgentProcess(
                hub,
                root / f"{policy}-{spec.name}",
                [f"{url},kind=ollama"],
                name=spec.name,
                token=hub.create_agent_token(spec.name),
                max_concurrency=fleet.max_concurrency,
                extra=("--log-level", "warning"),
            )
            for spec, url in zip(fleet.agents, urls, strict=True)
        ]
        stack.callback(_stop_all, agents)
        for spec in fleet.agents:
            hub.wait_agent(spec.name, models=set(fleet.models), timeout=30)
        replay_started = time.monotonic()
        outcomes = asyncio.run(replay(hub.url, key, trace))
        replay_s = time.monotonic() - replay_started
    ttfts = sorted(o for o in outcomes if isinstance(o, float))
    errors = [o for o in outcomes if isinstance(o, str)]
    return PolicyResult(
        policy=policy,
        requests=len(outcomes),
        errors=len(errors),
        mean_ttft_s=statistics.fmean(ttfts) if ttfts else math.nan,
        p50_ttft_s=_quantile(ttfts, 0.5),
        p95_ttft_s=_quantile(ttfts, 0.95),
        cold_loads=sum(1 for fake in fakes for rec in fake.records if rec.cold_load),
        evictions=sum(len(fake.evictions) for fake in fakes),
        overlapping_loads=_overlapping_loads(fakes, fleet),
        replay_s=replay_s,
        wall_s=time.monotonic() - started,
        error_samples=sorted(set(errors))[:3],
    )


def _overlapping_loads(fakes: Sequence[FakeOllama], fleet: FleetSpec) -> int:
    loads = sorted(
        (rec.started_at, rec.started_at + spec.load_delay, rec.model, i)
        for i, (fake, spec) in enumerate(zip(fakes, fleet.agents, strict=True))
        for rec in fake.records
        if rec.cold_load
    )
    return sum(
        1
        for n, (start, _, model, agent) in enumerate(loads)
        if any(m == model and a != agent and end > start for _, end, m, a in loads[:n])
    )


def _stop_all(agents: Sequence[AgentProcess]) -> None:
    for agent in agents:  # all at once: each one's drain then overlaps the others'
        agent.signal(signal.SIGTERM)
    for agent in agents:
        agent.stop()


def _quantile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def compare(
    policies: Sequence[str], fleet: FleetSpec, trace: Sequence[Arrival], root: Path | None = None
) -> dict[str, PolicyResult]:
    """Every policy on the same fleet and trace, one after another."""
    with tempfile.TemporaryDirectory(prefix="fleet-live-") as tmp:
        base = root or Path(tmp)
        return {p: run_policy(p, fleet, trace, base) for p in policies}


def ordering(results: dict[str, PolicyResult]) -> list[str]:
    """Policies by mean TTFT, best first."""
    return sorted(results, key=lambda p: results[p].mean_ttft_s)


# ---------------------------------------------------------------------- report


def print_table(results: dict[str, PolicyResult], fleet: FleetSpec, trace: Sequence[Arrival]) -> None:
    span = trace[-1].at if trace else 0.0
    print(
        f"{len(fleet.agents)} agents, {len(fleet.models)} models, {len(trace)} requests over {span:.1f} s; "
        f"cold loads {min(a.load_delay for a in fleet.agents):.2f}-{max(a.load_delay for a in fleet.agents):.2f} s"
    )
    head = (
        f"{'policy':<14}{'mean TTFT':>11}{'p50':>9}{'p95':>9}{'cold loads':>12}{'overlapping':>13}"
        f"{'evictions':>11}{'errors':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in results.values():
        print(
            f"{r.policy:<14}{r.mean_ttft_s:>10.3f}s{r.p50_ttft_s:>8.3f}s{r.p95_ttft_s:>8.3f}s"
            f"{r.cold_loads:>12}{r.overlapping_loads:>13}{r.evictions:>11}{r.errors:>8}"
        )
        for sample in r.error_samples:
            print(f"    error: {sample[:160]}")
    print("ordering (best mean TTFT first): " + " < ".join(ordering(results)))


def document(results: dict[str, PolicyResult], fleet: FleetSpec, trace: Sequence[Arrival]) -> dict[str, Any]:
    return {
        "policies": {
            p: {
                "mean_ttft_s": round(r.mean_ttft_s, 4),
                "p50_ttft_s": round(r.p50_ttft_s, 4),
                "p95_ttft_s": round(r.p95_ttft_s, 4),
                "cold_loads": r.cold_loads,
                "overlapping_loads": r.overlapping_loads,
                "evictions": r.evictions,
                "requests": r.requests,
                "errors": r.errors,
                "replay_s": round(r.replay_s, 1),
                "wall_s": round(r.wall_s, 1),
            }
            for p, r in results.items()
        },
        "ordering": ordering(results),
        "fleet": asdict(fleet),
        "trace": {"requests": len(trace), "span_s": trace[-1].at if trace else 0.0},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--agents", type=int, default=8, help="agents, each with its own fake Ollama [8]")
    parser.add_argument("--requests", type=int, default=240, help="requests in the trace [240]")
    parser.add_argument("--rate", type=float, default=9.0, help="mean arrivals per second [9]")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--cold-tail", action="store_true", help="start with rarer models cold everywhere (loads must be shared)"
    )
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated, run in this order")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--json-out", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if unknown := set(policies) - set(POLICIES):
        parser.error(f"unknown policies: {', '.join(sorted(unknown))}")
    if args.agents < 1 or args.requests < 1 or args.rate <= 0:
        parser.error("--agents, --requests and --rate must be positive")
    fleet = make_fleet(args.agents, seed=args.seed, cold_tail=args.cold_tail)
    trace = make_trace(args.requests, args.rate, fleet.models, seed=args.seed)
    results = compare(policies, fleet, trace)
    doc = document(results, fleet, trace)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps({"policies": doc["policies"], "ordering": doc["ordering"]}))
    else:
        print_table(results, fleet, trace)
        print(f"JSON written to {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
