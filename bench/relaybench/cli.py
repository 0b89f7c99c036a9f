"""The whole run: the load scenarios, then the idle agents, then the report and the JSON."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.relaybench.idle import IdleResult, run_idle
from bench.relaybench.machine import CPUS, raise_nofile, run_loop
from bench.relaybench.options import Options, parse_args
from bench.relaybench.profiling import print_profiles
from bench.relaybench.report import Check, print_report
from bench.relaybench.results import RunResult
from bench.relaybench.runner import run_load_scenarios
from bench.relaybench.scenarios import Kind, Scenario
from bench.relaybench.services import REPO


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


async def run(opts: Options, scenarios: Sequence[Scenario], console: Console) -> int:
    raise_nofile()
    env = environment()
    if env["loadavg_at_start"][0] > 0.5 * CPUS:
        console.print(f"[yellow]warning:[/] load average {env['loadavg_at_start'][0]:.2f}: the machine is not idle")
    notes: list[str] = []
    load = [s for s in scenarios if s.kind is not Kind.IDLE]
    idle_scenario = next((s for s in scenarios if s.kind is Kind.IDLE), None)
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
    items = print_report(console, scenarios, runs, peaks, idle, notes, opts.dashboards)
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


def main(argv: Sequence[str] | None = None) -> int:
    opts, scenarios = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 200)
    return run_loop(run(opts, scenarios, console))  # type: ignore[no-any-return]
