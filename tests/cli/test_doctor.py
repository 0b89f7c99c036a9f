"""`potluck doctor agent|hub` against a real hub, a real agent's data dir and fake backends, set up right and broken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.fake_backend import BackgroundServer, FakeBackend
from testing.processes import ADMIN_TOKEN, AgentProcess, HubProcess, free_port
from testing.tls import self_signed

pytestmark = pytest.mark.slow


def doctor(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "potluck", "doctor", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def by_name(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in report["checks"] if c["name"] == name)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    hub = HubProcess(tmp_path_factory.mktemp("hub"))
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def backend() -> Iterator[str]:
    with BackgroundServer(FakeBackend(["doctor-model"]).make_app()) as server:
        yield server.url


@pytest.fixture(scope="module")
def enrolled(hub: HubProcess, backend: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data dir of an agent that enrolled with the hub and has stopped."""
    data_dir = tmp_path_factory.mktemp("agent")
    agent = AgentProcess(hub, data_dir, [backend], name="doctor", token=hub.create_agent_token("doctor"))
    try:
        hub.wait_agent("doctor")
    finally:
        agent.stop()
    return data_dir


def test_healthy_agent_setup_passes(hub: HubProcess, backend: str, enrolled: Path) -> None:
    rc, report = doctor("agent", "--hub", hub.url, "--data-dir", str(enrolled), "--backend", backend)
    assert rc == 0, report
    assert report["ok"] is True
    assert by_name(report, "agent key")["level"] == "ok"
    assert "mode 0600" in by_name(report, "agent key")["summary"]
    assert by_name(report, "enrolment")["summary"].startswith(f"enrolled with {hub.url} as agent ")
    backend_check = by_name(report, f"backend {backend}")
    assert backend_check["level"] == "ok"
    assert "doctor-model" in backend_check["summary"]
    assert by_name(report, "hub")["summary"].startswith(f"{hub.url}/healthz answered 200")
    assert by_name(report, "hub ready")["summary"] == "takes requests; 0 agent(s) connected"
    assert by_name(report, "clock")["level"] == "ok"
    # This machine has no GPU, no driver and neither vendor tool: said as such, a warning, not a crash.
    gpu = by_name(report, "gpu")
    assert gpu["level"] == "warn"
    assert gpu["summary"].startswith("no GPU visible (NVML: ")
    assert "nvidia-smi: not on PATH" in gpu["summary"]
    assert "rocm-smi: not on PATH" in gpu["summary"]


def test_world_readable_key_fails_with_the_chmod_fix(hub: HubProcess, backend: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    data_dir.mkdir(mode=0o700)
    key = data_dir / "agent_key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o644)
    rc, report = doctor("agent", "--hub", hub.url, "--data-dir", str(data_dir), "--backend", backend)
    assert rc == 1
    check = by_name(report, "agent key")
    assert check["level"] == "fail"
    assert "mode 0644" in check["summary"]
    assert check["fix"] == f"chmod 600 {key}"
    # Not enrolled and no token: the agent could not join either, and the doctor says how to.
    assert by_name(report, "enrolment")["level"] == "fail"
    assert "potluck agent-token create" in by_name(report, "enrolment")["fix"]
    # The install script's token file, readable by others, is a FAIL too (the agent would refuse it).
    token_file = tmp_path / "token"
    token_file.write_text("pat-not-a-real-one\n")
    token_file.chmod(0o640)
    rc, report = doctor(
        "agent", "--hub", hub.url, "--data-dir", str(data_dir), "--backend", backend, "--token-file", str(token_file)
    )
    assert by_name(report, "token file")["fix"] == f"chmod 600 {token_file}"
    assert by_name(report, "enrolment")["summary"].endswith("--token-file enrols it on connect")


def test_unreachable_hub_and_a_backend_down_are_reported(tmp_path: Path) -> None:
    port = free_port()
    with BackgroundServer(FakeBackend(["gone"]).make_app()) as server:
        down = server.url
    rc, report = doctor("agent", "--hub", f"http://127.0.0.1:{port}", "--data-dir", str(tmp_path), "--backend", down)
    assert rc == 1
    hub_check = by_name(report, "hub")
    assert hub_check["level"] == "fail"
    assert hub_check["summary"] == f"cannot reach the hub at 127.0.0.1:{port}: Connection refused"
    backend_check = by_name(report, f"backend {down}")
    assert backend_check["level"] == "fail"
    assert backend_check["summary"].endswith(f"backend at {down} does not answer")
    assert "clock" not in {c["name"] for c in report["checks"]}


def test_plain_http_off_loopback_is_a_warning(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1: never routed, so the connect fails (or times out) without reaching anyone.
    rc, report = doctor(
        "agent", "--hub", "http://192.0.2.1:9", "--data-dir", str(tmp_path), "--backend", "http://127.0.0.1:9"
    )
    assert rc == 1
    assert by_name(report, "hub transport")["level"] == "warn"
    assert "https://" in by_name(report, "hub transport")["fix"]


def test_hub_doctor_on_a_running_hub(hub: HubProcess) -> None:
    port = hub.url.rsplit(":", 1)[1]
    args = ("hub", "--data-dir", str(hub.data_dir), "--port", port)
    rc, report = doctor(*args, "--admin-token", ADMIN_TOKEN)
    assert rc == 0, report
    assert by_name(report, "database")["summary"].startswith(f"{hub.data_dir / 'potluck.db'} (")
    assert by_name(report, "hub")["level"] == "ok"
    assert by_name(report, "hub ready")["level"] == "ok"
    # Without the token by option, its hash file is looked for (this hub was given one, so none was stored).
    rc, report = doctor(*args)
    assert by_name(report, "admin token")["level"] == "warn"
    key = hub.data_dir / "hub-signing-key"
    key.chmod(0o640)
    try:
        rc, report = doctor(*args, "--admin-token", ADMIN_TOKEN)
    finally:
        key.chmod(0o600)
    assert rc == 1
    assert by_name(report, "signing key") == {
        "name": "signing key",
        "level": "fail",
        "summary": f"{key} has mode 0640: other users can read it",
        "fix": f"chmod 600 {key}",
    }


def test_hub_doctor_when_the_hub_is_not_running(tmp_path: Path) -> None:
    rc, report = doctor("hub", "--data-dir", str(tmp_path / "hub"), "--port", str(free_port()))
    assert rc == 1
    assert by_name(report, "hub")["level"] == "fail"
    assert by_name(report, "data dir")["level"] == "ok"  # created on first start


def test_tls_hub_untrusted_then_trusted(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    hub = HubProcess(tmp_path / "hub", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert hub.url.startswith("https://127.0.0.1:")
        args = ("agent", "--hub", hub.url, "--data-dir", str(tmp_path / "agent"), "--backend", "http://127.0.0.1:9")
        rc, report = doctor(*args)
        tls = by_name(report, "hub tls")
        assert tls["level"] == "fail"
        assert tls["summary"].startswith("the hub's certificate is not trusted: ")
        assert "SSL_CERT_FILE" in tls["fix"]
        rc, report = doctor(*args, env={"SSL_CERT_FILE": str(cert)})
        tls = by_name(report, "hub tls")
        assert tls["level"] == "ok", tls
        assert tls["summary"].startswith("TLSv1.3, certificate valid for 127.0.0.1, 8")  # 89 or 90 days left
        assert by_name(report, "hub")["level"] == "ok"
        port = hub.url.rsplit(":", 1)[1]
        hub_args = ("--data-dir", str(tmp_path / "hub"), "--port", port, "--admin-token", ADMIN_TOKEN)
        rc, report = doctor("hub", *hub_args, "--tls-cert", str(cert), "--tls-key", str(key))
        assert rc == 0, report
        assert by_name(report, "tls certificate")["summary"] == "CN=potluck-test-hub, 89 days left"
        assert by_name(report, "hub tls")["summary"].startswith("TLSv1.3, certificate not verified")
    finally:
        hub.stop()


def test_a_hub_url_without_scheme_fails_with_the_url_to_give(tmp_path: Path) -> None:
    rc, report = doctor(
        "agent", "--hub", "hub.example:8642", "--data-dir", str(tmp_path), "--backend", "http://127.0.0.1:9"
    )
    assert rc == 1
    assert by_name(report, "hub") == {
        "name": "hub",
        "level": "fail",
        "summary": "hub.example:8642 has no scheme",
        "fix": "--hub https://hub.example:8642",
    }
