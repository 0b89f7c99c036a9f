"""One hub, one agent and one Chromium per module: the dashboard is driven the way a person would drive it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from testing.browser import CHROMIUM_ARGS, require_chromium
from testing.fake_backend import BackgroundServer, FakeBackend
from testing.processes import AgentProcess, HubProcess, http_json

CHAT_MODEL = "chat-model"
SCRIPT_MODEL = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"
PASSWORD = "correct horse battery"


@dataclass
class Hub:
    """The module's hub, its owner ``alice`` (an admin user, owner of the group ``circle``) and her agent."""

    process: HubProcess
    root: Path
    alice_token: str
    circle_id: str
    agent_name: str
    backend_url: str
    agents: list[AgentProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.process.url

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        status, data, _ = http_json(method, self.url + path, body, token or self.alice_token)
        return status, data


@dataclass
class Pages:
    """A browser context signed in as one user; page errors and console errors are collected, never ignored."""

    context: BrowserContext
    hub: Hub
    errors: list[str] = field(default_factory=list)

    def _console(self, message: ConsoleMessage) -> None:
        # A refused or absent resource (a 403, a 404) is the browser's note about an answer the test expects.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(f"console: {message.text}")

    def open(self, path: str) -> Page:
        page = self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)
        page.goto(self.hub.url + path)
        return page


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp("web")
    process = HubProcess(root / "hub", "--heartbeat-interval", "0.3", "--heartbeat-timeout", "1.5")
    server = BackgroundServer(FakeBackend((CHAT_MODEL, SCRIPT_MODEL)).make_app())
    server.start()
    agents: list[AgentProcess] = []
    try:
        status, _ = process.admin("POST", "/admin/users", {"username": "alice", "password": PASSWORD, "role": "admin"})
        assert status == 201
        _, session, _ = http_json("POST", process.url + "/api/login", {"username": "alice", "password": PASSWORD})
        token = session["token"]
        _, circle, _ = http_json("POST", process.url + "/api/groups", {"name": "circle"}, token)
        _, enrolment, _ = http_json("POST", process.url + "/api/agent-tokens", {"name": "alice-box"}, token)
        agent = AgentProcess(process, root / "agent", [server.url], name="alice-box", token=enrolment["token"])
        agents.append(agent)
        listed = process.wait_agent("alice-box", models={CHAT_MODEL, SCRIPT_MODEL})
        status, _, _ = http_json(
            "POST", f"{process.url}/api/agents/{listed['id']}/groups", {"group_id": circle["id"]}, token
        )
        assert status == 200
        yield Hub(process, root, token, circle["id"], "alice-box", server.url, agents)
    finally:
        for agent in agents:
            agent.stop()
        server.stop()
        process.stop()


def sign_in(browser: Browser, hub: Hub, username: str, password: str) -> Pages:
    context = browser.new_context()
    pages = Pages(context, hub)
    page = pages.open("/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/now")
    page.close()
    return pages


@pytest.fixture
def alice(browser: Browser, hub: Hub) -> Iterator[Pages]:
    pages = sign_in(browser, hub, "alice", PASSWORD)
    yield pages
    pages.context.close()
    assert pages.errors == []


@pytest.fixture
def anonymous(browser: Browser, hub: Hub) -> Iterator[Callable[[], Pages]]:
    made: list[Pages] = []

    def make() -> Pages:
        made.append(Pages(browser.new_context(), hub))
        return made[-1]

    yield make
    for pages in made:
        pages.context.close()
