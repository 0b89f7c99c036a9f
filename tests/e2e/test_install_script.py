"""The hub hands out its own agent: GET /install.sh run for real, as `curl … | sh -s -- …`, on this machine.

What the install tests cover: the script as the hub serves it (its URL and wheel name baked in),
downloading the wheel and its .sha256 from the hub with curl, the hash check, a fresh virtual
environment made with `python3 -m venv`, pip installing the wheel and resolving its real
dependencies, the token file (0600, never on the agent's command line or in its environment), the
environment file, the agent started in the foreground (`--no-service`) from the new environment
connecting and serving a request, and a second run upgrading in place; a second test takes the uv
branch (uv from the dev extra, alone on an extra PATH entry). What they do not cover: the
dependencies come from a local wheelhouse (``POTLUCK_INSTALL_PIP_ARGS="--no-index --find-links DIR"``,
packed from this test environment by testing/wheelhouse.py) instead of PyPI, and the systemd and
launchd branches are not started (a test here has no user service manager; the units checked in
deploy/systemd are checked by tests/deploy).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

import potluck.api
from potluck.cli.main import cli
from testing.fake_backend import BackgroundServer, FakeBackend
from testing.processes import HubProcess, http_json
from testing.wheelhouse import build_wheelhouse

MODEL = "installed-model"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    hub = HubProcess(tmp_path_factory.mktemp("install-hub"))
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def backend_url() -> Iterator[str]:
    with BackgroundServer(FakeBackend([MODEL]).make_app()) as server:
        yield server.url


def get(url: str, path: str, host: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_host=host is not None)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


def served_wheel(hub: HubProcess) -> tuple[str, bytes]:
    status, script, _ = get(hub.url, "/install.sh")
    assert status == 200
    (line,) = [line for line in script.decode().splitlines() if line.startswith("WHEEL=")]
    name = line.split("'")[1]
    status, data, _ = get(hub.url, f"/download/{name}")
    assert status == 200
    return name, data


def test_the_script_names_the_hub_it_came_from_and_its_wheel(hub: HubProcess) -> None:
    status, body, headers = get(hub.url, "/install.sh", host="gpu-hub.example:8443")
    assert status == 200
    assert headers["cache-control"] == "no-store"
    script = body.decode()
    assert "SERVED_HUB='http://gpu-hub.example:8443'\n" in script
    assert "@@" not in script.replace("*@@*", "")
    name, data = served_wheel(hub)
    assert name == f"potluck-{potluck.__version__}-py3-none-any.whl"
    status, sha, _ = get(hub.url, f"/download/{name}.sha256")
    assert status == 200
    assert sha.decode() == f"{hashlib.sha256(data).hexdigest()}  {name}\n"
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "potluck/api/install.sh" in names
    assert any(n.startswith("potluck/store/migrations/versions/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


@pytest.mark.parametrize("host", ['evil"; rm -rf ~; "', "a.example/../x", "$(id)", "h:1:2", ""])
def test_a_host_header_that_is_not_a_plain_host_gets_400_not_a_script(hub: HubProcess, host: str) -> None:
    status, body, headers = get(hub.url, "/install.sh", host=host)
    assert status == 400, body
    assert b"invalid_request_error" in body
    assert headers["x-request-id"].startswith("req_")


def test_only_the_served_wheel_and_its_hash_can_be_downloaded(hub: HubProcess) -> None:
    for path in ("/download/potluck-0.0.1-py3-none-any.whl", "/download/..%2f..%2fhub.log", "/download/x%0d%0ay"):
        status, body, _ = get(hub.url, path)
        assert status == 404, (path, body)


def test_public_url_is_baked_in_whatever_the_host(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub", "--public-url", "https://hub.example/pool/")
    try:
        status, body, _ = get(hub.url, "/install.sh", host="attacker.example")
        assert status == 200
        assert "SERVED_HUB='https://hub.example/pool'\n" in body.decode()
    finally:
        hub.stop()
    result = CliRunner().invoke(cli, ["hub", "--public-url", "https://hub.example/'$(id)'"])
    assert result.exit_code == 2
    assert "--public-url must be http(s)://host[:port][/path]" in result.output


def test_the_served_script_is_shellcheck_clean(hub: HubProcess, tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        if os.environ.get("CI") == "true":
            pytest.fail("shellcheck is missing: scripts/install-system installs it")
        pytest.skip("shellcheck is not installed (scripts/install-system installs it)")
    status, body, _ = get(hub.url, "/install.sh")
    assert status == 200
    served = tmp_path / "install.sh"
    served.write_bytes(body)
    template = Path(potluck.api.__file__).parent / "install.sh"
    for script in (served, template):
        result = subprocess.run([shellcheck, "--shell=sh", str(script)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token", "pat-x", "--hub", "http://hub.example:8642"], "over https:// (or --allow-insecure)"),
        (["--token", "pat-x", "--hub", "ftp://hub.example"], "--hub must be an http:// or https:// URL"),
        (["--token", "pat-x", "--hub", "https://hub.example/$(id)"], "--hub has characters"),
        (["--token", "pat-$(id)"], "--token is not an enrolment token"),
        (["--token", "pat-x", "--name", "a'b"], "--name may use letters, digits, spaces"),
        (["--token", "pat-x", "--prefix", "/srv/a b"], "--prefix may use letters"),
        (["--token"], "--token needs a value"),
        (["--bogus"], "unknown option: --bogus"),
        ([], "--token is needed on the first install"),
    ],
)
def test_the_script_refuses_bad_arguments_before_touching_anything(
    hub: HubProcess, tmp_path: Path, args: list[str], message: str
) -> None:
    status, script, _ = get(hub.url, "/install.sh")
    assert status == 200
    (tmp_path / "install.sh").write_bytes(script)
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run(
        ["sh", str(tmp_path / "install.sh"), *args],
        env={"PATH": os.environ["PATH"], "HOME": str(home)},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 1
    assert message in result.stderr, result.stderr
    assert list(home.iterdir()) == [], "nothing written, nothing downloaded"


def test_the_unfilled_template_says_where_to_get_the_script(tmp_path: Path) -> None:
    template = Path(potluck.api.__file__).parent / "install.sh"
    result = subprocess.run(
        ["sh", str(template), "--token", "pat-x"],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 1
    assert "unfilled template: download the script from your hub" in result.stderr


# -- the script, run for real ---------------------------------------------------------------------


def clean_env(home: Path, wheelhouse: Path, backend_url: str) -> dict[str, str]:
    """This machine's environment as a new user's shell would have it: none of the test venv's or pip's settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "COV", "XDG_", "POTLUCK_"))
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(os.path.dirname(sys.executable))
    )
    env["HOME"] = str(home)
    env["PIP_CONFIG_FILE"] = os.devnull
    env["POTLUCK_INSTALL_PIP_ARGS"] = f"--no-index --find-links {wheelhouse}"
    env["POTLUCK_AGENT_BACKENDS"] = backend_url  # where the agent finds its backend; the script leaves it alone
    return env


class Install:
    """`curl -fsSL HUB/install.sh | sh -s -- ARGS` in its own session, ending in the agent in the foreground."""

    def __init__(self, hub: HubProcess, env: dict[str, str], log: Path, *args: str) -> None:
        self.log_file = log.open("w")
        self.log = log
        command = f"curl -fsSL {hub.url}/install.sh | sh -s -- {' '.join(args)}"
        self.proc = subprocess.Popen(
            ["sh", "-c", command],
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_agent(self, hub: HubProcess, name: str, timeout: float) -> dict[str, object]:
        """Poll the hub's agents API until the agent is online and serves MODEL, or the script has ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            agent = hub.agent_by_name(name)
            if agent is not None and agent["state"] == "online" and MODEL in {m["id"] for m in agent["models"]}:
                return agent
            time.sleep(0.1)
        raise AssertionError(f"no agent {name} (script exit {self.proc.poll()}):\n{self.log.read_text()}")

    def stop(self, prefix: Path) -> None:
        """SIGTERM to the agent, as systemd would send; the pipeline then ends with the agent's status."""
        for pid in agent_processes(prefix):
            os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log_file.close()


def agent_processes(prefix: Path) -> list[int]:
    """The pids of agents running from the prefix's environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(str(prefix / "venv").encode() in a for a in argv) and b"agent" in argv:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_curl_pipe_sh_installs_an_agent_that_connects_and_a_second_run_upgrades_it_in_place(
    hub: HubProcess, backend_url: str, tmp_path: Path
) -> None:
    if shutil.which("curl") is None:
        pytest.fail("curl is missing: the documented join command needs it")
    wheel_name, wheel = served_wheel(hub)
    wheelhouse = build_wheelhouse(tmp_path / "wheelhouse", wheel=wheel)
    prefix = tmp_path / "prefix"
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home, wheelhouse, backend_url)
    token = hub.create_agent_token("installed")

    first = Install(hub, env, tmp_path / "first.log", "--token", token, "--prefix", str(prefix), "--no-service")
    try:
        agent = first.wait_agent(hub, "installed", timeout=180)
        token_file = prefix / "token"
        assert token_file.read_text() == token + "\n"
        assert token_file.stat().st_mode & 0o777 == 0o600
        (pid,) = agent_processes(prefix)
        assert token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert token.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
        key = hub.create_key("installed-client")
        status, answer, _ = http_json(
            "POST",
            hub.url + "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
            key,
        )
        assert status == 200, answer
    finally:
        first.stop(prefix)
    assert first.proc.returncode == 0, first.log.read_text()  # SIGTERM drains and exits cleanly

    # The code that runs is the wheel's, from the prefix; make one installed file stale to see the rerun fix it.
    site = next((prefix / "venv" / "lib").glob("python3*/site-packages"))
    init = site / "potluck" / "__init__.py"
    assert init.read_bytes() == zipfile.ZipFile(io.BytesIO(wheel)).read("potluck/__init__.py")
    init.write_text(init.read_text() + "\n# stale\n")
    python_inode = (prefix / "venv" / "bin" / "python").lstat().st_ino

    new_token = hub.create_agent_token("installed-again")
    second = Install(hub, env, tmp_path / "second.log", f"--token={new_token}", f"--prefix={prefix}", "--no-service")
    try:
        again = second.wait_agent(hub, "installed", timeout=120)
    finally:
        second.stop(prefix)
    assert again["id"] == agent["id"], "the rerun kept the agent's key: the same agent, upgraded"
    assert init.read_bytes() == zipfile.ZipFile(io.BytesIO(wheel)).read("potluck/__init__.py")
    assert (prefix / "venv" / "bin" / "python").lstat().st_ino == python_inode
    assert (prefix / "token").read_text() == new_token + "\n"
    assert (prefix / "token").stat().st_mode & 0o777 == 0o600
    assert second.proc.returncode == 0, second.log.read_text()
    assert f"downloading {wheel_name}" in second.log.read_text()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_with_uv_on_the_path_the_script_installs_with_uv(hub: HubProcess, backend_url: str, tmp_path: Path) -> None:
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if uv is None:
        if os.environ.get("CI") == "true":
            pytest.fail("uv is missing: it is in the dev extra")
        pytest.skip("uv is not installed (pip install -e '.[dev]')")
    _, wheel = served_wheel(hub)
    wheelhouse = build_wheelhouse(tmp_path / "wheelhouse", wheel=wheel)
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "uv").symlink_to(uv)
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home, wheelhouse, backend_url)
    env["PATH"] = f"{tools}{os.pathsep}{env['PATH']}"
    env["UV_PYTHON_DOWNLOADS"] = "never"  # offline: a Python already here, never one fetched
    prefix = tmp_path / "prefix"
    install = Install(
        hub,
        env,
        tmp_path / "uv.log",
        f"--token={hub.create_agent_token('uv-token')}",
        f"--prefix={prefix}",
        "--name=installed-by-uv",
        "--no-service",
    )
    try:
        install.wait_agent(hub, "installed-by-uv", timeout=180)
    finally:
        install.stop(prefix)
    assert install.proc.returncode == 0, install.log.read_text()
    assert f"installing into {prefix}/venv with uv" in install.log.read_text()
    assert "uv = " in (prefix / "venv" / "pyvenv.cfg").read_text()
