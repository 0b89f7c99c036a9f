"""Profiling (``--profile``): py-spy on the hub and the agent during Potluck's measured windows."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.relaybench.options import Options
from bench.relaybench.scenarios import Scenario
from bench.relaybench.services import Service


@dataclass
class Profiler:
    name: str
    proc: asyncio.subprocess.Process
    output: Path


def start_profilers(
    opts: Options, scenario: Scenario, services: Sequence[Service], seconds: float, target: str = "potluck"
) -> list[asyncio.Task[Profiler]]:
    """Record ``services`` with py-spy for ``seconds`` when ``--profile`` asked for it."""
    if not opts.profile or opts.py_spy is None or not services:
        return []
    out_dir = opts.json_out.parent / "profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = []
    for service in services:
        # Potluck's own runs keep their old names; another target's (e.g. with dashboards open) is told apart.
        suffix = "" if target == "potluck" else f"-{target}"
        output = out_dir / f"{scenario.name}-{service.name}{suffix}.txt"
        argv = [opts.py_spy, "record", "--pid", str(service.proc.pid), "--duration", str(max(1, int(seconds)))]
        # --native shows the C below Python (uvloop, the parsers, the write syscalls); it pauses the process to sample.
        argv += ["--rate", "200", "--format", "raw", "--native", "--output", str(output)]
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
