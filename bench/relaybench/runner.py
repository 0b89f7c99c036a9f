"""The bench: the services of each target, and one measured run of a scenario against a target."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from rich.console import Console

from bench.relaybench.dashboards import DASH_TARGET, open_dashboards, viewer_token
from bench.relaybench.loadgen import LoadResult, LoadSpec, run_load
from bench.relaybench.machine import CLK_TCK, machine_ticks, raise_nofile
from bench.relaybench.options import Options
from bench.relaybench.profiling import finish_profilers, start_profilers
from bench.relaybench.report import errors_cell, fmt
from bench.relaybench.results import RunResult, summarize
from bench.relaybench.scenarios import BURST_CHUNKS, Kind, Scenario, build_request
from bench.relaybench.services import (
    LITELLM_KEY,
    Service,
    admin_post,
    agent_argv,
    litellm_argv,
    spawn,
    start_hub,
    start_litellm,
    wait_listening,
    wait_model,
    wait_quiet,
)


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
    viewer_token: str = ""
    """An admin user's session, for the dashboards of `DASH_TARGET` runs."""
    notes: list[str] = field(default_factory=list)

    def endpoint(self, target: str) -> tuple[str, str | None]:
        if target == "direct":
            return self.backend.url, None
        if target in ("potluck", DASH_TARGET) and self.hub is not None:
            return self.hub.url, self.api_key
        if target == "litellm" and self.litellm is not None:
            return self.litellm.url, LITELLM_KEY
        raise ValueError(target)

    def services(self, target: str) -> list[Service]:
        if target in ("potluck", DASH_TARGET):
            return [s for s in (self.hub, self.agent, self.backend) if s is not None]
        if target == "litellm":
            return [s for s in (self.litellm, self.backend) if s is not None]
        return [self.backend]

    def all_services(self) -> list[Service]:
        return [s for s in (self.backend, self.hub, self.agent, self.litellm) if s is not None]

    def profiled(self, target: str) -> list[Service]:
        """The services ``--profile`` records: the hub and the agent, during Potluck's runs."""
        if target not in ("potluck", DASH_TARGET):
            return []
        return [s for s in (self.hub, self.agent) if s is not None]


async def start_bench(opts: Options, tmp: Path, pool: ProcessPoolExecutor, stack: contextlib.AsyncExitStack) -> Bench:
    # `--messages`: `direct` gets Anthropic's Messages from the backend itself; the agent, which takes the
    # backend for a generic OpenAI server, translates them through chat completions.
    argv = [sys.executable, "-m", "testing.fake_backend", "--port", "0", "--chunks", str(BURST_CHUNKS), "--messages"]
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
        agent = spawn("agent", agent_argv(hub.url, token, bench.backend.url, bench.tmp / "agent-data"), bench.tmp)
        stack.callback(agent.stop)
        bench.agent = agent
        await wait_model(http, hub.url, bench.api_key)
        if bench.opts.dashboards:
            bench.viewer_token = await viewer_token(http, hub.url)


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
    stagger = scenario.stream_s if scenario.kind is Kind.PACED else 0.0
    start_at = time.monotonic() + lead
    measure_from = start_at + max(opts.warmup, stagger + (0.3 if opts.quick else 1.0))
    measure_to = measure_from + opts.duration
    grace = (2.0 if opts.quick else 5.0) + 2 * scenario.stream_s + (25.0 if target == "litellm" else 0.0)
    return start_at, measure_from, measure_to, measure_to + grace, stagger


async def run_one(bench: Bench, scenario: Scenario, target: str) -> RunResult:
    if target != DASH_TARGET or bench.hub is None:
        return await _measure(bench, scenario, target)
    pages = await open_dashboards(bench.hub.url, bench.viewer_token, bench.opts.dashboards, bench.tmp)
    started, cpu_before = time.monotonic(), pages.cpu_s()
    try:
        return await _measure(bench, scenario, target)
    finally:
        cores = (pages.cpu_s() - cpu_before) / (time.monotonic() - started)
        bench.notes.append(
            f"{scenario.name} → {target}: the {bench.opts.dashboards} dashboards' own process (not the hub) kept "
            f"{cores:.3f} cores busy reading their streams, on the same machine"
        )
        await asyncio.to_thread(pages.stop)


async def _measure(bench: Bench, scenario: Scenario, target: str) -> RunResult:
    services = bench.services(target)
    await wait_quiet(bench.all_services())
    url, token = bench.endpoint(target)
    host, _, port = url.removeprefix("http://").partition(":")
    request = build_request(host, int(port), token, scenario)
    start_at, measure_from, measure_to, hard_stop, stagger = plan_times(bench.opts, scenario, target)
    times = (start_at, measure_from, measure_to, hard_stop, stagger)
    specs = [
        LoadSpec(host, int(port), request, share, *times, stream_end=scenario.api.stream_end)
        for share in split_concurrency(scenario.concurrency, bench.opts.loadgen_procs)
    ]
    loop = asyncio.get_running_loop()
    futures = [loop.run_in_executor(bench.pool, run_load, spec) for spec in specs]
    everyone = bench.all_services()
    await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
    cpu_before = {s.name: s.cpu_s() for s in everyone}
    ticks_before = machine_ticks()
    profilers = start_profilers(bench.opts, scenario, bench.profiled(target), measure_to - measure_from, target)
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
                        f"  ttft p50 {fmt(run.ttft_p50_ms, 2)} ms  err {errors_cell(run) or 0}"
                    )
            for service in bench.all_services():
                peaks[service.name] = service.peak_rss_kb() / 1024
            notes.extend(bench.notes)  # those of the start, and those the runs added
    return runs, peaks
