"""What one run of one scenario against one target measured, summarised from the load generators' samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.relaybench.loadgen import LoadResult
from bench.relaybench.scenarios import Scenario


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
    streaming = scenario.streaming
    done = [s for r in results for s in r.samples if start <= s[2] <= stop]
    good = [s for s in done if s[3] == 200 and (s[5] or not streaming)]
    late = sum(1 for r in results for s in r.samples if s[2] > stop and s[3] == 200 and (s[5] or not streaming))
    latencies = sorted((s[2] - s[0]) * 1000 for s in good)
    ttfts = sorted((s[1] - s[0]) * 1000 for s in good) if streaming else []
    # Chunks relayed: the SSE events of each stream, OpenAI's [DONE] excluded.
    framing = 0 if scenario.api.end_event_is_chunk else 1
    chunks = sum(s[4] - framing for s in good) if streaming else 0
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
