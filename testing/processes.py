"""Real hub and agent processes on 127.0.0.1 with free ports, for end-to-end tests and benchmarks.

`HubProcess` runs ``python -m potluck hub --port 0`` and reads the URL it prints; `AgentProcess`
runs ``python -m potluck agent``. Both are stopped (SIGTERM, then SIGKILL) when the test ends.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ADMIN_TOKEN = "padm-test-admin-token"


def free_port() -> int:
    """A loopback port free now, for a hub that must come back on the same port after a restart."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # Measure coverage in subprocesses too when the suite runs under coverage.
    if "COVERAGE_PROCESS_START" in os.environ:
        env["COVERAGE_PROCESS_START"] = os.environ["COVERAGE_PROCESS_START"]
    return env


def _read_listening_line(proc: subprocess.Popen[str], timeout: float, what: str) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("listening "):
                return line.split()[1]
            if not line and proc.poll() is not None:
                break
        elif proc.poll() is not None:
            break
    raise RuntimeError(f"{what} did not start (exit code {proc.poll()})")


def http_json(
    method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 10.0
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A small synchronous JSON request: (status, parsed body, headers)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else {}, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"_raw": raw.decode(errors="replace")}
        return exc.code, parsed, dict(exc.headers)


class _Process:
    proc: subprocess.Popen[str]
    log_path: Path

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""


class HubProcess(_Process):
    def __init__(
        self,
        data_dir: Path,
        *args: str,
        command: tuple[str, ...] = (sys.executable, "-m", "potluck"),
        env: dict[str, str] | None = None,
    ) -> None:
        """``command`` and ``env`` run another installation's hub (a fresh venv's ``bin/potluck``)."""
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "hub.log"
        self._log_file = self.log_path.open("w")
        self.args = args
        self.proc = subprocess.Popen(
            [
                *command,
                "hub",
                "--port",
                "0",
                "--data-dir",
                str(data_dir),
                "--admin-token",
                ADMIN_TOKEN,
                "--log-level",
                "info",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            env=_env() if env is None else env,
        )
        try:
            self.url = _read_listening_line(self.proc, 30, "the hub")
        except RuntimeError as exc:
            self.stop()  # nobody will: the caller never got the object
            raise RuntimeError(f"{exc}; its log: {self.log()[-2000:]}") from None

    def stop(self) -> None:
        super().stop()
        self._log_file.close()

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        status, data, _ = http_json(method, self.url + path, body, ADMIN_TOKEN)
        return status, data

    def create_key(self, name: str = "test") -> str:
        status, data = self.admin("POST", "/admin/keys", {"name": name})
        assert status == 201, data
        return str(data["key"])

    def create_agent_token(self, name: str = "agent") -> str:
        status, data = self.admin("POST", "/admin/agent-tokens", {"name": name})
        assert status == 201, data
        return str(data["token"])

    def agents(self) -> list[dict[str, Any]]:
        status, data = self.admin("GET", "/admin/agents")
        assert status == 200, data
        return list(data["agents"])

    def agent_by_name(self, name: str) -> dict[str, Any] | None:
        return next((a for a in self.agents() if a["name"] == name), None)

    def wait_agent(
        self, name: str, *, models: set[str] | None = None, state: str = "online", timeout: float = 15
    ) -> dict[str, Any]:
        """Poll the admin API until the named agent is in ``state`` (serving ``models``)."""
        deadline = time.monotonic() + timeout
        agent = None
        while time.monotonic() < deadline:
            agent = self.agent_by_name(name)
            if agent is not None and agent["state"] == state:
                served = {m["id"] for m in agent["models"]}
                if models is None or models <= served:
                    return agent
            time.sleep(0.05)
        raise AssertionError(f"agent {name} not {state} with {models} within {timeout} s: {agent}")

    def metric(self, name: str) -> float:
        """The value of an unlabelled sample on ``/metrics`` (0 when absent)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    @staticmethod
    def wait_for(predicate: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return bool(predicate())

    def usage(self, limit: int = 100) -> list[dict[str, Any]]:
        status, data = self.admin("GET", f"/admin/usage?limit={limit}")
        assert status == 200, data
        return list(data["usage"])

    def usage_of(self, request_id: str, timeout: float = 5) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.usage(200):
                if record["request_id"] == request_id:
                    return record
            time.sleep(0.05)
        raise AssertionError(f"no usage record for {request_id}")


class AgentProcess(_Process):
    def __init__(
        self,
        hub: HubProcess,
        data_dir: Path,
        backends: list[str],
        *,
        name: str,
        token: str | None = None,
        max_concurrency: int = 8,
        extra: tuple[str, ...] = (),
        pass_name: bool = True,
        command: tuple[str, ...] = (sys.executable, "-m", "potluck"),
        env: dict[str, str] | None = None,
    ) -> None:
        """``pass_name=False`` starts it without ``--name``: the hub names it after its enrolment token,
        so ``name`` should then be the token's name."""
        self.hub = hub
        self.name = name
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.log_path = data_dir / "agent.log"
        self._log_file = self.log_path.open("a")
        args = [
            *command,
            "agent",
            "--hub",
            hub.url,
            "--data-dir",
            str(data_dir),
            "--max-concurrency",
            str(max_concurrency),
            "--log-level",
            "debug",
            *extra,
        ]
        if pass_name:
            args += ["--name", name]
        if token:
            args += ["--token", token]
        for backend in backends:
            args += ["--backend", backend]
        self.proc = subprocess.Popen(
            args, stdout=self._log_file, stderr=subprocess.STDOUT, text=True, env=_env() if env is None else env
        )

    def stop(self) -> None:
        super().stop()
        self._log_file.close()
