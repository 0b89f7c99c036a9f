"""Browser sessions against an in-process hub: sign-in, invite sign-up under each ``--signup``, password
change, redirects that stay on the hub, CSRF and origin checks beside unchanged bearer auth, page headers."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from potluck.api.browser import SESSION_COOKIE
from potluck.api.web.render import CSP
from potluck.app import create_app
from potluck.hub.auth import AdminAuth
from potluck.hub.settings import HubSettings

ADMIN = {"Authorization": "Bearer adm"}
ADMIN_HASH = AdminAuth.hash_token("adm")
PASSWORD = "a long enough password"
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]*)"')


async def hub_client(tmp_path: Path, signup: str = "invite") -> TestClient[Any, Any]:
    app = create_app(HubSettings(data_dir=tmp_path, signup=signup), AdminAuth.hash_token("adm"))
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    client = await hub_client(tmp_path)
    yield client
    await client.close()


def origin(client: TestClient[Any, Any]) -> dict[str, str]:
    return {"Origin": str(client.make_url("")).rstrip("/")}


async def form_token(client: TestClient[Any, Any], path: str) -> str:
    async with client.get(path) as resp:
        found = CSRF_FIELD.search(await resp.text())
    assert found is not None, f"no form on {path}"
    return found.group(1)


async def post_form(client: TestClient[Any, Any], path: str, fields: dict[str, str]) -> ClientResponse:
    resp = await client.post(path, data=fields, headers=origin(client), allow_redirects=False)
    await resp.read()
    return resp


async def make_user(client: TestClient[Any, Any], username: str, role: str = "user") -> str:
    body = {"username": username, "password": PASSWORD, "role": role}
    async with client.post("/admin/users", json=body, headers=ADMIN) as resp:
        assert resp.status == 201
    async with client.post("/api/login", json={"username": username, "password": PASSWORD}) as resp:
        token: str = (await resp.json())["token"]
    return token


async def invite_code(client: TestClient[Any, Any], owner_token: str, group: str = "circle") -> tuple[str, str]:
    auth = {"Authorization": f"Bearer {owner_token}"}
    async with client.post("/api/groups", json={"name": group}, headers=auth) as resp:
        group_id: str = (await resp.json())["id"]
    async with client.post(
        f"/api/groups/{group_id}/invites", json={"max_uses": 1, "expires_in_s": 3600}, headers=auth
    ) as resp:
        code: str = (await resp.json())["code"]
    return group_id, code


async def can_log_in(client: TestClient[Any, Any], username: str, password: str = PASSWORD) -> bool:
    async with client.post("/api/login", json={"username": username, "password": password}) as resp:
        return resp.status == 200


async def sign_in(client: TestClient[Any, Any], username: str, password: str = PASSWORD) -> ClientResponse:
    token = await form_token(client, "/login")
    return await post_form(client, "/login", {"csrf": token, "username": username, "password": password})


async def test_an_invite_link_creates_the_account_joins_the_group_and_signs_in(hub: TestClient[Any, Any]) -> None:
    owner = await make_user(hub, "owner")
    group_id, code = await invite_code(hub, owner, group="<b>circle</b>")
    async with hub.get(f"/join/{code}") as page:
        text = await page.text()
    assert "&lt;b&gt;circle&lt;/b&gt;" in text
    assert "<b>circle</b>" not in text
    token = CSRF_FIELD.search(text)
    assert token is not None
    joined = await post_form(hub, f"/join/{code}", {"csrf": token.group(1), "username": "newbie", "password": PASSWORD})
    assert joined.status == 303
    assert joined.headers["Location"] == "/ui/now"
    cookie = joined.cookies[SESSION_COOKIE]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Strict"
    async with hub.get("/api/groups") as resp:
        assert [g["id"] for g in (await resp.json())["groups"]] == [group_id]
    # The code was for one use: the next person gets the invalid-invite page and no account.
    hub.session.cookie_jar.clear()
    async with hub.get(f"/join/{code}") as page:
        assert page.status == 404
    second = await post_form(
        hub, f"/join/{code}", {"csrf": await form_token(hub, "/login"), "username": "late", "password": PASSWORD}
    )
    assert second.status == 400
    assert not await can_log_in(hub, "late")


@pytest.mark.parametrize("mode", ["invite", "open", "closed"])
async def test_signup_setting_decides_who_may_make_an_account(tmp_path: Path, mode: str) -> None:
    hub = await hub_client(tmp_path, mode)
    try:
        owner = await make_user(hub, "owner")
        _, code = await invite_code(hub, owner)
        async with hub.get("/signup") as page:
            assert page.status == (200 if mode == "open" else 404)
        async with hub.get(f"/join/{code}") as page:
            offers_form = 'name="username"' in await page.text()
        assert offers_form == (mode != "closed")
        token = await form_token(hub, "/login")
        opened = await post_form(hub, "/signup", {"csrf": token, "username": "walkin", "password": PASSWORD})
        assert opened.status == (303 if mode == "open" else 403)
        assert await can_log_in(hub, "walkin") == (mode == "open")
        hub.session.cookie_jar.clear()
        token = await form_token(hub, "/login")
        joined = await post_form(hub, f"/join/{code}", {"csrf": token, "username": "invited", "password": PASSWORD})
        assert joined.status == (403 if mode == "closed" else 303)
        assert await can_log_in(hub, "invited") == (mode != "closed")
    finally:
        await hub.close()


async def test_forms_need_their_token_and_this_hubs_origin(hub: TestClient[Any, Any]) -> None:
    await make_user(hub, "alice")
    token = await form_token(hub, "/login")
    fields = {"csrf": token, "username": "alice", "password": PASSWORD}
    for headers in ({"Origin": "http://evil.example"}, {}):
        resp = await hub.post("/login", data=fields, headers=headers, allow_redirects=False)
        assert resp.status == 403
        assert SESSION_COOKIE not in resp.cookies
    wrong = await post_form(hub, "/login", {**fields, "csrf": "x" * 43})
    assert wrong.status == 403
    assert (await post_form(hub, "/login", fields)).status == 303


async def test_the_session_authenticates_api_calls_with_csrf_on_changes_and_bearer_is_unchanged(
    hub: TestClient[Any, Any],
) -> None:
    bearer_token = await make_user(hub, "alice")
    assert (await sign_in(hub, "alice")).status == 303
    async with hub.get("/api/me") as resp:
        assert (await resp.json())["username"] == "alice"
    async with hub.get("/ui/keys") as page:
        text = await page.text()
        assert page.headers["Content-Security-Policy"] == CSP
        assert page.headers["X-Content-Type-Options"] == "nosniff"
    found = re.search(r'<meta name="csrf-token" content="([0-9a-f]{64})">', text)
    assert found is not None
    csrf = found.group(1)
    body = {"name": "k"}
    async with hub.post("/api/keys", json=body, headers=origin(hub)) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "permission_denied"
    async with hub.post("/api/keys", json=body, headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"}) as r:
        assert r.status == 403
    async with hub.post("/api/keys", json=body, headers={"X-CSRF-Token": csrf, **origin(hub)}) as resp:
        assert resp.status == 201
    # A bearer token is judged alone: no CSRF token, no origin, and the cookie does not matter.
    async with hub.post("/api/keys", json=body, headers={"Authorization": f"Bearer {bearer_token}"}) as resp:
        assert resp.status == 201
    hub.session.cookie_jar.clear()
    async with hub.get("/api/me") as resp:
        assert resp.status == 401


async def test_changing_the_password_ends_the_other_sessions(tmp_path: Path, hub: TestClient[Any, Any]) -> None:
    other_session = await make_user(hub, "alice")
    assert (await sign_in(hub, "alice")).status == 303
    token = await form_token(hub, "/password")
    refused = await post_form(hub, "/password", {"csrf": token, "current": "not it", "password": "brand new secret"})
    assert refused.status == 401
    no_csrf = await post_form(hub, "/password", {"csrf": "", "current": PASSWORD, "password": "brand new secret"})
    assert no_csrf.status == 403
    done = await post_form(hub, "/password", {"csrf": token, "current": PASSWORD, "password": "brand new secret"})
    assert done.status == 200
    assert not await can_log_in(hub, "alice")
    assert await can_log_in(hub, "alice", "brand new secret")
    async with hub.get("/api/me") as resp:
        assert resp.status == 200
    async with hub.get("/api/me", headers={"Authorization": f"Bearer {other_session}"}) as resp:
        assert resp.status == 401


@pytest.mark.parametrize(
    ("target", "lands"),
    [("/ui/keys", "/ui/keys"), ("//evil.example/x", "/ui/now"), ("https://evil.example", "/ui/now"), ("", "/ui/now")],
)
async def test_after_signing_in_the_browser_stays_on_this_hub(
    hub: TestClient[Any, Any], target: str, lands: str
) -> None:
    await make_user(hub, "alice")
    async with hub.get("/ui/keys", allow_redirects=False) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/login?next=/ui/keys"
    token = await form_token(hub, "/login")
    resp = await post_form(hub, "/login", {"csrf": token, "next": target, "username": "alice", "password": PASSWORD})
    assert resp.headers["Location"] == lands


async def test_pages_and_assets_carry_the_security_headers_and_only_shipped_files_are_served(
    hub: TestClient[Any, Any],
) -> None:
    for path in ("/", "/login", "/static/app.js", "/static/potluck.css"):
        async with hub.get(path, allow_redirects=False) as resp:
            assert resp.headers["Content-Security-Policy"] == CSP, path
            assert resp.headers["X-Content-Type-Options"] == "nosniff", path
    async with hub.get("/static/app.js") as resp:
        assert resp.content_type == "text/javascript"
    for path in ("/static/render.py", "/static/..%2Frender.py", "/static/nope.js"):
        async with hub.get(path) as resp:
            assert resp.status == 404, path
    async with hub.get("/login") as resp:
        text = await resp.text()
    assert "<script>" not in text
    assert " style=" not in text
    assert "trust boundary, not an encryption boundary" in " ".join(html.unescape(text).split())


async def test_no_script_builds_markup_from_strings(hub: TestClient[Any, Any]) -> None:
    """Agent-supplied names reach the pages' scripts: they may only set text, never parse markup."""
    scripts = [
        f.name for f in resources.files("potluck.api.web").joinpath("static").iterdir() if f.name.endswith(".js")
    ]
    assert "page-machines.js" in scripts
    for name in scripts:
        async with hub.get(f"/static/{name}") as resp:
            source = await resp.text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in source, f"{name} uses {sink}"


async def test_password_guessing_is_refused_with_429_before_the_password_is_checked(
    hub: TestClient[Any, Any],
) -> None:
    await make_user(hub, "guessed")
    for _ in range(5):
        assert not await can_log_in(hub, "guessed", "wrong password")
    async with hub.post("/api/login", json={"username": "guessed", "password": PASSWORD}) as resp:
        body = await resp.json()
        assert resp.status == 429, body  # even the right password waits now
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert int(resp.headers["Retry-After"]) > 0
        assert resp.headers["x-request-id"]
    token = await form_token(hub, "/login")
    resp = await post_form(hub, "/login", {"csrf": token, "username": "guessed", "password": PASSWORD})
    assert resp.status == 429  # the sign-in form shares the count
    assert SESSION_COOKIE not in resp.cookies


async def test_behind_a_tls_proxy_named_by_public_url_the_cookies_are_secure(
    tmp_path: Path, hub: TestClient[Any, Any]
) -> None:
    async with hub.get("/login") as resp:
        assert "Secure" not in resp.headers["Set-Cookie"]  # plain http on loopback: a browser would drop it
    app = create_app(HubSettings(data_dir=tmp_path / "proxied", public_url="https://hub.example"), ADMIN_HASH)
    async with TestClient(TestServer(app)) as client, client.get("/login") as resp:
        # One rule (browser._secure) sets the Secure flag of this cookie and of the session cookie alike.
        assert "; Secure" in resp.headers["Set-Cookie"]
