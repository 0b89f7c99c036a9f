"""Owner controls: availability windows in the owner's time zone, and the scheduler's rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from potluck._shared.clock import ManualClock
from potluck.hub.controls import OwnerControls, Schedule, Window, validate_schedule
from potluck.hub.errors import InvalidRequestError
from potluck.hub.scheduler import Scheduler

# Monday 2026-11-23 12:00 UTC is 13:00 in Berlin (CET).
MONDAY_NOON_UTC = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _controls(*windows: Window, tz: str = "Europe/Berlin") -> OwnerControls:
    return OwnerControls(schedule=Schedule(timezone=tz, windows=list(windows)))


def test_windows_are_read_in_the_owners_time_zone() -> None:
    assert _controls(Window([0], "13:00", "14:00")).available(MONDAY_NOON_UTC)
    assert not _controls(Window([0], "12:00", "13:00")).available(MONDAY_NOON_UTC)
    assert not _controls(Window([1, 2], "00:00", "23:59")).available(MONDAY_NOON_UTC)


def test_a_window_ending_before_it_starts_runs_past_midnight() -> None:
    night = _controls(Window([6], "22:00", "14:00"))  # Sunday 22:00 to Monday 14:00
    assert night.available(MONDAY_NOON_UTC)
    assert not _controls(Window([0], "22:00", "06:00")).available(MONDAY_NOON_UTC)


def test_paused_wins_and_no_schedule_means_always() -> None:
    assert OwnerControls().available(MONDAY_NOON_UTC)
    assert not OwnerControls(paused=True).available(MONDAY_NOON_UTC)


def test_bad_schedules_are_refused() -> None:
    for schedule in (
        Schedule(timezone="Mars/Olympus"),
        Schedule(windows=[Window([7], "10:00", "11:00")]),
        Schedule(windows=[Window([1], "25:00", "11:00")]),
    ):
        with pytest.raises(InvalidRequestError):
            validate_schedule(schedule)


def test_scheduler_honours_availability_own_only_and_own_first() -> None:
    scheduler = Scheduler(ManualClock())
    scheduler.upsert_agent("alices", ["m"], 4, owner_rules=(True, "alice", False, True))
    scheduler.upsert_agent("idle", ["m"], 4)
    # Alice's request prefers her own agent over an idle one; Bob's goes to the least loaded.
    assert scheduler.acquire("m", requester="alice") == "alices"
    assert scheduler.acquire("m", requester="bob") == "idle"
    scheduler.upsert_agent("alices", ["m"], 4, owner_rules=(True, "alice", True, False))
    assert scheduler.acquire("m", requester="bob") == "idle"  # Alice's agent now serves only Alice
    scheduler.upsert_agent("idle", ["m"], 4, owner_rules=(False, "carol", False, False))  # paused
    assert scheduler.acquire("m", requester="bob") is None
    assert not scheduler.routable("m", requester="bob")
    assert scheduler.acquire("m", requester="alice") == "alices"
