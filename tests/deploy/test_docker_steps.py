"""The image's build, install and run steps, executed as a script in clean virtual environments, offline.

The Dockerfile's every RUN is a step of deploy/docker-steps.sh (tests/deploy/test_deploy_files.py pins
that), and this test runs the same script on this machine, which has no Docker daemon:

1. `build`: `python -m build --sdist --wheel` from a copy of only what .dockerignore lets into the
   image's build context, in a fresh venv standing for the builder stage's Python; hatchling comes
   from a local wheelhouse through build isolation, as it would from PyPI. Both artefacts pass
   `twine check --strict`; the wheel holds every file under src/potluck (package data included: the
   migrations, the install script, and the dashboard's templates and static files once they exist) and
   nothing else of the tree.
2. `install`: a new venv (no system site-packages, not editable) with the wheel and its hub extra,
   dependencies from the wheelhouse (``PIP_NO_INDEX``/``PIP_FIND_LINKS``, which pip reads itself).
3. run: that venv's `potluck hub` serves (`docker-steps health` passes, as the HEALTHCHECK runs it),
   hands out the very wheel it was built from (`POTLUCK_HUB_AGENT_WHEEL`, as the image sets it) and,
   without it, a wheel packed from its installation with the same files; the venv's `potluck agent`
   connects with its token from a file.

Not covered: the python:3.11-slim base image itself, `useradd` (the `user` step), and Docker's own
handling of USER, VOLUME and HEALTHCHECK.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from testing.processes import AgentProcess, HubProcess
from testing.wheelhouse import build_wheelhouse

ROOT = Path(__file__).resolve().parent.parent.parent
STEPS = ROOT / "deploy" / "docker-steps.sh"


def clean_env(wheelhouse: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "POTLUCK_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def steps(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(["sh", str(STEPS), *args], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def build_context(target: Path) -> Path:
    """What .dockerignore lets into the build context, laid out as the builder stage's COPY lines do."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, target / name)
    shutil.copytree(ROOT / "src", target / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def shipped_sources() -> set[str]:
    return {
        "potluck/" + p.relative_to(ROOT / "src" / "potluck").as_posix()
        for p in (ROOT / "src" / "potluck").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_the_image_steps_build_install_and_run_a_hub_and_an_agent_from_the_wheel_alone(tmp_path: Path) -> None:
    wheelhouse = build_wheelhouse(tmp_path / "wheelhouse", requirements=("build>=1.2", "hatchling>=1.25"))
    builder = tmp_path / "builder-python"  # stands for the builder stage's python, with its pip
    subprocess.run([sys.executable, "-m", "venv", str(builder)], check=True)
    env = clean_env(wheelhouse, PYTHON=str(builder / "bin" / "python"))

    dist = tmp_path / "dist"
    steps(env, "build", str(build_context(tmp_path / "context")), str(dist))
    (wheel,) = dist.glob("potluck-*-py3-none-any.whl")
    (sdist,) = dist.glob("potluck-*.tar.gz")
    twine = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert twine.returncode == 0, twine.stdout + twine.stderr
    names = set(zipfile.ZipFile(wheel).namelist())
    package = {n for n in names if not n.startswith("potluck-")}
    assert package == shipped_sources()
    assert any(n.startswith("potluck/store/migrations/versions/") for n in package)
    assert "potluck/api/install.sh" in package
    for data_dir in ("potluck/web/templates/", "potluck/web/static/"):
        in_tree = {n for n in shipped_sources() if n.startswith(data_dir)}
        assert in_tree <= package, f"{data_dir} files missing from the wheel"

    # The runtime stage: a venv of its own, from the wheel and the wheelhouse only.
    build_wheelhouse(wheelhouse, wheel=wheel.read_bytes(), extras=("hub", "cluster"))
    venv = tmp_path / "venv"
    out = steps(clean_env(wheelhouse), "install", str(dist), str(venv))
    assert out.strip().endswith(wheel.name.split("-")[1])  # `potluck --version` from the new venv
    assert (dist / "agent.whl").resolve() == wheel.resolve()
    assert not (venv / "pyvenv.cfg").read_text().count("include-system-site-packages = true")

    run_env = clean_env(wheelhouse, POTLUCK_HUB_AGENT_WHEEL=str(dist / "agent.whl"))
    potluck = (str(venv / "bin" / "potluck"),)
    hub = HubProcess(tmp_path / "hub", command=potluck, env=run_env)
    try:
        port = hub.url.rsplit(":", 1)[1]
        steps(clean_env(wheelhouse, POTLUCK_HUB_PORT=port, PYTHON=str(venv / "bin" / "python")), "health")
        served = _download(hub.url, wheel.name)
        assert served == wheel.read_bytes(), "the hub serves the very wheel it was built from"

        token_file = tmp_path / "token"
        token_file.write_text(hub.create_agent_token("from-wheel") + "\n")
        token_file.chmod(0o600)
        agent = AgentProcess(
            hub,
            tmp_path / "agent",
            [],
            name="from-wheel",
            extra=("--token-file", str(token_file), "--no-auto"),
            command=potluck,
            env=run_env,
        )
        try:
            hub.wait_agent("from-wheel", timeout=30)
        finally:
            agent.stop()
    finally:
        hub.stop()

    # Without --agent-wheel the installed hub packs its own installation: the same files, byte for byte.
    hub = HubProcess(tmp_path / "hub-packed", command=potluck, env=clean_env(wheelhouse))
    try:
        packed = zipfile.ZipFile(io.BytesIO(_download(hub.url, wheel.name)))
    finally:
        hub.stop()
    built = zipfile.ZipFile(wheel)
    assert set(packed.namelist()) == set(built.namelist())
    for name in built.namelist():
        if not name.endswith(".dist-info/RECORD"):
            assert packed.read(name) == built.read(name), name


def _download(url: str, name: str) -> bytes:
    with urllib.request.urlopen(f"{url}/download/{name}", timeout=30) as response:
        data: bytes = response.read()
    return data
