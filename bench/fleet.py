"""Fleet simulator: the hub's real scheduler, three policies, one seeded trace, in simulated time.

    .venv/bin/python bench/fleet.py [--seed N] [--agents N] [--duration S] [--json] [--charts DIR]

A deterministic discrete-event simulation (bench/fleet_model.py) plays a fleet of heterogeneous
agents (VRAM, decode and prefill speed, disk, slots; hot models evicted least recently used first,
10-60 s cold loads) and users sending Poisson traffic with Zipf model popularity, one of them a noisy
neighbour at 10x the others' rate. Every routing and queueing decision is made by
`potluck.hub.scheduler.Scheduler` on a `ManualClock`, exactly as the hub calls it. The same trace is
replayed under the ``round_robin``, ``least_loaded`` and ``potluck`` policies; then, for fairness,
potluck again with the neighbour at its normal rate. Same seed, same numbers (``--json`` output is
byte-identical). See bench/README.md for the model and how to read the output.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make `bench` importable
    sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.fleet_model import Fleet, RunResult, Simulation, build_fleet, build_trace  # noqa: E402
from potluck.hub.scheduler import ScoreWeights  # noqa: E402

DEFAULT_CHARTS = REPO / "bench" / "results" / "fleet"
POLICIES = ("round_robin", "least_loaded", "potluck")
TARGET_VS_ROUND_ROBIN = 3.0
TARGET_VS_LEAST_LOADED = 1.5
TARGET_FAIRNESS = 1.5


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def summarize(fleet: Fleet, result: RunResult) -> dict[str, Any]:
    begin, end = result.window
    span = end - begin
    ttfts = [t for _, t in result.ttft]
    by_user: dict[str, list[float]] = {u: [] for u in fleet.users}
    for user, t in result.ttft:
        by_user[user].append(t)
    victims = [t for user, t in result.ttft if user != fleet.noisy]
    return {
        "requests": sum(result.requests.values()),
        "started": len(ttfts),
        "mean_ttft_s": _r(sum(ttfts) / len(ttfts) if ttfts else None),
        "p50_ttft_s": _r(percentile(ttfts, 0.5)),
        "p95_ttft_s": _r(percentile(ttfts, 0.95)),
        "p99_ttft_s": _r(percentile(ttfts, 0.99)),
        "throughput_rps": _r(result.completed_in_window / span),
        "cold_loads": result.cold_loads,
        "cold_starts": result.cold_starts,
        "timeouts": sum(result.timeouts.values()),
        "rejected": sum(result.rejected.values()),
        "gpu_busy": _r(result.busy_agent_s / (len(fleet.agents) * span)),
        "slots_busy": _r(result.busy_slot_s / (fleet.slots * span)),
        "victim_p95_ttft_s": _r(percentile(victims, 0.95)),
        "per_user_p95_ttft_s": {u: _r(percentile(by_user[u], 0.95)) for u in fleet.users},
        "per_user_timeouts": {u: result.timeouts[u] for u in fleet.users},
        "per_user_rejected": {u: result.rejected[u] for u in fleet.users},
    }


def run_experiments(
    *,
    seed: int = 1,
    agents: int = 24,
    duration: float = 1200.0,
    warmup: float = 180.0,
    load: float = 0.4,
    noisy_factor: float = 10.0,
    queue_timeout: float = 120.0,
    max_queue: int = 1024,
    user_share: float = 0.5,
    weights: str = "",
) -> dict[str, Any]:
    """Every policy on the flooded trace, and potluck on the normal-rate one: the ``--json`` object."""
    fleet = build_fleet(seed, agents, load=load, noisy_factor=noisy_factor)
    window = (warmup, warmup + duration)
    score_weights = ScoreWeights.parse(weights)

    def replay(flooded: bool, policy: str) -> dict[str, Any]:
        trace = build_trace(fleet, duration, flooded=flooded, warmup=warmup)
        sim = Simulation(
            fleet,
            trace,
            window,
            policy,
            queue_timeout=queue_timeout,
            max_queue=max_queue,
            user_share=user_share,
            weights=score_weights,
        )
        return summarize(fleet, sim.run())

    policies = {policy: replay(True, policy) for policy in POLICIES}
    unloaded = replay(False, "potluck")
    flooded_p95 = policies["potluck"]["victim_p95_ttft_s"]
    unloaded_p95 = unloaded["victim_p95_ttft_s"]
    return {
        "policies": policies,
        "fairness": {
            "policy": "potluck",
            "noisy_user": fleet.noisy,
            "noisy_factor": noisy_factor,
            "victim_p95_unloaded_s": unloaded_p95,
            "victim_p95_flooded_s": flooded_p95,
            "ratio": _r(flooded_p95 / unloaded_p95) if flooded_p95 and unloaded_p95 else None,
            "unloaded_gpu_busy": unloaded["gpu_busy"],
            "per_user_p95_unloaded_s": unloaded["per_user_p95_ttft_s"],
            "per_user_rejected_unloaded": unloaded["per_user_rejected"],
        },
    }


def targets(out: dict[str, Any]) -> list[tuple[str, float | None, float, bool]]:
    """(description, measured, limit, met) for each acceptance target."""
    pol = out["policies"]
    mine = pol["potluck"]["mean_ttft_s"]

    def gain(other: str) -> float | None:
        theirs = pol[other]["mean_ttft_s"]
        return None if not mine or theirs is None else theirs / mine

    rr, ll, fair = gain("round_robin"), gain("least_loaded"), out["fairness"]["ratio"]
    return [
        ("mean TTFT: round_robin / potluck", rr, TARGET_VS_ROUND_ROBIN, rr is not None and rr >= TARGET_VS_ROUND_ROBIN),
        (
            "mean TTFT: least_loaded / potluck",
            ll,
            TARGET_VS_LEAST_LOADED,
            ll is not None and ll >= TARGET_VS_LEAST_LOADED,
        ),
        ("victims' p95 TTFT: flooded / unloaded", fair, TARGET_FAIRNESS, fair is not None and fair <= TARGET_FAIRNESS),
    ]


# =============================================================================================
# Output


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_report(out: dict[str, Any], fleet: Fleet, args: argparse.Namespace, console: Console) -> None:
    console.print(
        f"[bold]Fleet[/bold] seed {args.seed}: {len(fleet.agents)} agents, {fleet.slots} slots, "
        f"{len(fleet.models)} models, {len(fleet.users)} users at {fleet.base_rate:.3f} req/s each, "
        f"'{fleet.noisy}' at {args.noisy_factor:g}x; {args.duration:g} s measured after {args.warmup:g} s warm-up; "
        f"queue timeout {args.queue_timeout:g} s, max queue {args.max_queue}"
    )
    table = Table(title="Policies on the same trace (neighbour flooding)")
    for col in ("policy", "mean TTFT s", "p50 s", "p95 s", "p99 s", "req/s", "cold loads", "cold starts"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for col in ("timeouts", "rejected", "GPU busy", "slots busy"):
        table.add_column(col, justify="right")
    for name, p in out["policies"].items():
        table.add_row(
            name,
            _s(p["mean_ttft_s"]),
            _s(p["p50_ttft_s"]),
            _s(p["p95_ttft_s"]),
            _s(p["p99_ttft_s"]),
            _s(p["throughput_rps"]),
            str(p["cold_loads"]),
            str(p["cold_starts"]),
            str(p["timeouts"]),
            str(p["rejected"]),
            f"{p['gpu_busy']:.0%}",
            f"{p['slots_busy']:.0%}",
        )
    console.print(table)
    fair = out["fairness"]
    users = Table(title="p95 TTFT per user, s (rejected by the queue share in brackets)")
    users.add_column("user")
    for name in out["policies"]:
        users.add_column(name, justify="right")
    users.add_column("potluck, neighbour at 1x", justify="right")
    for user in fleet.users:
        cells = [
            f"{_s(p['per_user_p95_ttft_s'][user])} ({p['per_user_rejected'][user]})" for p in out["policies"].values()
        ]
        label = f"{user} ({args.noisy_factor:g}x)" if user == fleet.noisy else user
        unloaded = f"{_s(fair['per_user_p95_unloaded_s'][user])} ({fair['per_user_rejected_unloaded'][user]})"
        users.add_row(label, *cells, unloaded)
    console.print(users)
    console.print(
        f"Fairness (potluck): victims' p95 TTFT {_s(fair['victim_p95_unloaded_s'])} s with the neighbour at 1x "
        f"(GPU busy {fair['unloaded_gpu_busy']:.0%}), {_s(fair['victim_p95_flooded_s'])} s with it at "
        f"{fair['noisy_factor']:g}x (GPU busy {out['policies']['potluck']['gpu_busy']:.0%})"
    )
    for text, value, limit, met in targets(out):
        op = "<=" if "flooded" in text else ">="
        verdict = "[green]PASS[/green]" if met else "[red]MISS[/red]"
        console.print(f"{verdict}  {text} = {_s(value)} (target {op} {limit:g})")


def write_charts(out: dict[str, Any], fleet: Fleet, directory: Path) -> list[Path]:
    """PNG charts of the run; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    pol = out["policies"]
    names = list(pol)
    colors = ["#999999", "#5b8ff9", "#e8684a"]
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = directory / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [pol[n]["mean_ttft_s"] or 0 for n in names], 0.4, label="mean", color="#5b8ff9")
    ax.bar([x + 0.2 for x in xs], [pol[n]["p95_ttft_s"] or 0 for n in names], 0.4, label="p95", color="#e8684a")
    ax.set_xticks(list(xs), names)
    ax.set_yscale("log")
    ax.set_ylabel("TTFT, s (log)")
    ax.set_title("Time to first token per policy (same trace)")
    ax.legend()
    save(fig, "ttft.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(names, [pol[n]["cold_loads"] for n in names], color=colors)
    ax.set_ylabel("model loads in the window")
    ax.set_title("Cold loads per policy")
    save(fig, "cold_loads.png")

    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [pol[name]["per_user_p95_ttft_s"][u] or 0 for u in fleet.users]
        ax.bar([x + (i - 1) * width for x in range(len(fleet.users))], values, width, label=name, color=colors[i])
    ax.set_xticks(range(len(fleet.users)), [f"{u}\n(10x)" if u == fleet.noisy else u for u in fleet.users])
    ax.set_yscale("log")
    ax.set_ylabel("p95 TTFT, s (log)")
    ax.set_title("p95 TTFT per user")
    ax.legend(ncol=len(names), loc="upper center", bbox_to_anchor=(0.5, -0.18))
    save(fig, "per_user_p95.png")

    fair = out["fairness"]
    fig, ax = plt.subplots(figsize=(5, 4))
    unloaded, flooded = fair["victim_p95_unloaded_s"] or 0, fair["victim_p95_flooded_s"] or 0
    ax.bar(["neighbour at 1x", f"neighbour at {fair['noisy_factor']:g}x"], [unloaded, flooded], color=colors[1:])
    ax.axhline(
        unloaded * TARGET_FAIRNESS, color="black", linestyle="--", label=f"target: {TARGET_FAIRNESS:g}x unloaded"
    )
    ax.set_ylabel("victims' p95 TTFT, s")
    ax.set_title("Fairness (potluck)")
    ax.legend()
    save(fig, "fairness.png")
    return written


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--agents", type=int, default=24, help="agents in the fleet [24]")
    parser.add_argument("--duration", type=float, default=1200.0, help="simulated seconds measured [1200]")
    parser.add_argument("--warmup", type=float, default=180.0, help="simulated seconds of ramp-up before [180]")
    parser.add_argument(
        "--load", type=float, default=0.4, help="offered work / slot capacity with the neighbour flooding [0.4]"
    )
    parser.add_argument("--noisy-factor", type=float, default=10.0, help="the neighbour's flooding rate [10]")
    parser.add_argument("--queue-timeout", type=float, default=120.0, help="seconds a request may wait [120]")
    parser.add_argument("--max-queue", type=int, default=1024, help="queue bound [1024]")
    parser.add_argument(
        "--score-weights", default="", help="NAME=VALUE,... over the default score weights, as the hub's option"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    parser.add_argument(
        "--charts", type=Path, help=f"write PNG charts here [{DEFAULT_CHARTS.relative_to(REPO)}; none with --json]"
    )
    parser.add_argument("--no-charts", action="store_true", help="write no charts")
    args = parser.parse_args(argv)
    try:
        ScoreWeights.parse(args.score_weights)
    except ValueError as exc:
        parser.error(str(exc))
    if args.agents < 2 or args.duration <= 0 or args.warmup < 0 or args.load <= 0 or args.noisy_factor < 1:
        parser.error("need --agents >= 2, --duration > 0, --warmup >= 0, --load > 0, --noisy-factor >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = run_experiments(
        seed=args.seed,
        agents=args.agents,
        duration=args.duration,
        warmup=args.warmup,
        load=args.load,
        noisy_factor=args.noisy_factor,
        queue_timeout=args.queue_timeout,
        max_queue=args.max_queue,
        weights=args.score_weights,
    )
    fleet = build_fleet(args.seed, args.agents, load=args.load, noisy_factor=args.noisy_factor)
    charts = None if args.no_charts else args.charts or (None if args.json else DEFAULT_CHARTS)
    written = write_charts(out, fleet, charts) if charts is not None else []
    if args.json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return 0
    console = Console(width=None if sys.stdout.isatty() else 140)
    print_report(out, fleet, args, console)
    if written:
        console.print(f"charts: {', '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
