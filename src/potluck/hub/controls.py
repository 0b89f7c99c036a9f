"""What an agent's owner decides about it: pause, availability windows, whose requests it serves.

Stored as JSON on the agent; read by the registry, which tells the scheduler. Windows are days and
hours in the owner's time zone (``{"timezone": "Europe/Berlin", "windows": [{"days": [0, 1, 2, 3, 4],
"start": "18:00", "end": "08:00"}]}``, Monday = 0; a window ending before it starts runs past
midnight). No schedule: always available.
"""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from potluck.hub.bounds import MAX_SCHEDULE_WINDOWS
from potluck.hub.errors import InvalidRequestError


class Window(msgspec.Struct, frozen=True):
    """Hours on some days of the week when the agent takes work."""

    days: list[int]
    """Days of the week, Monday = 0 to Sunday = 6."""
    start: str
    """Start time, ``HH:MM`` in the schedule's time zone."""
    end: str
    """End time, ``HH:MM``; before ``start``: the window runs past midnight."""


class Schedule(msgspec.Struct, frozen=True):
    """When the agent is available: any of its windows, in its time zone."""

    timezone: str = "UTC"
    """IANA time zone name, e.g. ``Europe/Berlin``."""
    windows: list[Window] = []
    """The windows; none: never available."""


class OwnerControls(msgspec.Struct, frozen=True, omit_defaults=True):
    paused: bool = False
    """No new work until resumed."""
    own_requests_only: bool = False
    """Serve only requests made with the owner's own keys."""
    own_requests_first: bool = False
    """The owner's requests are preferred over everyone else's on this agent."""
    schedule: Schedule | None = None
    """Available only inside these windows (None: always)."""

    def available(self, now: datetime) -> bool:
        if self.paused:
            return False
        if self.schedule is None:
            return True
        local = now.astimezone(ZoneInfo(self.schedule.timezone))
        clock = local.time()
        for window in self.schedule.windows:
            start, end = _hhmm(window.start), _hhmm(window.end)
            if start <= end:
                if local.weekday() in window.days and start <= clock < end:
                    return True
            elif (local.weekday() in window.days and clock >= start) or (
                (local.weekday() - 1) % 7 in window.days and clock < end
            ):
                return True
        return False


def _hhmm(text: str) -> time:
    hours, _, minutes = text.partition(":")
    return time(int(hours), int(minutes or 0))


def parse_controls(raw: str | None) -> OwnerControls:
    if not raw:
        return OwnerControls()
    return msgspec.json.decode(raw, type=OwnerControls)


def validate_schedule(schedule: Schedule) -> None:
    try:
        ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory ("America"), a name too long
        raise InvalidRequestError(f"Unknown time zone {schedule.timezone[:64]!r}", param="schedule") from None
    if len(schedule.windows) > MAX_SCHEDULE_WINDOWS:
        raise InvalidRequestError(f"A schedule has at most {MAX_SCHEDULE_WINDOWS} windows", param="schedule")
    for window in schedule.windows:
        days = window.days
        if not days or any(not 0 <= d <= 6 for d in days) or len(set(days)) != len(days):
            raise InvalidRequestError("Window days are distinct, 0 (Monday) to 6 (Sunday)", param="schedule")
        for value in (window.start, window.end):
            try:
                _hhmm(value)
            except ValueError:
                raise InvalidRequestError(f"Window times are HH:MM, not {value!r}", param="schedule") from None
