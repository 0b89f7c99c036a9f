"""bench/fleet.py: the fleet simulator's output, determinism and the scheduler's acceptance targets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.fleet import (
    TARGET_FAIRNESS,
    TARGET_VS_LEAST_LOADED,
    TARGET_VS_ROUND_ROBIN,
    run_experiments,
)
from bench.fleet_model import AgentSpec, Fleet, ModelSpec, Request, Simulation, build_fleet, build_trace

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--agents", "20", "--duration", "240", "--warmup", "60"]
POLICY_KEYS = {"mean_ttft_s", "p95_ttft_s", "throughput_rps", "cold_loads"}


def fleet_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / "fleet.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.fixture(scope="module")
def default_run() -> dict[str, Any]:
    return run_experiments()


@pytest.mark.slow
def test_json_output_has_the_required_keys_and_depends_only_on_the_seed() -> None:
    first = fleet_cli("--json", "--seed", "7", *SMALL).stdout
    out = json.loads(first)
    assert set(out) == {"policies", "fairness"}
    assert set(out["policies"]) == {"round_robin", "least_loaded", "potluck"}
    for policy in out["policies"].values():
        assert policy.keys() >= POLICY_KEYS
    assert out["fairness"].keys() >= {"victim_p95_unloaded_s", "victim_p95_flooded_s"}
    assert fleet_cli("--json", "--seed", "7", *SMALL).stdout == first
    assert fleet_cli("--json", "--seed", "8", *SMALL).stdout != first


@pytest.mark.slow
def test_potluck_mean_ttft_beats_round_robin_and_least_loaded(default_run: dict[str, Any]) -> None:
    policies = default_run["policies"]
    potluck = policies["potluck"]["mean_ttft_s"]
    assert policies["round_robin"]["mean_ttft_s"] >= TARGET_VS_ROUND_ROBIN * potluck
    assert policies["least_loaded"]["mean_ttft_s"] >= TARGET_VS_LEAST_LOADED * potluck
    assert policies["potluck"]["cold_loads"] < policies["least_loaded"]["cold_loads"]


@pytest.mark.slow
def test_a_flooding_neighbour_raises_the_victims_p95_ttft_by_at_most_half(default_run: dict[str, Any]) -> None:
    fairness = default_run["fairness"]
    assert fairness["victim_p95_flooded_s"] <= TARGET_FAIRNESS * fairness["victim_p95_unloaded_s"]
    # The flood must be a real one: the fleet is much busier with it.
    assert default_run["policies"]["potluck"]["gpu_busy"] >= 0.6 > fairness["unloaded_gpu_busy"]


def test_flooded_and_unloaded_traces_share_every_victim_request() -> None:
    fleet = build_fleet(3, 20)
    flooded = build_trace(fleet, 120, flooded=True, warmup=30)
    unloaded = build_trace(fleet, 120, flooded=False, warmup=30)
    assert [r for r in flooded if r.user != fleet.noisy] == [r for r in unloaded if r.user != fleet.noisy]
    noisy = [r for r in unloaded if r.user == fleet.noisy]
    assert set(noisy) <= set(flooded)
    assert len([r for r in flooded if r.user == fleet.noisy]) > 5 * len(noisy)


def test_requests_past_the_users_queue_share_are_rejected_for_that_user() -> None:
    fleet = build_fleet(3, 20, load=2.0)
    trace = build_trace(fleet, 120, flooded=True)
    result = Simulation(fleet, trace, (0.0, 120.0), "round_robin", max_queue=16, user_share=0.25).run()
    assert result.rejected[fleet.noisy] > 0
    accounted = len(result.ttft) + sum(result.timeouts.values()) + sum(result.rejected.values())
    assert accounted == sum(result.requests.values())


@pytest.mark.slow
def test_charts_are_written_as_png_files(tmp_path: Path) -> None:
    fleet_cli("--json", "--charts", str(tmp_path), *SMALL)
    names = {"ttft.png", "cold_loads.png", "per_user_p95.png", "fairness.png"}
    assert {p.name for p in tmp_path.iterdir()} == names
    for name in names:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(data) > 1000


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "load"), [(6, 0.5), (4, 0.55)])
def test_potluck_does_not_fall_into_a_cold_load_storm_at_higher_load(seed: int, load: float) -> None:
    fleet = build_fleet(seed, 24, load=load)
    trace = build_trace(fleet, 600, flooded=True, warmup=180)
    runs = {p: Simulation(fleet, trace, (180.0, 780.0), p).run() for p in ("round_robin", "least_loaded", "potluck")}
    mean = {p: sum(t for _, t in r.ttft) / len(r.ttft) for p, r in runs.items()}
    assert mean["round_robin"] >= TARGET_VS_ROUND_ROBIN * mean["potluck"]
    assert mean["least_loaded"] >= TARGET_VS_LEAST_LOADED * mean["potluck"]
    assert runs["potluck"].cold_loads * 10 < runs["least_loaded"].cold_loads
    assert sum(runs["potluck"].timeouts.values()) == 0


def test_a_request_waiting_for_a_hot_slot_is_started_cold_by_the_hubs_poll() -> None:
    # "hot" is busy for minutes with a long answer; a 20 GB load on "cold" takes 60 s (its disk is slow).
    hot = AgentSpec("hot", 24.0, 100.0, 1.0, 1.0, 1, ("big",), ("big",))
    cold = AgentSpec("cold", 24.0, 100.0, 1.0, 0.25, 1, ("big",), ())
    fleet = Fleet((hot, cold), (ModelSpec("big", 20.0, 1.0),), ("u",), "u", 1.0, 0.1, (1,))
    trace = [Request(0.0, "u", "big", 100, 2000), Request(0.1, "u", "big", 100, 10)]
    result = Simulation(fleet, trace, (0.0, 1000.0), "potluck").run()
    # The second waits for a hot slot (expected in ~5 s) until it has waited as long as a load is
    # expected to take (20 s at 1 GB/s), then the next poll starts it on "cold": not after the long answer.
    (_, first), (_, second) = result.ttft
    assert first < 1.0
    assert 80.0 < second < 82.0
    assert result.cold_loads == 1
