"""The fleet simulator's claim, checked live: on real hub and agent processes in front of fake Ollamas that load
and evict models, the potluck policy beats least_loaded and round_robin on TTFT and on cold loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fleet_live import POLICIES, compare, document, make_fleet, make_trace

pytestmark = pytest.mark.slow


@pytest.mark.timeout(150)  # about 35 s alone; more on a busy CI machine, where a kill would only be noise
def test_potluck_policy_beats_least_loaded_and_round_robin_on_a_live_fleet(tmp_path: Path) -> None:
    # Cold loads of 0.5 s and more dwarf a loaded machine's jitter (milliseconds), and with six agents
    # holding one or two of six models, the other policies meet a cold model on most requests.
    fleet = make_fleet(6, load_delay=(0.5, 1.2))
    trace = make_trace(56, 8.0, fleet.models)

    results = compare(POLICIES, fleet, trace, tmp_path)

    summary = document(results, fleet, trace)["policies"]
    assert all(r.errors == 0 and r.requests == len(trace) for r in results.values()), summary
    potluck, least_loaded, round_robin = results["potluck"], results["least_loaded"], results["round_robin"]
    assert potluck.mean_ttft_s < 0.5 * least_loaded.mean_ttft_s, summary
    assert potluck.mean_ttft_s < 0.5 * round_robin.mean_ttft_s, summary
    assert potluck.cold_loads < least_loaded.cold_loads / 2, summary
    assert potluck.cold_loads < round_robin.cold_loads / 2, summary
