"""``GET /api/requests``: a user's own requests with their ids, newest first, paged, against an in-process hub;
and ``GET /admin/users``, the other listing the CLI needed.

The requests are real: OpenAI calls with each user's own API key for models no agent serves, which
the hub answers 404 and records. Another user's requests never appear, whatever the query says.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from potluck.api.openapi import build_document
from potluck.app import create_app
from potluck.hub.auth import AdminAuth
from potluck.hub.settings import HubSettings
from tests.api.test_groups_api import ADMIN, Hub, Reply, User, bearer, expect_error
from tests.api.test_openapi import check


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(HubSettings(data_dir=tmp_path), AdminAuth.hash_token("adm"))
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.fixture
def hub(client: TestClient[Any, Any], tmp_path: Path) -> Hub:
    return Hub(client, tmp_path)


async def api_key(hub: Hub, user: User) -> tuple[str, str]:
    """(key id, key) of a new key of ``user``."""
    reply = await hub.call("POST", "/api/keys", user=user, json={"name": "laptop"})
    assert reply.status == 201, reply.text
    return reply.body["id"], reply.body["key"]


async def make_request(hub: Hub, key: str, model: str, prompt: str = "hello") -> str:
    """One chat completion for a model no agent serves (404, recorded); its request id."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    async with hub.client.post("/v1/chat/completions", json=body, headers=bearer(key)) as resp:
        assert resp.status == 404, await resp.text()
        return resp.headers["x-request-id"]


async def listing(
    hub: Hub, query: str = "", *, user: User | None = None, headers: dict[str, str] | None = None
) -> Reply:
    return await hub.call("GET", f"/api/requests{query}", user=user, headers=headers)


def ids(reply: Reply) -> list[str]:
    assert reply.status == 200, reply.text
    return [r["request_id"] for r in reply.body["data"]]


async def test_each_user_sees_only_their_own_requests_newest_first(hub: Hub) -> None:
    alice, bob = await hub.create_user("alice"), await hub.create_user("bob")
    alice_key_id, alice_key = await api_key(hub, alice)
    _, bob_key = await api_key(hub, bob)
    mine, theirs = [], []
    for n in range(3):
        mine.append(await make_request(hub, alice_key, f"ghost-{n}"))
        theirs.append(await make_request(hub, bob_key, f"ghost-{n}"))

    alice_sees = await listing(hub, user=alice)
    assert ids(alice_sees) == mine[::-1]
    assert alice_sees.body["next_before"] is None
    assert ids(await listing(hub, user=bob)) == theirs[::-1]

    newest = alice_sees.body["data"][0]
    assert newest == {
        "request_id": mine[-1],
        "created_at": newest["created_at"],
        "model": "ghost-2",
        "agent_id": None,
        "key_id": alice_key_id,
        "group_id": None,
        "outcome": "model_not_found",
        "status": 404,
        "prompt_tokens": newest["prompt_tokens"],
        "completion_tokens": 0,
        "tokens_estimated": newest["tokens_estimated"],
        "charged": 0,
        "charged_micro": 0,
        "ttft_ms": None,  # no answer byte came from an agent
        "duration_ms": newest["duration_ms"],
    }
    assert isinstance(newest["duration_ms"], int)
    assert newest["duration_ms"] >= 0
    assert newest["created_at"].endswith("+00:00")


async def test_pages_follow_next_before_to_the_oldest(hub: Hub) -> None:
    alice = await hub.create_user("alice")
    _, key = await api_key(hub, alice)
    made = [await make_request(hub, key, f"ghost-{n}") for n in range(5)]

    seen: list[str] = []
    query = "?limit=2"
    pages = 0
    while True:
        reply = await listing(hub, query, user=alice)
        page = ids(reply)
        pages += 1
        seen += page
        if reply.body["next_before"] is None:
            break
        assert reply.body["next_before"] == page[-1]
        query = f"?limit=2&before={reply.body['next_before']}"
    assert pages == 3
    assert seen == made[::-1]
    # A full last page says there is nothing after it.
    exact = await listing(hub, "?limit=5", user=alice)
    assert ids(exact) == made[::-1]
    assert exact.body["next_before"] is None


async def test_another_users_request_id_is_not_a_cursor(hub: Hub) -> None:
    alice, bob = await hub.create_user("alice"), await hub.create_user("bob")
    _, alice_key = await api_key(hub, alice)
    _, bob_key = await api_key(hub, bob)
    await make_request(hub, alice_key, "ghost")
    bobs = await make_request(hub, bob_key, "ghost")

    messages = set()
    for cursor in (bobs, "req_0123456789abcdef01234567"):
        error = await expect_error(await listing(hub, f"?before={cursor}", user=alice), 400, "invalid_request_error")
        assert error["param"] == "before"
        messages.add(error["message"].replace(cursor, "ID"))
    assert len(messages) == 1, "another user's request answers exactly like an unknown one"


async def test_admins_list_any_users_requests_and_users_only_their_own(hub: Hub) -> None:
    alice, bob = await hub.create_user("alice"), await hub.create_user("bob")
    root = await hub.create_user("root", role="admin")
    _, bob_key = await api_key(hub, bob)
    bobs = [await make_request(hub, bob_key, "ghost") for _ in range(2)]

    assert ids(await listing(hub, f"?user={bob.id}", headers=ADMIN)) == bobs[::-1]
    assert ids(await listing(hub, f"?user={bob.id}", user=root)) == bobs[::-1]
    assert ids(await listing(hub, f"?user={alice.id}", user=alice)) == []

    denied = await listing(hub, f"?user={bob.id}", user=alice)
    await expect_error(denied, 403, "permission_denied")
    assert bobs[0] not in denied.text
    await expect_error(await listing(hub, "?user=usr_nobody", headers=ADMIN), 404, "not_found")
    own = await expect_error(await listing(hub, headers=ADMIN), 400, "invalid_request_error")
    assert own["param"] == "user"
    await expect_error(await listing(hub, f"?user={bob.id}", headers=bearer("pst-wrong")), 401, "invalid_api_key")


@pytest.mark.parametrize("limit", ["0", "501", "lots", "-1"])
async def test_a_bad_limit_is_400(hub: Hub, limit: str) -> None:
    alice = await hub.create_user("alice")
    error = await expect_error(await listing(hub, f"?limit={limit}", user=alice), 400, "invalid_request_error")
    assert error["param"] == "limit"


async def test_no_token_is_401(hub: Hub) -> None:
    await expect_error(await listing(hub), 401, "invalid_api_key")


async def test_prompts_are_never_shown(hub: Hub) -> None:
    alice = await hub.create_user("alice")
    _, key = await api_key(hub, alice)
    prompt = "prompt-" + secrets.token_hex(8)
    request_id = await make_request(hub, key, "ghost", prompt)
    reply = await listing(hub, user=alice)
    assert ids(reply) == [request_id]
    assert prompt not in reply.text


# -- GET /admin/users (the listing `potluck admin users` shows) ------------------------------------


async def test_admin_lists_every_user_with_role_limits_and_credits(hub: Hub) -> None:
    document = build_document()
    alice = await hub.create_user("alice")
    root = await hub.create_user("root", role="admin")
    limited = await hub.call(
        "POST", "/admin/users", json={"username": "carol", "password": "a long password", "rpm": 60}, headers=ADMIN
    )
    assert limited.status == 201, limited.text
    granted = await hub.call(
        "POST", "/admin/credits", json={"user_id": alice.id, "amount": 1.5, "reason": "test"}, headers=ADMIN
    )
    assert granted.status == 201, granted.text

    async with hub.client.get("/admin/users", headers=ADMIN) as resp:
        body = await check(document, resp, "GET", "/admin/users", 200)
    users = {u["username"]: u for u in body["users"]}
    assert [u["username"] for u in body["users"]] == sorted(users)
    assert users["alice"] == {
        "id": alice.id, "username": "alice", "role": "user", "rpm": None, "tpm": None,
        "balance": 1.5, "balance_micro": 1_500_000,
    }  # fmt: skip
    assert (users["root"]["id"], users["root"]["role"]) == (root.id, "admin")
    assert (users["carol"]["rpm"], users["carol"]["tpm"]) == (60, None)
    assert users["admin"]["role"] == "admin", "the built-in admin user"
    assert "password" not in str(body)

    # An admin user's token works; a plain user's does not.
    async with hub.client.get("/admin/users", headers=bearer(root.token)) as resp:
        assert resp.status == 200
    await expect_error(await hub.call("GET", "/admin/users", user=alice), 401, "invalid_api_key")
