"""Regenerate the dashboard's screenshots in docs/dashboard/ (shown by docs/dashboard.md).

    python scripts/screenshots.py

Starts a throwaway hub, a fake backend and two agents on loopback, makes a few requests, signs in
with Debian's Chromium (Playwright) and saves one PNG per page.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import openai  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402

from testing.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402
from testing.fake_backend import BackgroundServer, FakeBackend  # noqa: E402
from testing.processes import AgentProcess, HubProcess, http_json  # noqa: E402

OUT = ROOT / "docs" / "dashboard"
PASSWORD = "correct horse battery"  # noqa: S105 - a throwaway account on a throwaway hub
PAGES = ("now", "models", "machines", "requests", "usage", "keys", "groups", "add-gpu", "admin")


def shoot(page: Page, name: str) -> None:
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
    print(f"docs/dashboard/{name}.png")  # noqa: T201


def main() -> None:
    executable = chromium_path()
    if executable is None:
        raise SystemExit("chromium is not installed (scripts/install-system installs it)")
    OUT.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONPATH", f"{ROOT / 'src'}:{ROOT}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hub = HubProcess(root / "hub")
        server = BackgroundServer(FakeBackend(("llama3.1:8b", "qwen2.5-coder:7b"), chunks=6).make_app())
        server.start()
        agents: list[AgentProcess] = []
        try:
            hub.admin("POST", "/admin/users", {"username": "alice", "password": PASSWORD, "role": "admin"})
            _, session, _ = http_json("POST", hub.url + "/api/login", {"username": "alice", "password": PASSWORD})
            token = session["token"]
            _, circle, _ = http_json("POST", hub.url + "/api/groups", {"name": "friends"}, token)
            for name in ("living-room-4090", "attic-3060"):
                _, enrolment, _ = http_json("POST", hub.url + "/api/agent-tokens", {"name": name}, token)
                agents.append(AgentProcess(hub, root / name, [server.url], name=name, token=enrolment["token"]))
                listed = hub.wait_agent(name)
                http_json("POST", f"{hub.url}/api/agents/{listed['id']}/groups", {"group_id": circle["id"]}, token)
            billing = {"billing": "credits", "default_input_per_mtok": 200, "default_output_per_mtok": 600}
            http_json("PATCH", f"{hub.url}/api/groups/{circle['id']}", billing, token)
            _, me, _ = http_json("GET", hub.url + "/api/me", None, token)
            hub.admin("POST", "/admin/credits", {"user_id": me["id"], "amount": 25, "reason": "welcome"})
            _, key, _ = http_json("POST", hub.url + "/api/keys", {"name": "laptop"}, token)
            client = openai.OpenAI(base_url=hub.url + "/v1", api_key=key["key"], max_retries=0)
            for model in ("llama3.1:8b", "qwen2.5-coder:7b", "llama3.1:8b"):
                client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
            client.close()
            _, invite, _ = http_json(
                "POST", f"{hub.url}/api/groups/{circle['id']}/invites", {"max_uses": 5, "expires_in_s": 604800}, token
            )
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
                anonymous = browser.new_page(viewport={"width": 1280, "height": 800})
                anonymous.goto(hub.url + "/login")
                shoot(anonymous, "login")
                anonymous.goto(f"{hub.url}/join/{invite['code']}")
                shoot(anonymous, "join")
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(hub.url + "/login")
                page.fill("input[name=username]", "alice")
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_url("**/ui/now")
                for slug in PAGES:
                    page.goto(f"{hub.url}/ui/{slug}" + (f"#{circle['id']}" if slug == "groups" else ""))
                    if slug == "add-gpu":
                        page.click("#enrol button[type=submit]")
                        page.locator("#run-command").wait_for()
                    shoot(page, slug)
                browser.close()
        finally:
            for agent in agents:
                agent.stop()
            server.stop()
            hub.stop()


if __name__ == "__main__":
    main()
