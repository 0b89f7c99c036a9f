"""A local wheelhouse of potluck's dependencies, packed from this test environment, for offline installs.

Tests that install potluck into a fresh virtual environment (the install script, the wheel smoke test)
point pip at it with ``--no-index --find-links``: pip then resolves the wheel's real ``Requires-Dist``
against real wheels, with no network, in seconds. Each dependency is packed from its installed files and
metadata by the very function the hub packs its agent wheel with (`potluck.hub.wheel.pack`).
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import io
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from potluck.hub.wheel import pack, wheel_tag


def requirements_of(wheel: bytes) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel's METADATA."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        parsed = email.parser.BytesParser().parsebytes(archive.read(metadata))
    return parsed.get_all("Requires-Dist") or []


def closure(requires: list[str], extras: tuple[str, ...] = ()) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions that ``requires`` (a wheel's, with ``extras``) need here, by canonical name."""
    found: dict[str, importlib.metadata.Distribution] = {}
    pending: list[tuple[list[str], tuple[str, ...]]] = [(requires, extras)]
    while pending:
        texts, wanted = pending.pop()
        for text in texts:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is not None and not any(marker.evaluate({"extra": e}) for e in (*wanted, "")):
                continue
            key = canonicalize_name(requirement.name)
            if key == "potluck":  # potluck[dev] -> potluck[hub]: the root's own extras
                pending.append((requires, tuple(sorted(requirement.extras))))
                continue
            if key in found:
                continue
            found[key] = importlib.metadata.distribution(requirement.name)
            pending.append((list(found[key].requires or ()), tuple(sorted(requirement.extras))))
    return found


def _files(dist: importlib.metadata.Distribution) -> list[tuple[str, Path]]:
    """The files a wheel of an installed distribution holds: its RECORD less scripts, bytecode and .dist-info."""
    listed = []
    for file in dist.files or ():
        parts = file.parts
        if parts[0] == ".." or "__pycache__" in parts or parts[0].endswith(".dist-info"):
            continue
        listed.append(("/".join(parts), Path(str(file.locate()))))
    return listed


def build_wheelhouse(
    directory: Path, *, wheel: bytes | None = None, requirements: tuple[str, ...] = (), extras: tuple[str, ...] = ()
) -> Path:
    """Write into ``directory`` a wheel of every distribution that ``wheel`` (with ``extras``) and
    ``requirements`` need, packed from this environment; returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = [*(requirements_of(wheel) if wheel is not None else ()), *requirements]
    for dist in closure(wanted, extras).values():
        wheel_tag(dist)  # refuse a distribution without wheel metadata before reading its files
        packed = pack(dist, _files(dist))
        (directory / packed.filename).write_bytes(packed.data)
    return directory
