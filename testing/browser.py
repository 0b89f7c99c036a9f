"""Debian's Chromium driven by Playwright (its own browser download is not reachable here).

`chromium_path()` finds the browser; tests call `require_chromium()`, which skips without it except
under ``CI=true``, where a missing browser fails the run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_path() -> str | None:
    for candidate in (os.environ.get("POTLUCK_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def require_chromium() -> str:
    """The browser's path; a skip when it is missing, a failure when it is missing under CI=true."""
    path = chromium_path()
    if path is None:
        message = "chromium is not installed (scripts/install-system installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
