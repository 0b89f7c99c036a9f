"""Users, login, personal tokens, groups and invite codes over HTTP, against an in-process hub.

Every error is OpenAI's envelope with a request id. Membership is never leaked: a group the caller
does not belong to answers exactly like one that does not exist. Secrets (passwords, session and
personal tokens, invite codes) never reach the database file or the logs in plaintext.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDictProxy

from potluck.app import create_app
from potluck.hub.auth import AdminAuth
from potluck.hub.settings import HubSettings

ADMIN = {"Authorization": "Bearer adm"}
DAY = 86_400


# -- helpers --------------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_password() -> str:
    """A unique, findable password: scanned for in the database file and the logs."""
    return "pw-" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: Any
    text: str


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    password: str
    role: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.token)


def parse_time(value: Any) -> datetime:
    """An ``expires_at`` as the hub may write it: ISO 8601 (UTC if naive) or epoch seconds."""
    if isinstance(value, bool):
        raise AssertionError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    assert isinstance(value, str), f"not a time: {value!r}"
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


async def expect_error(reply: Reply, status: int, code: str, *, type_: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape, the given status and code, and a request id."""
    assert reply.status == status, reply.text
    assert reply.headers.get("x-request-id", "").startswith("req_"), reply.headers
    assert isinstance(reply.body, dict), reply.text
    assert set(reply.body) == {"error"}, reply.text
    error: dict[str, Any] = reply.body["error"]
    assert isinstance(error.get("message"), str)
    assert error["message"]
    assert isinstance(error.get("type"), str)
    assert error.get("code") == code, reply.text
    if type_ is not None:
        assert error["type"] == type_
    return error


@dataclass
class Hub:
    """The HTTP client plus the fixtures' bookkeeping: every secret handed out, to scan for later."""

    client: TestClient[Any, Any]
    data_dir: Path
    secrets: list[str] = field(default_factory=list)
    _serial: int = 0

    async def call(
        self,
        method: str,
        path: str,
        *,
        user: User | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        all_headers = dict(user.auth if user is not None else {})
        all_headers.update(headers or {})
        kwargs: dict[str, Any] = {"headers": all_headers}
        if json is not None:
            kwargs["json"] = json
        if data is not None:
            kwargs["data"] = data
        async with self.client.request(method, path, **kwargs) as resp:
            text = await resp.text()
            body: Any = None
            if resp.content_type == "application/json" and text:
                body = await resp.json()
            return Reply(resp.status, resp.headers, body, text)

    def unique_name(self, stem: str = "user") -> str:
        self._serial += 1
        return f"{stem}{self._serial:03d}"

    async def create_user(
        self, username: str | None = None, *, role: str = "user", password: str | None = None, login: bool = True
    ) -> User:
        username = username or self.unique_name()
        password = password or new_password()
        self.secrets.append(password)
        reply = await self.call(
            "POST", "/admin/users", json={"username": username, "password": password, "role": role}, headers=ADMIN
        )
        assert reply.status == 201, reply.text
        assert reply.body["username"] == username
        assert reply.body["role"] == role
        assert isinstance(reply.body["id"], str)
        token = await self.login(username, password) if login else ""
        return User(id=reply.body["id"], username=username, password=password, role=role, token=token)

    async def login(self, username: str, password: str) -> str:
        reply = await self.call("POST", "/api/login", json={"username": username, "password": password})
        assert reply.status == 200, reply.text
        token = reply.body["token"]
        assert isinstance(token, str)
        assert token
        self.secrets.append(token)
        return token

    async def create_token(self, user: User, name: str = "laptop") -> tuple[Any, str]:
        reply = await self.call("POST", "/api/tokens", user=user, json={"name": name})
        assert reply.status == 201, reply.text
        token = reply.body["token"]
        assert isinstance(token, str)
        assert token
        self.secrets.append(token)
        return reply.body["id"], token

    async def create_group(self, owner: User, name: str = "kitchen") -> Any:
        reply = await self.call("POST", "/api/groups", user=owner, json={"name": name})
        assert reply.status == 201, reply.text
        assert reply.body["name"] == name
        return reply.body["id"]

    async def invite(self, user: User, group_id: Any, *, max_uses: int = 1, expires_in_s: int = DAY) -> dict[str, Any]:
        reply = await self.call(
            "POST",
            f"/api/groups/{group_id}/invites",
            user=user,
            json={"max_uses": max_uses, "expires_in_s": expires_in_s},
        )
        assert reply.status == 201, reply.text
        invite: dict[str, Any] = reply.body
        assert isinstance(invite["code"], str)
        assert invite["code"]
        self.secrets.append(invite["code"])
        return invite

    async def redeem(self, user: User, code: str) -> Reply:
        return await self.call("POST", "/api/invites/redeem", user=user, json={"code": code})

    async def join(self, user: User, group_id: Any, owner: User) -> None:
        """``user`` joins ``group_id`` through a fresh single-use invite made by ``owner``."""
        invite = await self.invite(owner, group_id)
        reply = await self.redeem(user, invite["code"])
        assert reply.status == 200, reply.text
        assert reply.body["group_id"] == group_id

    async def members(self, user: User, group_id: Any) -> dict[str, str]:
        """username -> role, as ``user`` sees the group's members."""
        reply = await self.call("GET", f"/api/groups/{group_id}/members", user=user)
        assert reply.status == 200, reply.text
        return {m["username"]: m["role"] for m in reply.body["members"]}

    async def groups(self, user: User) -> dict[Any, str]:
        """group id -> the caller's role, for the groups ``user`` belongs to."""
        reply = await self.call("GET", "/api/groups", user=user)
        assert reply.status == 200, reply.text
        return {g["id"]: g["role"] for g in reply.body["groups"]}

    async def invites(self, user: User, group_id: Any) -> dict[Any, dict[str, Any]]:
        reply = await self.call("GET", f"/api/groups/{group_id}/invites", user=user)
        assert reply.status == 200, reply.text
        return {i["id"]: i for i in reply.body["invites"]}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(HubSettings(data_dir=tmp_path), AdminAuth.hash_token("adm"))
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.fixture
def hub(client: TestClient[Any, Any], tmp_path: Path) -> Hub:
    return Hub(client, tmp_path)


@pytest.fixture
async def alice(hub: Hub) -> User:
    return await hub.create_user("alice")


@pytest.fixture
async def bob(hub: Hub) -> User:
    return await hub.create_user("bob")


@pytest.fixture
async def carol(hub: Hub) -> User:
    return await hub.create_user("carol")


@pytest.fixture
async def group(hub: Hub, alice: User) -> Any:
    """A group owned by alice."""
    return await hub.create_group(alice)


@pytest.fixture
async def bob_joined(hub: Hub, group: Any, alice: User, bob: User) -> User:
    """bob, a plain member of alice's group."""
    await hub.join(bob, group, alice)
    return bob


# -- admin: creating users ------------------------------------------------------------------------


async def test_admin_creates_users_with_a_role(hub: Hub) -> None:
    user = await hub.create_user("dave", role="user", login=False)
    admin = await hub.create_user("erin", role="admin", login=False)
    assert user.id != admin.id


async def test_duplicate_username_is_409_conflict(hub: Hub) -> None:
    await hub.create_user("dave", login=False)
    reply = await hub.call(
        "POST", "/admin/users", json={"username": "dave", "password": new_password(), "role": "user"}, headers=ADMIN
    )
    await expect_error(reply, 409, "conflict")


@pytest.mark.parametrize(
    "body",
    [
        {"password": "long-enough-1", "role": "user"},
        {"username": "dave", "role": "user"},
        {"username": "ab", "password": "long-enough-1", "role": "user"},
        {"username": "a" * 65, "password": "long-enough-1", "role": "user"},
        {"username": "has space", "password": "long-enough-1", "role": "user"},
        {"username": "sl/ash", "password": "long-enough-1", "role": "user"},
        {"username": "ünïcode", "password": "long-enough-1", "role": "user"},
        {"username": "", "password": "long-enough-1", "role": "user"},
        {"username": 12345, "password": "long-enough-1", "role": "user"},
        {"username": "dave", "password": "short-7", "role": "user"},
        {"username": "dave", "password": 12345678, "role": "user"},
        {"username": "dave", "password": "long-enough-1", "role": "superuser"},
    ],
    ids=[
        "no-username",
        "no-password",
        "username-too-short",
        "username-too-long",
        "username-space",
        "username-slash",
        "username-non-ascii",
        "username-empty",
        "username-not-a-string",
        "password-too-short",
        "password-not-a-string",
        "unknown-role",
    ],
)
async def test_bad_user_body_is_400(hub: Hub, body: dict[str, Any]) -> None:
    reply = await hub.call("POST", "/admin/users", json=body, headers=ADMIN)
    await expect_error(reply, 400, "invalid_request_error", type_="invalid_request_error")


@pytest.mark.parametrize("data", [b'{"username": "dave",', b"[1, 2]", b""])
async def test_malformed_user_body_is_400(hub: Hub, data: bytes) -> None:
    reply = await hub.call("POST", "/admin/users", data=data, headers={**ADMIN, "Content-Type": "application/json"})
    await expect_error(reply, 400, "invalid_request_error")


@pytest.mark.parametrize("username", ["abc", "a" * 64, "A.b_c-9"])
async def test_username_bounds_and_allowed_punctuation_are_accepted(hub: Hub, username: str) -> None:
    user = await hub.create_user(username, password="12345678")  # exactly 8 characters
    reply = await hub.call("GET", "/api/me", user=user)
    assert reply.status == 200, reply.text
    assert reply.body["username"] == username


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic adm"}, {"Authorization": "Bearer "}],
    ids=["missing", "wrong", "not-bearer", "empty"],
)
async def test_creating_users_needs_the_admin_token(hub: Hub, headers: dict[str, str]) -> None:
    body = {"username": "mallory", "password": new_password(), "role": "admin"}
    reply = await hub.call("POST", "/admin/users", json=body, headers=headers)
    await expect_error(reply, 401, "invalid_api_key")
    # Nothing was created: the name is still free.
    await hub.create_user("mallory", login=False)


async def test_admin_endpoints_take_an_admin_users_token_but_not_a_plain_users(hub: Hub) -> None:
    admin = await hub.create_user("root", role="admin")
    plain = await hub.create_user("pat")
    body = {"username": "mallory", "password": new_password(), "role": "user"}
    reply = await hub.call("POST", "/admin/users", json=body, headers=plain.auth)
    await expect_error(reply, 401, "invalid_api_key")
    reply = await hub.call("POST", "/admin/users", json=body, headers=admin.auth)
    assert reply.status == 201, reply.text
    assert (await hub.call("GET", "/admin/agents", headers=admin.auth)).status == 200
    assert (await hub.call("GET", "/admin/agents", headers=plain.auth)).status == 401


# -- login and /api/me ----------------------------------------------------------------------------


async def test_login_returns_a_token_that_expires_in_the_future(hub: Hub) -> None:
    password = new_password()
    await hub.create_user("dave", password=password, login=False)
    reply = await hub.call("POST", "/api/login", json={"username": "dave", "password": password})
    assert reply.status == 200, reply.text
    assert set(reply.body) >= {"token", "expires_at"}
    assert isinstance(reply.body["token"], str)
    assert reply.body["token"]
    assert password not in reply.body["token"]
    assert parse_time(reply.body["expires_at"]) > datetime.now(UTC)


async def test_me_describes_the_caller(hub: Hub) -> None:
    user = await hub.create_user("dave")
    admin = await hub.create_user("erin", role="admin")
    for who in (user, admin):
        reply = await hub.call("GET", "/api/me", user=who)
        assert reply.status == 200, reply.text
        assert reply.body["id"] == who.id
        assert reply.body["username"] == who.username
        assert reply.body["role"] == who.role


async def test_wrong_password_and_unknown_user_answer_alike(hub: Hub) -> None:
    await hub.create_user("dave", login=False)
    wrong = await hub.call("POST", "/api/login", json={"username": "dave", "password": new_password()})
    unknown = await hub.call("POST", "/api/login", json={"username": "nobody", "password": new_password()})
    wrong_error = await expect_error(wrong, 401, "invalid_api_key")
    unknown_error = await expect_error(unknown, 401, "invalid_api_key")
    assert wrong_error == unknown_error
    assert "dave" not in wrong_error["message"]
    assert "nobody" not in unknown_error["message"]


async def test_password_is_case_sensitive(hub: Hub) -> None:
    await hub.create_user("dave", password="Correct-Horse", login=False)
    reply = await hub.call("POST", "/api/login", json={"username": "dave", "password": "correct-horse"})
    await expect_error(reply, 401, "invalid_api_key")


API_ROUTES = [
    ("GET", "/api/me"),
    ("POST", "/api/tokens"),
    ("DELETE", "/api/tokens/tok_x"),
    ("POST", "/api/groups"),
    ("GET", "/api/groups"),
    ("GET", "/api/groups/grp_x/members"),
    ("POST", "/api/groups/grp_x/invites"),
    ("GET", "/api/groups/grp_x/invites"),
    ("DELETE", "/api/groups/grp_x/invites/inv_x"),
    ("POST", "/api/invites/redeem"),
    ("POST", "/api/groups/grp_x/leave"),
    ("DELETE", "/api/groups/grp_x/members/usr_x"),
    ("DELETE", "/api/groups/grp_x"),
]


BAD_AUTH = [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic not-a-token"}, {"x-api-key": "adm"}]


async def test_api_routes_need_a_valid_token(hub: Hub) -> None:
    # One hub for all routes: starting one per case would cost more than the checks.
    for method, path in API_ROUTES:
        for headers in BAD_AUTH:
            reply = await hub.call(method, path, json={}, headers=headers)
            assert reply.status == 401, (method, path, headers, reply.text)
            await expect_error(reply, 401, "invalid_api_key")


async def test_the_admin_token_is_not_a_user_token(hub: Hub) -> None:
    await expect_error(await hub.call("GET", "/api/me", headers=ADMIN), 401, "invalid_api_key")


# -- personal access tokens -----------------------------------------------------------------------


async def test_personal_token_acts_as_its_user_until_revoked(hub: Hub, alice: User) -> None:
    token_id, token = await hub.create_token(alice)
    assert token != alice.token

    reply = await hub.call("GET", "/api/me", headers=bearer(token))
    assert reply.status == 200, reply.text
    assert reply.body["id"] == alice.id
    assert reply.body["username"] == "alice"

    # It works for everything the session token does.
    reply = await hub.call("POST", "/api/groups", json={"name": "via-pat"}, headers=bearer(token))
    assert reply.status == 201, reply.text

    reply = await hub.call("DELETE", f"/api/tokens/{token_id}", user=alice)
    assert reply.status == 200, reply.text
    await expect_error(await hub.call("GET", "/api/me", headers=bearer(token)), 401, "invalid_api_key")
    # The session token is untouched.
    assert (await hub.call("GET", "/api/me", user=alice)).status == 200


async def test_a_token_can_revoke_itself(hub: Hub, alice: User) -> None:
    token_id, token = await hub.create_token(alice)
    reply = await hub.call("DELETE", f"/api/tokens/{token_id}", headers=bearer(token))
    assert reply.status == 200, reply.text
    await expect_error(await hub.call("GET", "/api/me", headers=bearer(token)), 401, "invalid_api_key")


async def test_each_personal_token_is_distinct(hub: Hub, alice: User) -> None:
    first_id, first = await hub.create_token(alice, "one")
    second_id, second = await hub.create_token(alice, "two")
    assert first != second
    assert first_id != second_id
    reply = await hub.call("DELETE", f"/api/tokens/{first_id}", user=alice)
    assert reply.status == 200, reply.text
    assert (await hub.call("GET", "/api/me", headers=bearer(second))).status == 200


async def test_someone_elses_token_cannot_be_revoked(hub: Hub, alice: User, bob: User) -> None:
    token_id, token = await hub.create_token(alice)
    reply = await hub.call("DELETE", f"/api/tokens/{token_id}", user=bob)
    assert reply.status in (403, 404), reply.text
    assert (await hub.call("GET", "/api/me", headers=bearer(token))).status == 200


# -- groups ---------------------------------------------------------------------------------------


async def test_creator_owns_the_group_and_only_members_see_it(hub: Hub, alice: User, bob: User) -> None:
    group_id = await hub.create_group(alice, "kitchen")
    reply = await hub.call("GET", "/api/groups", user=alice)
    assert reply.status == 200, reply.text
    assert reply.body["groups"] == [{"id": group_id, "name": "kitchen", "role": "owner"}]
    assert await hub.groups(bob) == {}
    assert await hub.members(alice, group_id) == {"alice": "owner"}


async def test_members_list_has_ids_names_and_roles(hub: Hub, group: Any, alice: User, bob_joined: User) -> None:
    reply = await hub.call("GET", f"/api/groups/{group}/members", user=bob_joined)
    assert reply.status == 200, reply.text
    members = sorted(reply.body["members"], key=lambda m: m["username"])
    assert members == [
        {"user_id": alice.id, "username": "alice", "role": "owner"},
        {"user_id": bob_joined.id, "username": "bob", "role": "member"},
    ]
    assert await hub.groups(bob_joined) == {group: "member"}


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": 7}], ids=["no-name", "empty", "not-a-string"])
async def test_bad_group_body_is_400(hub: Hub, alice: User, body: dict[str, Any]) -> None:
    reply = await hub.call("POST", "/api/groups", user=alice, json=body)
    await expect_error(reply, 400, "invalid_request_error")


async def test_non_member_sees_a_group_as_missing(hub: Hub, group: Any, bob: User) -> None:
    stranger = await hub.call("GET", f"/api/groups/{group}/members", user=bob)
    missing = await hub.call("GET", "/api/groups/grp_doesnotexist/members", user=bob)
    stranger_error = await expect_error(stranger, 404, "not_found")
    missing_error = await expect_error(missing, 404, "not_found")
    # Identical apart from the id the caller sent.
    assert stranger_error["message"].replace(str(group), "ID") == missing_error["message"].replace(
        "grp_doesnotexist", "ID"
    )
    assert stranger_error["type"] == missing_error["type"]


GROUP_ROUTES = [
    ("GET", "/api/groups/{g}/members", None),
    ("POST", "/api/groups/{g}/invites", {"max_uses": 1, "expires_in_s": 60}),
    ("GET", "/api/groups/{g}/invites", None),
    ("DELETE", "/api/groups/{g}/invites/{i}", None),
    ("POST", "/api/groups/{g}/leave", None),
    ("DELETE", "/api/groups/{g}/members/{u}", None),
    ("DELETE", "/api/groups/{g}", None),
]


@pytest.mark.parametrize(("method", "template", "body"), GROUP_ROUTES)
async def test_every_group_route_is_404_for_non_members_and_missing_groups(
    hub: Hub, group: Any, alice: User, carol: User, method: str, template: str, body: Any
) -> None:
    invite = await hub.invite(alice, group)
    for group_id in (group, "grp_doesnotexist"):
        path = template.format(g=group_id, i=invite["id"], u=alice.id)
        await expect_error(await hub.call(method, path, user=carol, json=body), 404, "not_found")
    # Nothing changed for the real group.
    assert await hub.members(alice, group) == {"alice": "owner"}
    assert (await hub.invites(alice, group))[invite["id"]]["revoked"] is False


# -- invites --------------------------------------------------------------------------------------


async def test_owner_creates_an_invite(hub: Hub, group: Any, alice: User) -> None:
    before = datetime.now(UTC)
    reply = await hub.call(
        "POST", f"/api/groups/{group}/invites", user=alice, json={"max_uses": 3, "expires_in_s": 3600}
    )
    assert reply.status == 201, reply.text
    hub.secrets.append(reply.body["code"])
    assert set(reply.body) >= {"id", "code", "max_uses", "expires_at"}
    assert reply.body["max_uses"] == 3
    assert isinstance(reply.body["code"], str)
    assert len(reply.body["code"]) >= 8
    expires_at = parse_time(reply.body["expires_at"])
    assert before + timedelta(seconds=3590) <= expires_at <= datetime.now(UTC) + timedelta(seconds=3610)


async def test_codes_are_unique(hub: Hub, group: Any, alice: User) -> None:
    codes = {(await hub.invite(alice, group))["code"] for _ in range(5)}
    assert len(codes) == 5


async def test_invite_list_never_shows_the_code(hub: Hub, group: Any, alice: User) -> None:
    invite = await hub.invite(alice, group, max_uses=2, expires_in_s=600)
    reply = await hub.call("GET", f"/api/groups/{group}/invites", user=alice)
    assert reply.status == 200, reply.text
    assert invite["code"] not in reply.text
    (listed,) = reply.body["invites"]
    assert "code" not in listed
    assert listed["id"] == invite["id"]
    assert listed["max_uses"] == 2
    assert listed["uses"] == 0
    assert listed["revoked"] is False
    assert parse_time(listed["expires_at"]) == parse_time(invite["expires_at"])


async def test_plain_member_cannot_create_invites(hub: Hub, group: Any, bob_joined: User) -> None:
    reply = await hub.call(
        "POST", f"/api/groups/{group}/invites", user=bob_joined, json={"max_uses": 1, "expires_in_s": 60}
    )
    await expect_error(reply, 403, "permission_denied", type_="permission_error")


@pytest.mark.parametrize(
    "body",
    [
        {"max_uses": 0, "expires_in_s": 60},
        {"max_uses": -1, "expires_in_s": 60},
        {"max_uses": 1, "expires_in_s": 0},
        {"max_uses": 1, "expires_in_s": -5},
        {"max_uses": "1", "expires_in_s": 60},
        {"max_uses": 1, "expires_in_s": 1.5},
    ],
    ids=[
        "zero-uses",
        "negative-uses",
        "zero-expiry",
        "negative-expiry",
        "uses-string",
        "expiry-float",
    ],
)
async def test_bad_invite_body_is_400(hub: Hub, group: Any, alice: User, body: dict[str, Any]) -> None:
    reply = await hub.call("POST", f"/api/groups/{group}/invites", user=alice, json=body)
    await expect_error(reply, 400, "invalid_request_error")


async def test_redeeming_joins_the_group_and_counts_a_use(hub: Hub, group: Any, alice: User, bob: User) -> None:
    invite = await hub.invite(alice, group, max_uses=2)
    reply = await hub.redeem(bob, invite["code"])
    assert reply.status == 200, reply.text
    assert reply.body == {"group_id": group}
    assert await hub.groups(bob) == {group: "member"}
    assert await hub.members(alice, group) == {"alice": "owner", "bob": "member"}
    assert (await hub.invites(alice, group))[invite["id"]]["uses"] == 1


async def test_used_up_code_is_invalid(hub: Hub, group: Any, alice: User, bob: User, carol: User) -> None:
    invite = await hub.invite(alice, group, max_uses=1)
    assert (await hub.redeem(bob, invite["code"])).status == 200
    await expect_error(await hub.redeem(carol, invite["code"]), 400, "invalid_invite")
    assert await hub.groups(carol) == {}
    assert (await hub.invites(alice, group))[invite["id"]]["uses"] == 1


async def test_revoked_code_is_invalid(hub: Hub, group: Any, alice: User, bob: User) -> None:
    invite = await hub.invite(alice, group, max_uses=5)
    reply = await hub.call("DELETE", f"/api/groups/{group}/invites/{invite['id']}", user=alice)
    assert reply.status == 200, reply.text
    await expect_error(await hub.redeem(bob, invite["code"]), 400, "invalid_invite")
    assert await hub.groups(bob) == {}
    listed = (await hub.invites(alice, group))[invite["id"]]
    assert listed["revoked"] is True
    assert listed["uses"] == 0


async def test_unknown_code_is_invalid(hub: Hub, bob: User) -> None:
    await expect_error(await hub.redeem(bob, "no-such-code-" + secrets.token_hex(8)), 400, "invalid_invite")
    assert await hub.groups(bob) == {}


async def test_expired_code_is_invalid(hub: Hub, group: Any, alice: User, bob: User) -> None:
    invite = await hub.invite(alice, group, max_uses=5, expires_in_s=1)
    # It expires at most 1 s after the answer came, or later if the hub rounds up.
    remaining = (parse_time(invite["expires_at"]) - datetime.now(UTC)).total_seconds()
    assert remaining <= 2.0
    # Not synchronisation: the code's lifetime passing is what is under test, and the app takes no clock to advance.
    await asyncio.sleep(max(remaining, 1.0) + 0.1)
    await expect_error(await hub.redeem(bob, invite["code"]), 400, "invalid_invite")
    assert await hub.groups(bob) == {}


async def test_every_invalid_code_gets_the_same_message(hub: Hub, group: Any, alice: User, bob: User) -> None:
    used = await hub.invite(alice, group, max_uses=1)
    revoked = await hub.invite(alice, group, max_uses=1)
    carol = await hub.create_user("carol")
    assert (await hub.redeem(carol, used["code"])).status == 200
    reply = await hub.call("DELETE", f"/api/groups/{group}/invites/{revoked['id']}", user=alice)
    assert reply.status == 200, reply.text

    messages = set()
    for code in (used["code"], revoked["code"], "no-such-code-" + secrets.token_hex(8)):
        error = await expect_error(await hub.redeem(bob, code), 400, "invalid_invite")
        assert code not in error["message"]
        messages.add((error["message"], error["type"]))
    assert len(messages) == 1, messages


async def test_redeeming_twice_is_409_and_costs_no_use(
    hub: Hub, group: Any, alice: User, bob: User, carol: User
) -> None:
    invite = await hub.invite(alice, group, max_uses=2)
    assert (await hub.redeem(bob, invite["code"])).status == 200
    await expect_error(await hub.redeem(bob, invite["code"]), 409, "conflict")
    assert (await hub.invites(alice, group))[invite["id"]]["uses"] == 1
    # The second use is still there for someone else.
    reply = await hub.redeem(carol, invite["code"])
    assert reply.status == 200, reply.text
    assert await hub.members(alice, group) == {"alice": "owner", "bob": "member", "carol": "member"}


async def test_owner_redeeming_their_own_code_is_409(hub: Hub, group: Any, alice: User) -> None:
    invite = await hub.invite(alice, group, max_uses=1)
    await expect_error(await hub.redeem(alice, invite["code"]), 409, "conflict")
    listed = (await hub.invites(alice, group))[invite["id"]]
    assert listed["uses"] == 0
    assert await hub.members(alice, group) == {"alice": "owner"}


@pytest.mark.slow
@pytest.mark.parametrize("max_uses", [1, 3])
async def test_concurrent_redemptions_never_exceed_max_uses(hub: Hub, group: Any, alice: User, max_uses: int) -> None:
    racers = [await hub.create_user(f"racer{i:02d}") for i in range(20)]
    invite = await hub.invite(alice, group, max_uses=max_uses)

    replies = await asyncio.gather(*(hub.redeem(user, invite["code"]) for user in racers))

    admitted = [r for r in replies if r.status == 200]
    refused = [r for r in replies if r.status != 200]
    assert len(admitted) == max_uses, [r.text for r in replies]
    assert len(refused) == 20 - max_uses
    for reply in refused:
        await expect_error(reply, 400, "invalid_invite")
    assert all(r.body == {"group_id": group} for r in admitted)
    members = await hub.members(alice, group)
    assert len(members) == 1 + max_uses
    assert members["alice"] == "owner"
    assert (await hub.invites(alice, group))[invite["id"]]["uses"] == max_uses


# -- leaving, removing, deleting ------------------------------------------------------------------


async def test_member_leaves(hub: Hub, group: Any, alice: User, bob_joined: User) -> None:
    reply = await hub.call("POST", f"/api/groups/{group}/leave", user=bob_joined)
    assert reply.status == 200, reply.text
    assert await hub.groups(bob_joined) == {}
    await expect_error(await hub.call("GET", f"/api/groups/{group}/members", user=bob_joined), 404, "not_found")
    assert await hub.members(alice, group) == {"alice": "owner"}


async def test_owner_cannot_leave(hub: Hub, group: Any, alice: User, bob_joined: User) -> None:
    reply = await hub.call("POST", f"/api/groups/{group}/leave", user=alice)
    await expect_error(reply, 400, "invalid_request_error")
    assert await hub.groups(alice) == {group: "owner"}


async def test_a_member_who_left_can_rejoin_with_a_new_invite(
    hub: Hub, group: Any, alice: User, bob_joined: User
) -> None:
    assert (await hub.call("POST", f"/api/groups/{group}/leave", user=bob_joined)).status == 200
    await hub.join(bob_joined, group, alice)
    assert await hub.members(alice, group) == {"alice": "owner", "bob": "member"}


async def test_owner_removes_a_member(hub: Hub, group: Any, alice: User, bob_joined: User) -> None:
    reply = await hub.call("DELETE", f"/api/groups/{group}/members/{bob_joined.id}", user=alice)
    assert reply.status == 200, reply.text
    assert await hub.members(alice, group) == {"alice": "owner"}
    assert await hub.groups(bob_joined) == {}
    await expect_error(await hub.call("GET", f"/api/groups/{group}/members", user=bob_joined), 404, "not_found")


async def test_owner_cannot_be_removed(hub: Hub, group: Any, alice: User) -> None:
    reply = await hub.call("DELETE", f"/api/groups/{group}/members/{alice.id}", user=alice)
    await expect_error(reply, 400, "invalid_request_error")
    assert await hub.members(alice, group) == {"alice": "owner"}


async def test_plain_member_cannot_remove_members(
    hub: Hub, group: Any, alice: User, bob_joined: User, carol: User
) -> None:
    await hub.join(carol, group, alice)
    reply = await hub.call("DELETE", f"/api/groups/{group}/members/{carol.id}", user=bob_joined)
    await expect_error(reply, 403, "permission_denied", type_="permission_error")
    assert await hub.members(alice, group) == {"alice": "owner", "bob": "member", "carol": "member"}


async def test_only_the_owner_deletes_a_group(hub: Hub, group: Any, alice: User, bob_joined: User) -> None:
    reply = await hub.call("DELETE", f"/api/groups/{group}", user=bob_joined)
    await expect_error(reply, 403, "permission_denied", type_="permission_error")
    assert group in await hub.groups(alice)

    pending = await hub.invite(alice, group, max_uses=5)
    reply = await hub.call("DELETE", f"/api/groups/{group}", user=alice)
    assert reply.status == 200, reply.text

    for who in (alice, bob_joined):
        assert group not in await hub.groups(who)
        await expect_error(await hub.call("GET", f"/api/groups/{group}/members", user=who), 404, "not_found")
    # Its invites died with it.
    carol = await hub.create_user("carol")
    await expect_error(await hub.redeem(carol, pending["code"]), 400, "invalid_invite")


async def test_deleting_one_group_leaves_the_others(hub: Hub, alice: User) -> None:
    first = await hub.create_group(alice, "first")
    second = await hub.create_group(alice, "second")
    assert (await hub.call("DELETE", f"/api/groups/{first}", user=alice)).status == 200
    assert await hub.groups(alice) == {second: "owner"}


# -- secrets --------------------------------------------------------------------------------------


async def run_full_flow(hub: Hub) -> None:
    """Users, logins (good and bad), tokens (kept and revoked), groups and invites of every fate."""
    alice = await hub.create_user("alice")
    bob = await hub.create_user("bob")
    carol = await hub.create_user("carol", role="admin")
    await hub.create_user("dave", login=False)

    bad_password = new_password()
    hub.secrets.append(bad_password)
    reply = await hub.call("POST", "/api/login", json={"username": "alice", "password": bad_password})
    assert reply.status == 401
    reply = await hub.call("POST", "/api/login", json={"username": "ghost", "password": bad_password})
    assert reply.status == 401

    _, kept = await hub.create_token(alice, "kept")
    revoked_id, revoked = await hub.create_token(bob, "revoked")
    assert (await hub.call("DELETE", f"/api/tokens/{revoked_id}", user=bob)).status == 200
    assert (await hub.call("GET", "/api/me", headers=bearer(revoked))).status == 401
    assert (await hub.call("GET", "/api/me", headers=bearer(kept))).status == 200

    fake_token = "fake-" + secrets.token_hex(16)
    hub.secrets.append(fake_token)
    assert (await hub.call("GET", "/api/me", headers=bearer(fake_token))).status == 401

    group = await hub.create_group(alice)
    used = await hub.invite(alice, group, max_uses=1)
    assert (await hub.redeem(bob, used["code"])).status == 200
    assert (await hub.redeem(carol, used["code"])).status == 400
    pending = await hub.invite(alice, group, max_uses=3, expires_in_s=600)
    cancelled = await hub.invite(alice, group, max_uses=3)
    reply = await hub.call("DELETE", f"/api/groups/{group}/invites/{cancelled['id']}", user=alice)
    assert reply.status == 200
    assert (await hub.redeem(carol, cancelled["code"])).status == 400
    assert (await hub.redeem(bob, pending["code"])).status == 409

    bad_code = "bad-code-" + secrets.token_hex(8)
    hub.secrets.append(bad_code)
    assert (await hub.redeem(carol, bad_code)).status == 400

    await hub.invites(alice, group)
    await hub.members(bob, group)


def database_bytes(data_dir: Path) -> bytes:
    files = [data_dir / "potluck.db", data_dir / "potluck.db-wal", data_dir / "potluck.db-journal"]
    return b"".join(path.read_bytes() for path in files if path.exists())


def leaked(blob: bytes, secrets_: list[str]) -> list[str]:
    return [s for s in secrets_ if s.encode() in blob]


async def test_no_secret_is_stored_in_plaintext(hub: Hub) -> None:
    await run_full_flow(hub)
    assert len(hub.secrets) >= 10

    live = database_bytes(hub.data_dir)
    # The right file: plain data such as usernames is there.
    assert b"alice" in live
    assert b"kitchen" in live
    assert leaked(live, hub.secrets) == []

    # And once the hub has closed the database (WAL checkpointed into the main file).
    await hub.client.close()
    closed = database_bytes(hub.data_dir)
    assert b"alice" in closed
    assert leaked(closed, hub.secrets) == []


async def test_no_secret_reaches_the_logs(hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="potluck")
    caplog.set_level(logging.DEBUG, logger="aiohttp")

    await run_full_flow(hub)
    await hub.client.close()

    # The capture works: aiohttp logged the requests.
    assert any(r.name.startswith("aiohttp") for r in caplog.records)
    text = caplog.text + "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {r.stack_info or ''} {r.__dict__}" for r in caplog.records
    )
    assert leaked(text.encode(), hub.secrets) == []
    # A secret split across lines or quoted differently still shows up as its longest run of word characters.
    runs = [max(re.findall(r"\w+", s), key=len) for s in hub.secrets]
    assert [r for r in runs if len(r) >= 16 and r in text] == []


async def test_logout_revokes_the_token_it_is_called_with(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/admin/users", json={"username": "leaver", "password": "long enough"}, headers=ADMIN)
    assert resp.status == 201
    login = await (await client.post("/api/login", json={"username": "leaver", "password": "long enough"})).json()
    headers = {"Authorization": f"Bearer {login['token']}"}
    assert (await client.get("/api/me", headers=headers)).status == 200
    resp = await client.post("/api/logout", headers=headers)
    assert resp.status == 200
    assert (await client.get("/api/me", headers=headers)).status == 401


async def test_owner_makes_a_member_admin_who_may_then_invite(client: TestClient[Any, Any]) -> None:
    async def user(name: str) -> dict[str, str]:
        resp = await client.post("/admin/users", json={"username": name, "password": "long enough"}, headers=ADMIN)
        assert resp.status == 201
        login = await (await client.post("/api/login", json={"username": name, "password": "long enough"})).json()
        return {"Authorization": f"Bearer {login['token']}"}

    owner, helper = await user("owner1"), await user("helper1")
    group = await (await client.post("/api/groups", json={"name": "lab"}, headers=owner)).json()
    code = (await (await client.post(f"/api/groups/{group['id']}/invites", json={}, headers=owner)).json())["code"]
    assert (await client.post("/api/invites/redeem", json={"code": code}, headers=helper)).status == 200
    helper_id = (await (await client.get("/api/me", headers=helper)).json())["id"]
    members = f"/api/groups/{group['id']}/members/{helper_id}"

    assert (await client.post(f"/api/groups/{group['id']}/invites", json={}, headers=helper)).status == 403
    assert (await client.patch(members, json={"role": "admin"}, headers=helper)).status == 403
    assert (await client.patch(members, json={"role": "owner"}, headers=owner)).status == 400
    resp = await client.patch(members, json={"role": "admin"}, headers=owner)
    assert (resp.status, (await resp.json())["role"]) == (200, "admin")
    assert (await client.post(f"/api/groups/{group['id']}/invites", json={}, headers=helper)).status == 201
    owner_id = (await (await client.get("/api/me", headers=owner)).json())["id"]
    assert (
        await client.patch(f"/api/groups/{group['id']}/members/{owner_id}", json={"role": "member"}, headers=owner)
    ).status == 400
