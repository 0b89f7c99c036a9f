"""The report: the targets the design aims at (PASS/MISS) and the tables printed at the end of a run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from rich.console import Console
from rich.table import Table

from bench.relaybench.dashboards import DASH_TARGET
from bench.relaybench.idle import IdleResult
from bench.relaybench.machine import CPUS
from bench.relaybench.results import RunResult
from bench.relaybench.scenarios import Scenario


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
    plain, dash = c1p, _find(runs, "nonstream-c1", DASH_TARGET)
    if plain is not None and dash is not None:
        result.append(Check("open dashboards: c=1 p50 latency change", _change(dash, plain, "latency"), 5, "%"))
        result.append(Check("open dashboards: c=1 RPS drop", _change(dash, plain, "rps"), 5, "%"))
    if idle is not None:
        note = "" if idle.online_at_measurement >= 10_000 else f"extrapolated from {idle.online_at_measurement} agents"
        result.append(Check("hub RSS with 10,000 idle agents", idle.hub_rss_at_10k_mb, 300, "MB", note=note))
    return result


def _change(dash: RunResult, plain: RunResult, what: Literal["latency", "rps", "ttft"]) -> float | None:
    """How much worse, in %, the run with dashboards open is than the one without (negative: better)."""
    if what == "rps":
        return None if not dash.rps else (plain.rps / dash.rps - 1) * 100
    a, b = (dash.latency_p50_ms, plain.latency_p50_ms) if what == "latency" else (dash.ttft_p50_ms, plain.ttft_p50_ms)
    return None if a is None or not b else (a / b - 1) * 100


def dashboards_table(runs: Sequence[RunResult], scenarios: Mapping[str, Scenario], count: int) -> Table:
    table = Table(title=f"Potluck with {count} dashboard streams open vs none (same run; + is worse)")
    headers = ("scenario", "RPS none", f"RPS {count}", "RPS drop %", "p50 none", f"p50 {count}", "p50 change %")
    for header in headers:
        table.add_column(header, justify="left" if header == "scenario" else "right")
    for dash in (r for r in runs if r.target == DASH_TARGET):
        plain = _find(runs, dash.scenario, "potluck")
        if plain is None:
            continue
        streaming = scenarios[dash.scenario].streaming

        def p50(run: RunResult, streaming: bool = streaming) -> float | None:
            return run.ttft_p50_ms if streaming else run.latency_p50_ms

        table.add_row(
            dash.scenario + (" (TTFT)" if streaming else ""),
            fmt(plain.rps, 0),
            fmt(dash.rps, 0),
            fmt(_change(dash, plain, "rps")),
            fmt(p50(plain), 2),
            fmt(p50(dash), 2),
            fmt(_change(dash, plain, "ttft" if streaming else "latency")),
        )
    return table


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


def errors_cell(run: RunResult) -> str:
    """Everything that went wrong in a run, as one count (blank when nothing did)."""
    total = run.failed + run.io_errors + run.unfinished
    return str(total) if total else ""


def _paths(runs: Sequence[RunResult], scenarios: Mapping[str, Scenario]) -> str:
    return ", ".join(dict.fromkeys(scenarios[run.scenario].api.path for run in runs))


def nonstream_table(runs: Sequence[RunResult], scenarios: Mapping[str, Scenario]) -> Table:
    shown = [run for run in runs if not scenarios[run.scenario].streaming]
    table = Table(title=f"Non-streaming {_paths(shown, scenarios)} (64-token answers)", title_justify="left")
    for header in ("scenario", "target", "RPS", "p50 ms", "p99 ms", "added p50 ms", "err"):
        table.add_column(header, justify="left" if header in ("scenario", "target") else "right")
    for name in PROCESS_COLUMNS:
        table.add_column(f"{name} µs/req", justify="right")
    table.add_column("busy cores (other)", justify="right")
    for run in shown:
        direct = _find(runs, run.scenario, "direct")
        added = None if run.target == "direct" or direct is None else _diff(run.latency_p50_ms, direct.latency_p50_ms)
        table.add_row(
            run.scenario,
            run.target,
            fmt(run.rps, 0),
            fmt(run.latency_p50_ms, 2),
            fmt(run.latency_p99_ms, 2),
            fmt(added, 2),
            errors_cell(run),
            *_cpu_cells(run, "request"),
            _machine_cell(run),
        )
    return table


def stream_table(runs: Sequence[RunResult], scenarios: Mapping[str, Scenario]) -> Table:
    shown = [run for run in runs if scenarios[run.scenario].streaming]
    title = f"Streaming {_paths(shown, scenarios)} (burst: 64 chunks at once; paced: 20 chunks/s)"
    table = Table(title=title, title_justify="left")
    for header in ("scenario", "target", "streams/s", "chunks/s", "TTFT p50", "TTFT p99", "added p50/p99", "err"):
        table.add_column(header, justify="left" if header in ("scenario", "target") else "right")
    for name in PROCESS_COLUMNS:
        table.add_column(f"{name} µs/chunk", justify="right")
    table.add_column("busy cores (other)", justify="right")
    for run in shown:
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
            errors_cell(run),
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
    scenarios: Sequence[Scenario],
    runs: Sequence[RunResult],
    peaks: dict[str, float],
    idle: IdleResult | None,
    bench_notes: list[str],
    dashboards: int = 0,
) -> list[Check]:
    by_name = {scenario.name: scenario for scenario in scenarios}
    if any(not by_name[r.scenario].streaming for r in runs):
        console.print(nonstream_table(runs, by_name))
    if any(by_name[r.scenario].streaming for r in runs):
        console.print(stream_table(runs, by_name))
    if dashboards:
        console.print(dashboards_table(runs, by_name, dashboards))
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
