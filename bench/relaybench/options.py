"""The command line: what to run, against which targets, for how long."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.relaybench.dashboards import DASH_TARGET
from bench.relaybench.scenarios import Scenario, scenario_table, select
from bench.relaybench.services import REPO

DESCRIPTION = (
    "Relay benchmark: the same load, side by side, straight to a fake backend, through Potluck, through LiteLLM."
)
DEFAULT_JSON = REPO / "bench" / "results" / "relay.json"
ALL_TARGETS = ("direct", "potluck", "litellm")


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
    dashboards: int = 0
    """Dashboard streams open during the extra `DASH_TARGET` runs (0: no such runs)."""
    dashboards_first: bool = False
    """Run `DASH_TARGET` before plain Potluck (to see how much the order alone moves the numbers)."""


def parse_args(argv: Sequence[str] | None) -> tuple[Options, list[Scenario]]:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="small counts and short windows (smoke test, < 60 s)")
    parser.add_argument("--scenarios", default="all", help="comma-separated scenarios or groups (nonstream, ...)")
    parser.add_argument("--targets", default=",".join(ALL_TARGETS), help="comma-separated: direct,potluck,litellm")
    parser.add_argument("--duration", type=float, help="measured seconds per scenario and target [8; quick 1]")
    parser.add_argument("--warmup", type=float, help="seconds of load before measuring [2; quick 0.4]")
    parser.add_argument("--loadgen-procs", type=int, default=1, help="load-generator processes [1]")
    parser.add_argument("--litellm-python", help="a Python with `litellm[proxy]` installed [this one]")
    parser.add_argument("--json-out", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--profile", action="store_true", help="py-spy the hub and agent during Potluck's runs")
    parser.add_argument(
        "--dashboards", type=int, default=0, help="also run Potluck with N dashboard streams open, side by side [0]"
    )
    parser.add_argument(
        "--dashboards-first", action="store_true", help="run the dashboards' row before plain Potluck's"
    )
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
    selected = [t for t in ALL_TARGETS if t in targets]
    if args.dashboards > 0 and "potluck" in selected:
        selected.insert(selected.index("potluck") + (0 if args.dashboards_first else 1), DASH_TARGET)
    opts = Options(
        quick=args.quick,
        duration=args.duration or (1.0 if args.quick else 8.0),
        warmup=args.warmup if args.warmup is not None else (0.4 if args.quick else 2.0),
        scenarios=names,
        targets=selected,
        loadgen_procs=max(1, args.loadgen_procs),
        litellm_python=args.litellm_python,
        json_out=args.json_out.resolve(),
        profile=args.profile,
        py_spy=args.py_spy,
        dashboards=max(0, args.dashboards),
        dashboards_first=args.dashboards_first,
    )
    return opts, select(names, args.quick)
