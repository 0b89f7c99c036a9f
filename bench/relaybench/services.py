"""The processes under test: started exactly as a user would start them, watched through /proc.

The fake backend, the hub, the agent and LiteLLM's proxy each run as a subprocess (`Service`) whose log
goes to a file; a service is up when it prints its ``listening URL`` line or lists the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.relaybench.machine import descendants, proc_cpu_s, proc_status_kb, raise_nofile
from bench.relaybench.scenarios import MODEL

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "padm-bench-admin-token"  # noqa: S105 - a throwaway hub on loopback
LITELLM_KEY = "sk-bench-litellm"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(eq=False)
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    tree: bool = False
    """Count the CPU and memory of its child processes too."""

    def pids(self) -> list[int]:
        return [self.proc.pid, *descendants(self.proc.pid)] if self.tree else [self.proc.pid]

    def cpu_s(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += proc_cpu_s(pid)
        return total

    def rss_kb(self) -> int:
        return sum(proc_status_kb(pid, "VmRSS") for pid in self.pids())

    def peak_rss_kb(self) -> int:
        return sum(proc_status_kb(pid, "VmHWM") for pid in self.pids())

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def spawn(name: str, argv: Sequence[str], log_dir: Path, env: dict[str, str] | None = None) -> Service:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(  # the child keeps its own copy of the log's descriptor
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            preexec_fn=raise_nofile,  # only setrlimit, before exec: safe with threads around
        )
    return Service(name, proc, log_path)


async def wait_listening(service: Service, timeout: float = 60.0) -> str:
    """The URL from the service's ``listening URL`` line."""
    deadline = time.monotonic() + timeout
    pattern = re.compile(r"^listening (\S+)", re.MULTILINE)
    while time.monotonic() < deadline:
        match = pattern.search(service.log_path.read_text(errors="replace"))
        if match:
            service.url = match.group(1)
            return service.url
        if service.proc.poll() is not None:
            raise RuntimeError(f"{service.name} exited with {service.proc.returncode}:\n{service.log_tail()}")
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{service.name} did not start within {timeout:g} s:\n{service.log_tail()}")


async def wait_quiet(services: Sequence[Service], max_wait: float = 20.0) -> None:
    """Wait until the services stop burning CPU (the previous run's backlog is gone)."""
    deadline = time.monotonic() + max_wait
    before = sum(s.cpu_s() for s in services)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        now = sum(s.cpu_s() for s in services)
        if now - before < 0.3 * 0.05:
            return
        before = now


async def admin_post(http: aiohttp.ClientSession, hub_url: str, path: str, name: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.post(hub_url + path, json={"name": name}, headers=headers) as resp:
        if resp.status != 201:
            raise RuntimeError(f"POST {path} answered {resp.status}: {await resp.text()}")
        body: dict[str, Any] = await resp.json()
        return body


async def start_hub(
    log_dir: Path,
    data_dir: Path,
    name: str = "hub",
    extra: tuple[str, ...] = (),
    *,
    wrapper: Sequence[str] = (),
    timeout: float = 60.0,
) -> Service:
    """A hub on a free port; ``wrapper`` runs it under another program (valgrind: give it a longer ``timeout``)."""
    argv = [*wrapper, sys.executable, "-m", "potluck", "hub", "--port", "0", "--data-dir", str(data_dir)]
    argv += ["--admin-token", ADMIN_TOKEN, "--log-level", "warning", *extra]
    hub = spawn(name, argv, log_dir)
    await wait_listening(hub, timeout)
    return hub


def agent_argv(hub_url: str, token: str, backend_url: str, data_dir: Path) -> list[str]:
    """The benchmarks' agent: one backend, room for any concurrency the load brings."""
    argv = [sys.executable, "-m", "potluck", "agent", "--hub", hub_url, "--token", token]
    argv += ["--backend", backend_url, "--data-dir", str(data_dir)]
    return [*argv, "--max-concurrency", "2048", "--log-level", "warning", "--name", "bench-agent"]


async def wait_model(http: aiohttp.ClientSession, url: str, key: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url + "/v1/models", headers={"Authorization": f"Bearer {key}"}) as resp:
                if resp.status == 200 and any(m.get("id") == MODEL for m in (await resp.json()).get("data", [])):
                    return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{url}/v1/models did not list {MODEL} within {timeout:g} s")


def litellm_argv(python: str) -> list[str] | None:
    """How to start LiteLLM's proxy with ``python``, or None if it is not installed there."""
    probe = subprocess.run(
        [python, "-c", "import litellm.proxy.proxy_cli"], capture_output=True, timeout=120, check=False
    )
    if probe.returncode != 0:
        return None
    script = Path(python).parent / "litellm"
    return [str(script)] if script.exists() else [python, "-m", "litellm.proxy.proxy_cli"]


async def start_litellm(argv: list[str], backend_url: str, log_dir: Path) -> Service:
    config = log_dir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {backend_url}/v1\n"
        "      api_key: sk-fake\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    port = free_port()
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    argv = [*argv, "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    service = spawn("litellm", argv, log_dir, env)
    service.tree = True
    service.url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        try:
            await wait_model(http, service.url, LITELLM_KEY, timeout=180)
        except TimeoutError as exc:
            raise RuntimeError(f"LiteLLM did not come up:\n{service.log_tail()}") from exc
    return service
