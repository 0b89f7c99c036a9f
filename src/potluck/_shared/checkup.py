"""What `potluck doctor` reports: one `Check` per question, OK, WARN or FAIL, with the fix for anything not OK.

The agent's checks (agent/doctor.py) and the hub's (hub/doctor.py) both return these; the file and
directory checks that both sides need live here.
"""

from __future__ import annotations

import enum
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path


class Level(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Check:
    """One finding. ``fix`` says what to do about a WARN or FAIL, as a command where there is one."""

    name: str
    level: Level
    summary: str
    fix: str | None = None


def private_file(name: str, path: Path, *, missing: Check | None = None, secret: bool = True) -> Check:
    """A file only its owner may read: a secret readable by others FAILs (a hash of one WARNs)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return missing or Check(name, Level.FAIL, f"{path} is missing")
    except OSError as exc:
        return Check(name, Level.FAIL, f"cannot read {path}: {exc.strerror}", f"check the permissions of {path.parent}")
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISREG(info.st_mode):
        return Check(name, Level.FAIL, f"{path} is not a regular file", f"remove {path}")
    if info.st_uid != os.getuid():
        return Check(name, Level.FAIL, f"{path} belongs to uid {info.st_uid}, not to this user", f"chown $USER {path}")
    if mode & 0o077:
        level = Level.FAIL if secret else Level.WARN
        return Check(name, level, f"{path} has mode {mode:04o}: other users can read it", f"chmod 600 {path}")
    if not os.access(path, os.R_OK):
        return Check(name, Level.FAIL, f"{path} has mode {mode:04o}: this user cannot read it", f"chmod 600 {path}")
    return Check(name, Level.OK, f"{path} (mode {mode:04o})")


def writable_dir(name: str, path: Path, *, private: bool = True) -> Check:
    """A directory this user owns and can create files in (by trying it); ``private`` wants no access for others."""
    if not path.exists():
        return Check(name, Level.OK, f"{path} does not exist yet; it is created on first start")
    if not path.is_dir():
        return Check(name, Level.FAIL, f"{path} is not a directory", f"move {path} away or choose --data-dir")
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check(name, Level.FAIL, f"cannot create files in {path}: {exc.strerror}", f"chown -R $USER {path}")
    mode = stat.S_IMODE(path.stat().st_mode)
    if private and mode & 0o077:
        return Check(name, Level.WARN, f"{path} has mode {mode:04o}: other users can list it", f"chmod 700 {path}")
    return Check(name, Level.OK, f"{path} is writable (mode {mode:04o})")
