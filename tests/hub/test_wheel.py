"""The agent wheel the hub serves: packed from what is installed, or read from --agent-wheel."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest

import potluck
from potluck.hub.wheel import WheelError, pack_running, read_wheel, running_wheel, source_tree

PACKAGE = Path(potluck.__file__).resolve().parent


def test_packing_the_running_package_ships_every_file_and_its_metadata() -> None:
    wheel = pack_running()
    assert wheel.filename == f"potluck-{potluck.__version__}-py3-none-any.whl"
    archive = zipfile.ZipFile(io.BytesIO(wheel.data))
    names = archive.namelist()
    expected = {
        "potluck/" + p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert {n for n in names if n.startswith("potluck/")} == expected
    dist_info = f"potluck-{potluck.__version__}.dist-info/"
    assert {dist_info + "METADATA", dist_info + "WHEEL", dist_info + "RECORD", dist_info + "entry_points.txt"} <= set(
        names
    )
    assert not any(n.endswith(("INSTALLER", "direct_url.json", "REQUESTED")) for n in names)
    record = archive.read(dist_info + "RECORD").decode().splitlines()
    assert len(record) == len(names)
    assert archive.testzip() is None


def test_packing_twice_gives_the_same_bytes() -> None:
    assert pack_running().sha256 == pack_running().sha256


def test_an_agent_wheel_file_is_served_under_its_own_or_its_links_target_name(tmp_path: Path) -> None:
    target = tmp_path / "potluck-9.9.9-py3-none-any.whl"
    target.write_bytes(b"PK not really")
    link = tmp_path / "agent.whl"
    link.symlink_to(target.name)
    wheel = read_wheel(link)
    assert wheel.filename == target.name
    assert wheel.sha256_line.endswith(f"  {target.name}\n")


@pytest.mark.parametrize(
    "name", ["agent.whl", "potluck-1.0-cp311-cp311-linux_x86_64.whl", "other-1.0-py3-none-any.whl"]
)
def test_a_misnamed_or_missing_agent_wheel_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"x")
    with pytest.raises(WheelError, match=re.escape("expected a file named potluck-<version>-py3-none-any.whl")):
        read_wheel(path)
    with pytest.raises(WheelError, match="No such file"):
        read_wheel(tmp_path / "potluck-1.0-py3-none-any.whl")


def test_from_a_source_checkout_the_wheel_is_built_from_the_tree() -> None:
    tree = source_tree()
    if tree is None:
        pytest.skip("potluck is installed, not run from a checkout: pack_running is the path, tested above")
    try:
        import hatchling  # noqa: F401
    except ImportError:
        pytest.fail("hatchling is in the dev extra: pip install -e '.[dev]'")
    built = zipfile.ZipFile(io.BytesIO(running_wheel().data))
    packed = zipfile.ZipFile(io.BytesIO(pack_running().data))
    package = {n for n in packed.namelist() if n.startswith("potluck/")}
    assert {n for n in built.namelist() if n.startswith("potluck/")} == package
    for name in package:
        assert built.read(name) == packed.read(name), name
    metadata = built.read(f"potluck-{potluck.__version__}.dist-info/METADATA").decode()
    assert f"Version: {potluck.__version__}" in metadata
    assert (tree / "pyproject.toml").is_file()
