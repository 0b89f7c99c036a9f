"""`potluck tray` under Xvfb with a real XEmbed tray host (trayer), against a real hub, agent code and fake backend.

The icon is checked where the X server has it: reparented into trayer's panel, its window name the state.
A real left click (xdotool) runs the icon's default item, which opens the status page (webbrowser runs
$BROWSER, here a script that records the URL). Pause and resume go through the status page's form, the
same `AgentDaemon.set_paused` the menu item calls: pystray's XEmbed backend has no menu to click.
Missing X programs skip these tests, or fail them under CI=true.
"""

from __future__ import annotations

import html
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testing.fake_backend import BackgroundServer, FakeBackend
from testing.processes import HubProcess, http_json
from tests.conftest import IN_CI

pytestmark = pytest.mark.slow

PROGRAMS = ("Xvfb", "trayer", "xdotool", "xwininfo", "import")
HOSTILE_MODEL = '<img src=x onerror="alert(1)">'
DOCS = Path(__file__).resolve().parents[2] / "docs" / "tray"


def require_programs() -> None:
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    try:
        import pystray  # noqa: F401  (imported without a display: the xorg backend connects at import)
    except ImportError:
        missing.append("pystray (pip install 'potluck[tray]')")
    except Exception:  # noqa: BLE001, S110 - no display in the test process; installed is what counts here
        pass
    if missing:
        reason = f"missing for the tray tests: {', '.join(missing)} (scripts/install-system installs them)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Desktop:
    display: str
    env: dict[str, str]
    panel: str = ""
    """trayer's panel window, found once: a name search on a busy X server now and then comes back empty."""

    def x(self, *args: str) -> str:
        done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited with {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def search(self, name: str) -> list[str]:
        """Windows whose name matches (xdotool exits 1 when there is none)."""
        found = subprocess.run(("xdotool", "search", "--name", name), env=self.env, capture_output=True, text=True)
        return found.stdout.split()

    def panel_tree(self) -> str:
        """trayer's panel window and what it has embedded."""
        return self.x("xwininfo", "-tree", "-id", self.panel)

    def icon_name(self) -> str | None:
        match = re.search(r'"(Potluck: [^"]*)": \("potluckSystemTrayIcon"', self.panel_tree())
        return match.group(1) if match else None


@pytest.fixture(scope="module")
def desktop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desktop]:
    require_programs()
    read, write = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    assert number.isdigit(), "Xvfb did not report its display"
    env = {**os.environ, "DISPLAY": f":{number}", "PYSTRAY_BACKEND": "xorg"}
    desktop = Desktop(f":{number}", env)
    trayer = ["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel", "--width", "160", "--height", "32"]
    tray: subprocess.Popen[bytes] | None = None

    def panel() -> bool:
        # Xvfb reports its display a moment before it takes every connection: a trayer that could not open
        # it ("cannot open display") is started again.
        nonlocal tray
        if tray is None or tray.poll() is not None:
            tray = subprocess.Popen(trayer, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        found = desktop.search("^panel$")
        desktop.panel = found[0] if found else ""
        return bool(found)

    try:
        wait_until(panel, "trayer's panel")
        yield desktop
    finally:
        for proc in (tray, xvfb):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


@dataclass
class Tray:
    hub: HubProcess
    proc: subprocess.Popen[str]
    page: str
    opened: Path
    backend: FakeBackend
    name: str
    owner: str
    """The agent's owner's session token, stored as `potluck login` stores it."""


def owner_login(hub: HubProcess, config_home: Path) -> str:
    """An account that owns the tray's agent, logged in as `potluck login` leaves it (cli.json, mode 0600)."""
    password = "pw-" + os.urandom(8).hex()
    status, _ = hub.admin("POST", "/admin/users", {"username": "trayowner", "password": password})
    assert status == 201
    status, session, _ = http_json("POST", hub.url + "/api/login", {"username": "trayowner", "password": password})
    assert status == 200, session
    path = config_home / "potluck" / "cli.json"
    path.parent.mkdir(parents=True, mode=0o700)
    path.write_text(json.dumps({"hub": hub.url, "token": session["token"]}))
    path.chmod(0o600)
    return str(session["token"])


@pytest.fixture(scope="module")
def tray(desktop: Desktop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tray]:
    root = tmp_path_factory.mktemp("tray")
    hub = HubProcess(root / "hub", "--heartbeat-interval", "0.3", "--heartbeat-timeout", "1.5")
    backend = FakeBackend(["tray-model", HOSTILE_MODEL])
    opened = root / "opened.txt"
    browser = root / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" >> {opened}\n')
    browser.chmod(0o755)
    owner = owner_login(hub, root / "config")
    _, enrol, _ = http_json("POST", hub.url + "/api/agent-tokens", {"name": "tray"}, owner)
    with BackgroundServer(backend.make_app()) as server:
        args = ["--hub", hub.url, "--data-dir", str(root / "agent"), "--backend", server.url, "--name", "tray"]
        args += ["--token", enrol["token"], "--metrics-interval", "0.5"]
        with (root / "tray.log").open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "potluck", "tray", *args],
                env={**desktop.env, "BROWSER": str(browser), "XDG_CONFIG_HOME": str(root / "config")},
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("status page http://127.0.0.1:"), (line, (root / "tray.log").read_text())
            # The owner's keys reach the owner's agent through a group it is shared into.
            agent = hub.wait_agent("tray")
            _, group, _ = http_json("POST", hub.url + "/api/groups", {"name": "home"}, owner)
            shared = http_json("POST", f"{hub.url}/api/agents/{agent['id']}/groups", {"group_id": group["id"]}, owner)
            assert shared[0] == 200, shared
            yield Tray(hub, proc, line.split()[2], opened, backend, "tray", owner)
            # After the module's tests (in whatever order or worker they ran): SIGTERM drains, exits 0, and the
            # hub sees the agent leave.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                log_tail = (root / "tray.log").read_text()[-3000:]
                raise AssertionError(f"SIGTERM did not end the tray:\n{stacks(proc.pid)}{log_tail}") from None
            assert proc.wait(20) == 0
            hub.wait_agent("tray", state="offline")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            assert proc.stdout is not None
            proc.stdout.close()
            hub.stop()


def stacks(pid: int) -> str:
    """The threads of a stuck process (py-spy is in the dev extra), for the failure message."""
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        return ""
    return subprocess.run([str(py_spy), "dump", "--pid", str(pid)], capture_output=True, text=True, check=False).stdout


def wait_icon(desktop: Desktop, tray: Tray, name: str) -> None:
    """Until trayer's panel holds the icon under this name; a failure shows the tray's threads."""
    try:
        wait_until(lambda: desktop.icon_name() == name, f"the icon to say {name!r}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; it says {desktop.icon_name()!r}\n{stacks(tray.proc.pid)}") from None


def page_form_token(page: str) -> str:
    with urllib.request.urlopen(page, timeout=5) as resp:
        text = resp.read().decode()
    match = re.search(r'name=token value="([^"]+)"', text)
    assert match, text
    return html.unescape(match.group(1))


def post_form(url: str, fields: dict[str, str], headers: dict[str, str] | None = None) -> int:
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def status_json(tray: Tray) -> dict[str, Any]:
    status, body, _ = http_json("GET", tray.page + "status.json")
    assert status == 200
    return body


def test_icon_is_embedded_in_the_tray_and_shows_the_state(desktop: Desktop, tray: Tray) -> None:
    tray.hub.wait_agent(tray.name)
    wait_icon(desktop, tray, "Potluck: connected")
    status = status_json(tray)
    assert status["link"] == "connected"
    assert {m["id"] for m in status["backends"][0]["models"]} == {"tray-model", HOSTILE_MODEL}
    assert status["host"]["gpus"] == []  # no GPU here, reported as none


def test_clicking_the_icon_opens_the_status_page(desktop: Desktop, tray: Tray) -> None:
    icon = wait_until(lambda: desktop.search("^Potluck: "), "the icon's window")[0]
    desktop.x("xdotool", "mousemove", "--window", icon, "8", "8", "click", "1")
    opened = wait_until(lambda: tray.opened.exists() and tray.opened.read_text().split(), "the browser to be run")
    assert opened == [tray.page]


def test_status_page_escapes_backend_strings_and_is_locked_down(tray: Tray) -> None:
    with urllib.request.urlopen(tray.page, timeout=5) as resp:
        text = resp.read().decode()
        headers = resp.headers
    assert html.escape(HOSTILE_MODEL) in text
    assert HOSTILE_MODEL not in text
    assert "<script" not in text
    csp = headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'none'; style-src 'sha256-")
    assert "frame-ancestors 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    # Another Host (DNS rebinding), a cross-site form and a wrong token are all refused.
    port = urllib.parse.urlsplit(tray.page).port
    request = urllib.request.Request(tray.page, headers={"Host": f"attacker.example:{port}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    refused.value.close()
    assert refused.value.code == 421
    token = page_form_token(tray.page)
    assert post_form(tray.page + "pause", {"token": "wrong"}) == 403
    assert post_form(tray.page + "pause", {"token": token}, {"Origin": "http://attacker.example"}) == 403
    assert status_json(tray)["paused"] is False


def test_pause_from_the_page_pauses_the_agent_on_the_hub(desktop: Desktop, tray: Tray) -> None:
    tray.hub.wait_agent(tray.name)
    token = page_form_token(tray.page)
    assert post_form(tray.page + "pause", {"token": token}) == 303
    tray.hub.wait_agent(tray.name, state="draining")
    wait_icon(desktop, tray, "Potluck: paused")
    screenshot(desktop, "tray-paused.png")
    assert post_form(tray.page + "resume", {"token": token}) == 303
    tray.hub.wait_agent(tray.name, state="online")
    wait_icon(desktop, tray, "Potluck: connected")


def test_serving_shows_in_the_icon_and_counts_today(desktop: Desktop, tray: Tray, tmp_path: Path) -> None:
    status, created, _ = http_json("POST", tray.hub.url + "/api/keys", {"name": "tray"}, tray.owner)
    assert status == 201, created
    key = created["key"]
    body = {"model": "tray-model", "messages": [{"role": "user", "content": "hi"}], "fake": {"hang": True}}
    before = status_json(tray)["requests_today"]
    # A request the backend never answers stays in flight until its client leaves: this one leaves once seen.
    hub = urllib.parse.urlsplit(tray.hub.url)
    client = http.client.HTTPConnection(hub.hostname or "", hub.port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        client.request("POST", "/v1/chat/completions", json.dumps(body), headers)
        wait_icon(desktop, tray, "Potluck: serving 1 request")
        screenshot(desktop, "tray-serving.png")
    finally:
        client.close()
    assert wait_until(lambda: status_json(tray)["in_flight"] == 0, "the cancelled request to end")
    status, answer, _ = http_json("POST", tray.hub.url + "/v1/chat/completions", {**body, "fake": {}}, key)
    assert status == 200, answer
    counted = wait_until(lambda: (s := status_json(tray))["requests_today"] == before + 2 and s, "today's count")
    assert counted["completion_tokens_today"] >= answer["usage"]["completion_tokens"]
    wait_icon(desktop, tray, "Potluck: connected")
    # Today's earnings come from the hub, for the owner logged in to it: the page shows the hub's exact figure.
    day = counted["day"]
    _, report, _ = http_json("GET", f"{tray.hub.url}/api/earnings?since={day}&until={day}", token=tray.owner)
    earned = sum(r["earned_micro"] for r in report["data"] if r["agent_id"] == counted["agent_id"])
    with urllib.request.urlopen(tray.page, timeout=5) as resp:
        text = resp.read().decode()
    assert f"<td id=earned>{earned // 1_000_000}.{earned % 1_000_000:06d} credits</td>" in text
    page_screenshot(tray, tmp_path)


def test_without_a_display_it_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYSTRAY_BACKEND"] = "xorg"
    proc = subprocess.run(
        [sys.executable, "-m", "potluck", "tray", "--hub", "http://127.0.0.1:9", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no system tray: cannot open the display")


def screenshot(desktop: Desktop, name: str) -> None:
    """The tray's corner of the screen, into docs/tray/ when UPDATE_DOCS_SCREENSHOTS is set."""
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS"):
        DOCS.mkdir(parents=True, exist_ok=True)
        desktop.x("import", "-window", "root", "-crop", "240x40+560+0", str(DOCS / name))


def page_screenshot(tray: Tray, tmp_path: Path) -> None:
    """The status page in Chromium, when UPDATE_DOCS_SCREENSHOTS is set (docs only; nothing asserted here)."""
    if not os.environ.get("UPDATE_DOCS_SCREENSHOTS"):
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 900, "height": 620})
        page.goto(tray.page)
        page.screenshot(path=str(DOCS / "status-page.png"), full_page=True)
        browser.close()
