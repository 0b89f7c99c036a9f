"""An agent's schedule: windows such as ``mon-fri 18:00-08:00``, parsed for the hub and shown back."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_GROUPS = {
    "daily": tuple(range(7)),
    "weekdays": tuple(range(5)),
    "weekends": (5, 6),
    "weekend": (5, 6),
}
_WINDOW = re.compile(r"^\s*(\S+)\s+(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})\s*$")
_WINDOW_EXAMPLES = "e.g. 'mon-fri 18:00-08:00', 'sat,sun 00:00-23:59' or 'daily 09:00-17:00'"


def _day(name: str, spec: str) -> int:
    name = name.lower()
    for names in (_DAY_NAMES, _FULL_DAY_NAMES):
        if name in names:
            return names.index(name)
    raise click.BadParameter(
        f"{spec!r}: unknown day {name!r} (mon, tue, wed, thu, fri, sat, sun; or daily, weekdays, weekends)"
    )


def _days(text: str, spec: str) -> list[int]:
    days: set[int] = set()
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            raise click.BadParameter(f"{spec!r}: empty day in {text!r}")
        if part in _DAY_GROUPS:
            days.update(_DAY_GROUPS[part])
            continue
        first, dash, last = part.partition("-")
        if not dash:
            days.add(_day(part, spec))
            continue
        start, end = _day(first, spec), _day(last, spec)
        days.update((start + i) % 7 for i in range((end - start) % 7 + 1))  # fri-mon wraps over the week end
    return sorted(days)


def _clock(text: str, spec: str) -> str:
    hours, _, minutes = text.partition(":")
    if not (0 <= int(hours) <= 23 and 0 <= int(minutes) <= 59):
        raise click.BadParameter(f"{spec!r}: {text} is not a time of day (HH:MM, 00:00 to 23:59)")
    return f"{int(hours):02d}:{int(minutes):02d}"


def parse_window(spec: str) -> dict[str, Any]:
    """``"mon-fri 18:00-08:00"`` as the hub's ``{"days": [0, 1, 2, 3, 4], "start": "18:00", "end": "08:00"}``.

    Days: ``mon`` … ``sun`` (or full names), ranges (``mon-fri``; ``fri-mon`` wraps), comma lists
    (``sat,sun``), ``daily``, ``weekdays``, ``weekends``. Monday = 0. A window that ends before it
    starts runs past midnight. Anything else is `click.BadParameter`.
    """
    match = _WINDOW.match(spec)
    if match is None:
        raise click.BadParameter(f"{spec!r} is not a window: expected 'DAYS HH:MM-HH:MM', {_WINDOW_EXAMPLES}")
    days = _days(match.group(1), spec)
    start, end = _clock(match.group(2), spec), _clock(match.group(3), spec)
    if start == end:
        raise click.BadParameter(f"{spec!r}: the window starts and ends at {start}, so it is empty")
    return {"days": days, "start": start, "end": end}


def local_timezone() -> str:
    """This machine's IANA zone name (``$TZ``, ``/etc/timezone``, ``/etc/localtime``, `time.tzname`), else UTC."""
    import contextlib
    import os
    import time
    from zoneinfo import ZoneInfo

    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    with contextlib.suppress(OSError):
        candidates.append(os.readlink("/etc/localtime"))
    candidates.extend(time.tzname)
    for candidate in candidates:
        name = candidate.split("zoneinfo/", 1)[-1].strip()
        if not name or name.startswith("/"):
            continue
        try:
            ZoneInfo(name)
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
            continue
        return name
    return "UTC"


def _format_days(days: Sequence[int]) -> str:
    wanted = sorted({d for d in days if isinstance(d, int) and 0 <= d <= 6})
    if len(wanted) == 7:
        return "daily"
    runs: list[list[int]] = []
    for day in wanted:
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{_DAY_NAMES[run[0]]}-{_DAY_NAMES[run[-1]]}")
        else:
            parts.extend(_DAY_NAMES[d] for d in run)
    return ",".join(parts)


def format_schedule(schedule: object) -> str:
    """The hub's ``schedule`` as one line: ``Europe/Berlin: mon-fri 18:00-08:00``, or ``always``."""
    if not isinstance(schedule, dict):
        return "always"
    windows = [w for w in schedule.get("windows", []) if isinstance(w, dict)]
    listed = "; ".join(f"{_format_days(w.get('days', []))} {w.get('start')}-{w.get('end')}" for w in windows)
    return f"{schedule.get('timezone', 'UTC')}: {listed or 'never (no windows)'}"
