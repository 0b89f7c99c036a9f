"""The dashboard in a real browser: signing up, keys, adding a GPU, the live tail, draining, scoping, CSRF, escaping."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable

import openai
import pytest
from playwright.sync_api import APIResponse, Browser, Route, expect

from testing.processes import http_json
from tests.web.conftest import CHAT_MODEL, PASSWORD, SCRIPT_MODEL, Hub, Pages, sign_in

pytestmark = pytest.mark.slow


def test_sign_up_through_an_invite_link_then_be_refused_another_groups_pages(
    browser: Browser, hub: Hub, alice: Pages, anonymous: Callable[[], Pages]
) -> None:
    page = alice.open(f"/ui/groups#{hub.circle_id}")
    page.click("#new-invite button[type=submit]")
    link = page.locator("#invite-link")
    expect(link).to_contain_text("/join/pinv-")
    invite = link.text_content() or ""
    # Another group alice does not share with the newcomer.
    status, other = hub.api("POST", "/api/groups", {"name": "alice-only"})
    assert status == 201

    bob = anonymous()
    join = bob.open(invite.removeprefix(hub.url))
    expect(join.locator(".group-name")).to_have_text("circle")
    join.fill("input[name=username]", "bob")
    join.fill("input[name=password]", PASSWORD)
    join.click("button[type=submit]")
    join.wait_for_url("**/ui/now")
    expect(join.locator(".username")).to_have_text("bob")

    groups = bob.open("/ui/groups")
    expect(groups.locator("#groups .group-link")).to_have_text(["circle"])
    refused = bob.open(f"/ui/groups#{other['id']}")
    expect(refused.locator("#groups-error")).to_be_visible()
    expect(refused.locator("#members")).not_to_contain_text("alice")
    answer = refused.evaluate("id => fetch(`/api/groups/${id}/members`).then(r => r.status)", other["id"])
    assert answer in (403, 404)
    # alice, the owner, sees bob in circle and may make him an admin.
    circle = alice.open(f"/ui/groups#{hub.circle_id}")
    with circle.expect_response(lambda r: r.request.method == "PATCH" and "/members/" in r.url) as changed:
        circle.get_by_label("Role of bob").select_option("admin")
    assert changed.value.status == 200
    status, members = hub.api("GET", f"/api/groups/{hub.circle_id}/members")
    assert status == 200
    assert {m["username"]: m["role"] for m in members["members"]}["bob"] == "admin"
    admin_page = bob.open("/ui/admin")
    expect(admin_page.locator("main")).to_contain_text("There is no such page")
    assert bob.errors == []
    # The invite was for one use: a second person cannot use it.
    again = anonymous().open(invite.removeprefix(hub.url))
    expect(again.locator("main")).to_contain_text("not valid")


def test_a_key_made_on_the_page_calls_the_model_shows_in_the_live_tail_and_stops_working_once_revoked(
    hub: Hub, alice: Pages
) -> None:
    keys = alice.open("/ui/keys")
    keys.fill("#key-name", "laptop")
    keys.click("#new-key button[type=submit]")
    secret = keys.locator("#secret")
    expect(secret).to_contain_text("pk")
    key = secret.text_content() or ""
    tail = alice.open("/ui/requests")
    polls: list[str] = []
    tail.on("request", lambda r: polls.append(r.url) if "/api/requests" in r.url else None)
    expect(tail.locator("#requests")).to_be_visible()
    tail.wait_for_load_state("networkidle")

    client = openai.OpenAI(base_url=hub.url + "/v1", api_key=key, max_retries=0, timeout=20)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.parse().choices[0].message.content
        request_id = raw.headers["x-request-id"]
        expect(tail.locator(f"tr[data-request='{request_id}']")).to_contain_text(CHAT_MODEL, timeout=2000)
        assert len(polls) <= 1, f"the tail should come over the stream, not by polling: {polls}"

        row = keys.locator("#keys tr[data-key='laptop']")
        expect(row).to_contain_text("never")
        keys.reload()  # the list is read again: it was used just now
        expect(row).not_to_contain_text("never")
        row.locator("button", has_text="Revoke").click()
        expect(row).not_to_contain_text("Revoke")
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}])
    finally:
        client.close()


def test_the_key_list_asked_for_before_a_key_was_made_does_not_hide_it_when_it_arrives_last(alice: Pages) -> None:
    """The page's first load and the refresh after "Create key" overlap; the first answer (no such key yet) is
    held back until the second has rendered, as a slow server can deliver them. The list keeps the key."""
    page = alice.context.new_page()
    held: list[tuple[Route, APIResponse]] = []

    def hold_the_first_list(route: Route) -> None:
        if route.request.method == "GET" and not held:
            held.append((route, route.fetch()))  # the list as it was when the page loaded
        else:
            route.continue_()

    page.route("**/api/keys", hold_the_first_list)
    page.goto(alice.hub.url + "/ui/keys")
    page.fill("#key-name", "arrives-last")
    page.click("#new-key button[type=submit]")
    row = page.locator("#keys tr[data-key='arrives-last']")
    expect(row).to_contain_text("never")  # the refresh after the change rendered it

    [(route, stale)] = held
    with page.expect_request_finished(lambda r: r.url.endswith("/api/keys") and r.method == "GET"):
        route.fulfill(response=stale)
    # A fetch through the same page after it: by its answer, the stale one has been read and handled.
    assert page.evaluate("() => fetch('/api/keys').then((r) => r.json()).then((b) => b.keys.length)") >= 1
    expect(row).to_contain_text("never")
    assert page.locator("#keys").inner_text().count("No keys yet.") == 0
    assert alice.errors == []


def test_add_a_gpu_with_the_shown_command_appears_and_answers_a_test_request(hub: Hub, alice: Pages) -> None:
    page = alice.open("/ui/add-gpu")
    expect(page.locator("#share-group option", has_text="circle")).to_have_count(1)
    page.fill("#machine-name", "fresh-box")
    page.click("#enrol button[type=submit]")
    expect(page.locator("#install-command")).to_contain_text("/install.sh | sh -s -- --token pat-")
    command = page.locator("#run-command").text_content() or ""
    assignment, program, verb, *rest = shlex.split(command)
    name, _, token = assignment.partition("=")
    assert (name, program, verb) == ("POTLUCK_AGENT_TOKEN", "potluck", "agent")
    assert token.startswith("pat-")
    assert rest == ["--hub", hub.url]
    expect(page.locator("#waiting")).to_contain_text("Waiting for your machine")

    env = {**os.environ, name: token}
    data_dir = hub.root / "fresh-box"
    log = (hub.root / "fresh-box.log").open("w")
    args = [sys.executable, "-m", "potluck", "agent", *rest, "--data-dir", str(data_dir), "--backend", hub.backend_url]
    agent = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        hub.process.wait_agent("fresh-box")
        seen = time.monotonic()
        expect(page.locator("#waiting")).to_contain_text("Connected: fresh-box with 2 models", timeout=2000)
        assert time.monotonic() - seen < 2
        with open(f"/proc/{agent.pid}/cmdline", "rb") as cmdline:
            assert token.encode() not in cmdline.read()
        page.click("#test-request")
        expect(page.locator("#test-status")).to_contain_text("Answered in", timeout=10000)
        expect(page.locator("#test-answer")).not_to_be_empty()
    finally:
        agent.terminate()
        agent.wait(10)
        log.close()


def test_draining_an_agent_changes_its_badge(hub: Hub, alice: Pages) -> None:
    page = alice.open("/ui/machines")
    row = page.locator("#machines tr", has_text=hub.agent_name)
    expect(row.locator(".badge").first).to_have_text("online")
    expect(row.locator(".chip")).to_contain_text("circle")
    row.locator("button.drain", has_text="Drain").click()
    expect(row.locator(".badge").first).to_have_text("draining", timeout=2000)
    status, listed = hub.api("GET", "/admin/agents")
    assert status == 200
    assert {a["name"]: a["drained_by_admin"] for a in listed["agents"]}[hub.agent_name] is True
    row.locator("button.drain", has_text="Undrain").click()
    expect(row.locator(".badge").first).to_have_text("online", timeout=2000)


def test_state_changes_without_the_csrf_token_or_from_another_origin_are_refused(
    browser: Browser, hub: Hub, alice: Pages
) -> None:
    page = alice.open("/ui/keys")
    no_token = page.evaluate(
        """() => fetch('/api/keys', {method: 'POST', headers: {'Content-Type': 'application/json'},
                 body: JSON.stringify({name: 'forged'})}).then(r => r.status)"""
    )
    assert no_token == 403
    wrong_token = page.evaluate(
        """() => fetch('/api/keys', {method: 'POST', headers: {'Content-Type': 'application/json',
                 'X-CSRF-Token': 'f'.repeat(64)}, body: JSON.stringify({name: 'forged'})}).then(r => r.status)"""
    )
    assert wrong_token == 403
    token = page.locator("meta[name=csrf-token]").get_attribute("content")
    foreign = alice.context.request.post(
        hub.url + "/api/keys",
        data={"name": "forged"},
        headers={"X-CSRF-Token": token or "", "Origin": "http://evil.example"},
    )
    assert foreign.status == 403
    logout = alice.context.request.post(hub.url + "/logout", form={"csrf": ""}, headers={"Origin": hub.url})
    assert logout.status == 403
    status, keys = hub.api("GET", "/api/keys")
    assert status == 200
    assert "forged" not in {k["name"] for k in keys["keys"]}
    # A GET with the session needs no token; the same call with the token is accepted.
    assert page.evaluate("() => fetch('/api/me').then(r => r.json()).then(b => b.username)") == "alice"
    made = page.evaluate(
        """t => fetch('/api/keys', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': t},
                 body: JSON.stringify({name: 'with-token'})}).then(r => r.status)""",
        token,
    )
    assert made == 201
    # Login forms carry their own token too.
    other = browser.new_context()
    try:
        forged_login = other.request.post(
            hub.url + "/login", form={"username": "alice", "password": PASSWORD}, headers={"Origin": hub.url}
        )
        assert forged_login.status == 403
        assert "potluck-session" not in {c["name"] for c in other.cookies()}
    finally:
        other.close()


def test_an_agent_supplied_script_tag_renders_as_text(hub: Hub, alice: Pages) -> None:
    for path, selector in (("/ui/machines", "#machines"), ("/ui/models", "#models"), ("/ui/now", "#agents-online")):
        page = alice.open(path)
        if path == "/ui/now":
            expect(page.locator(selector)).not_to_have_text("…")
            continue
        expect(page.locator(selector)).to_contain_text(SCRIPT_MODEL)
        assert page.evaluate("() => window.__pwned") is None
        assert page.locator(f"{selector} script").count() == 0
        assert page.locator(f"{selector} img").count() == 0


def test_a_session_cookie_is_httponly_strict_and_sign_out_ends_it(browser: Browser, hub: Hub) -> None:
    pages = sign_in(browser, hub, "alice", PASSWORD)
    try:
        cookie = next(c for c in pages.context.cookies() if c["name"] == "potluck-session")
        assert cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict"
        page = pages.open("/ui/now")
        assert page.evaluate("() => document.cookie").find("potluck-session") == -1
        page.click("text=Sign out")
        page.wait_for_url("**/login")
        status, _, _ = http_json("GET", hub.url + "/api/me", token=cookie["value"])
        assert status == 401
        assert pages.errors == []
    finally:
        pages.context.close()


def test_an_owner_sets_prices_and_hours_of_a_machine(hub: Hub, alice: Pages) -> None:
    _, listed = hub.api("GET", "/api/agents")
    agent_id = next(a["id"] for a in listed["agents"] if a["name"] == hub.agent_name)
    page = alice.open("/ui/machines")
    expect(page.locator("#settings")).to_be_visible()
    page.select_option("#settings-agent", label=hub.agent_name)
    expect(page.locator("#prices")).to_have_attribute("data-agent", agent_id)
    row = page.locator(f"#prices .price-row[data-model='{CHAT_MODEL}']")
    row.locator(".price-in").fill("120")
    row.locator(".price-out").fill("360")
    page.check("input[name=hours][value=always]")
    page.click("#settings-form button[type=submit]")
    expect(page.locator("#settings-status")).to_have_text("Saved.")
    status, prices = hub.api("GET", f"/api/agents/{agent_id}/prices")
    assert status == 200
    assert prices["prices"][CHAT_MODEL] == {"input_per_mtok": 120, "output_per_mtok": 360}


def test_every_page_renders_its_data_without_script_errors(hub: Hub, alice: Pages) -> None:
    # Each page's container once its script has rendered into it (a table, or a line saying it is empty).
    filled = {
        "now": "#recent > *",
        "models": "#models > *",
        "machines": "#machines > *",
        "requests": "#requests table",
        "usage": "#series > *",
        "keys": "#keys > *",
        "groups": "#groups > *",
        "add-gpu": "#share-group option >> nth=1",
        "admin": "#agents > *",
    }
    for slug, selector in filled.items():
        page = alice.open(f"/ui/{slug}")
        expect(page.locator(selector)).to_be_attached()
        expect(page.locator("footer.trust")).to_contain_text("not an encryption boundary")
        page.close()
    # alice's fixture fails the test on any page error or console error seen above.
