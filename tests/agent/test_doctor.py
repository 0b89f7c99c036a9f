"""The agent doctor's parts that need no hub: clock skew, file modes, today's tally, and GPU sources on PATH.

The vendor tools are replaced at the OS edge only: a script named nvidia-smi or rocm-smi on PATH that prints
an output recorded on real hardware (tests/agent/fixtures).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import os
from pathlib import Path

import pytest

from potluck._shared.checkup import Level, private_file, writable_dir
from potluck._shared.clock import ManualClock
from potluck.agent.doctor import CLOCK_SKEW_WARN_S, clock_check, gpu_check
from potluck.agent.status import Tally
from potluck.protocol.agent import Usage

FIXTURES = Path(__file__).parent / "fixtures"
T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC).timestamp()


def http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def test_clock_in_step_with_the_hub_is_ok() -> None:
    check = clock_check(http_date(T0), T0 + 0.4, T0 + 0.6)
    assert check.level is Level.OK
    assert check.summary == "this machine's clock is 0.0 s ahead of the hub's"


def test_clock_skew_above_the_threshold_warns_with_the_fix() -> None:
    skew = CLOCK_SKEW_WARN_S + 3
    check = clock_check(http_date(T0), T0 + skew + 0.5, T0 + skew + 0.5)
    assert check.level is Level.WARN
    assert check.summary == f"this machine's clock is {skew:.1f} s ahead of the hub's"
    assert check.fix is not None
    assert "timedatectl set-ntp true" in check.fix
    behind = clock_check(http_date(T0), T0 - 60, T0 - 60)
    assert behind.summary == "this machine's clock is 60.5 s behind the hub's"


def test_a_slow_round_trip_widens_the_threshold() -> None:
    # The hub read its clock anywhere within the round trip: 8 s of skew inside a 10 s round trip proves nothing.
    assert clock_check(http_date(T0), T0 + 3, T0 + 13).level is Level.OK


@pytest.mark.parametrize("date", [None, "yesterday"])
def test_no_usable_date_header_is_a_warning(date: str | None) -> None:
    check = clock_check(date, T0, T0)
    assert check.level is Level.WARN
    assert "clock skew unknown" in check.summary


def test_private_file_modes(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("x")
    path.chmod(0o600)
    assert private_file("key", path).level is Level.OK
    path.chmod(0o640)
    check = private_file("key", path)
    assert (check.level, check.fix) == (Level.FAIL, f"chmod 600 {path}")
    assert private_file("hash", path, secret=False).level is Level.WARN
    assert private_file("key", tmp_path / "absent").level is Level.FAIL


def test_writable_dir(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    assert writable_dir("data dir", tmp_path).level is Level.OK
    tmp_path.chmod(0o755)
    assert writable_dir("data dir", tmp_path).fix == f"chmod 700 {tmp_path}"
    assert writable_dir("data dir", tmp_path / "new").level is Level.OK  # created on first start
    (tmp_path / "file").write_text("")
    assert writable_dir("data dir", tmp_path / "file").level is Level.FAIL


def test_tally_counts_today_and_starts_again_tomorrow() -> None:
    clock = ManualClock(epoch=dt.datetime(2026, 3, 1, 23, 59, tzinfo=dt.UTC))
    tally = Tally(clock)
    tally.record(failed=False, usage=Usage(prompt_tokens=5, completion_tokens=7, total_tokens=12))
    tally.record(failed=True, usage=None)
    assert (tally.day, tally.requests, tally.failed, tally.prompt_tokens, tally.completion_tokens) == (
        dt.date(2026, 3, 1), 2, 1, 5, 7
    )  # fmt: skip
    clock.advance(120)
    tally.roll()
    assert (tally.day, tally.requests, tally.completion_tokens) == (dt.date(2026, 3, 2), 0, 0)


def _tool(directory: Path, name: str, fixture: str) -> None:
    script = directory / name
    script.write_text(f"#!/bin/sh\ncat {FIXTURES / fixture}\n")
    script.chmod(0o755)


async def test_gpu_check_names_each_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tool(tmp_path, "nvidia-smi", "nvidia-smi-h100.csv")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin:/bin")
    check = await gpu_check()
    assert check.level is Level.OK
    assert check.summary.startswith("1 GPU(s): NVIDIA H100 80GB HBM3 (80 GiB) (NVML: ")
    assert f"nvidia-smi ({tmp_path / 'nvidia-smi'}): 1 GPU(s)" in check.summary
    assert "rocm-smi: not on PATH" in check.summary


async def test_gpu_check_with_rocm_smi_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tool(tmp_path, "rocm-smi", "rocm-smi-mi300x.json")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin:/bin")
    check = await gpu_check()
    assert check.level is Level.OK
    assert "nvidia-smi: not on PATH" in check.summary
    assert f"rocm-smi ({tmp_path / 'rocm-smi'}): " in check.summary
