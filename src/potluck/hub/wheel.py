"""The agent's wheel as the hub hands it out: the running version of potluck, packed from what is installed.

A hub installed from a wheel has the package's files on disk and its metadata in a ``.dist-info``:
packing those two again gives a wheel of exactly the code that runs, with no build tools and no network.
A hub running from a source checkout (``pip install -e .``) builds the wheel from that tree with hatchling,
the project's build backend, when it is importable (the dev extra has it), because an editable install's
metadata is as old as the install while its code is the tree's; without hatchling it packs what is
installed, as above. An operator who wants other bytes served (the Docker image serves the very wheel it
was built from) names a file with ``--agent-wheel``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import io
import re
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import potluck

DISTRIBUTION = "potluck"
WHEEL_FILENAME = re.compile(r"^potluck-[A-Za-z0-9.+!_]+-py3-none-any\.whl$")

# Install-time files of a .dist-info that do not belong in a wheel; RECORD is written anew.
_INSTALL_ONLY = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})
# A fixed timestamp makes the same files give the same bytes (zip cannot store dates before 1980).
_EPOCH = (1980, 1, 1, 0, 0, 0)


class WheelError(Exception):
    """The hub cannot produce the agent's wheel (a broken install, a missing or misnamed --agent-wheel file)."""


@dataclass(frozen=True, slots=True)
class Wheel:
    """A wheel's file name and bytes, and the hex SHA-256 of the bytes."""

    filename: str
    data: bytes
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", hashlib.sha256(self.data).hexdigest())

    @property
    def sha256_line(self) -> str:
        """The ``.sha256`` file's text: what ``sha256sum -c`` reads."""
        return f"{self.sha256}  {self.filename}\n"


def read_wheel(path: Path) -> Wheel:
    """A wheel file given by the operator; its name (a link's target's) must be potluck's pure-Python wheel's."""
    path = path.resolve()
    if not WHEEL_FILENAME.match(path.name):
        raise WheelError(f"--agent-wheel {path}: expected a file named potluck-<version>-py3-none-any.whl")
    try:
        return Wheel(path.name, path.read_bytes())
    except OSError as exc:
        raise WheelError(f"--agent-wheel {path}: {exc.strerror}") from exc


def running_wheel() -> Wheel:
    """A wheel of the code this process runs: built from its source tree if it has one, else packed."""
    tree = source_tree()
    if tree is not None:
        try:
            from hatchling.builders.wheel import WheelBuilder
        except ImportError:
            pass
        else:
            with tempfile.TemporaryDirectory() as directory:
                (built,) = WheelBuilder(str(tree)).build(directory=directory, versions=["standard"])
                return Wheel(Path(built).name, Path(built).read_bytes())
    return pack_running()


def source_tree() -> Path | None:
    """The checkout potluck is imported from (``<tree>/src/potluck`` beside a pyproject.toml), if any."""
    package_dir = Path(potluck.__file__).resolve().parent
    tree = package_dir.parent.parent
    if package_dir.parent.name == "src" and (tree / "pyproject.toml").is_file():
        return tree
    return None


def pack_running() -> Wheel:
    """A wheel of the potluck package this process imported, with its installed metadata."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise WheelError("potluck is not installed (no metadata found): cannot pack the agent's wheel") from exc
    package_dir = Path(potluck.__file__).resolve().parent
    files = [
        (f"potluck/{path.relative_to(package_dir).as_posix()}", path)
        for path in sorted(package_dir.rglob("*"))
        if path.is_file() and _shipped(path.relative_to(package_dir))
    ]
    return pack(dist, files)


def _shipped(relative: Path) -> bool:
    if any(part == "__pycache__" or part.startswith(".") for part in relative.parts):
        return False
    return relative.suffix not in (".pyc", ".pyo")


def wheel_tag(dist: importlib.metadata.Distribution) -> str:
    """The compressed tag set of an installed distribution's ``WHEEL`` file (``py3-none-any``)."""
    tags = [
        line.split(":", 1)[1].strip()
        for line in (dist.read_text("WHEEL") or "").splitlines()
        if line.startswith("Tag:")
    ]
    if not tags:
        raise WheelError(f"{dist.metadata['Name']}: no Tag in its WHEEL file")
    parts = [t.split("-") for t in tags]
    return "-".join(".".join(sorted({p[i] for p in parts})) for i in range(3))


def pack(dist: importlib.metadata.Distribution, files: Iterable[tuple[str, Path]]) -> Wheel:
    """A wheel of ``files`` (archive name, path on disk) with the metadata of ``dist``, and a fresh RECORD."""
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
    dist_info = f"{name}-{dist.version}.dist-info"
    entries: list[tuple[str, bytes]] = [(arcname, path.read_bytes()) for arcname, path in files]
    for file in dist.files or ():
        parts = file.parts
        if len(parts) >= 2 and parts[0].endswith(".dist-info") and parts[-1] not in _INSTALL_ONLY:
            entries.append(("/".join((dist_info, *parts[1:])), Path(file.locate()).read_bytes()))
    if not any(arcname == f"{dist_info}/METADATA" for arcname, _ in entries):
        raise WheelError(f"{name}: no METADATA in its .dist-info")
    record = io.StringIO()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for arcname, data in sorted(entries):
            _write(archive, arcname, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.write(f"{arcname},sha256={digest},{len(data)}\n")
        record.write(f"{dist_info}/RECORD,,\n")
        _write(archive, f"{dist_info}/RECORD", record.getvalue().encode())
    return Wheel(f"{name}-{dist.version}-{wheel_tag(dist)}.whl", buffer.getvalue())


def _write(archive: zipfile.ZipFile, arcname: str, data: bytes) -> None:
    info = zipfile.ZipInfo(arcname, _EPOCH)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)
