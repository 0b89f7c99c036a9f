"""Groups isolate traffic: a key reaches exactly the agents shared into its groups (real processes)."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest

from testing.processes import AgentProcess, http_json
from tests.e2e.conftest import Fleet

pytestmark = pytest.mark.slow


class Member:
    """A user of the hub, driven through the user API."""

    def __init__(self, fleet: Fleet, name: str) -> None:
        self.fleet = fleet
        self.hub = fleet.hub
        status, _ = self.hub.admin("POST", "/admin/users", {"username": name, "password": "a long password"})
        assert status == 201
        status, login, _ = http_json(
            "POST", self.hub.url + "/api/login", {"username": name, "password": "a long password"}
        )
        assert status == 200
        self.token = str(login["token"])

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        status, data, _ = http_json(method, self.hub.url + path, body, self.token)
        return status, data

    def create(self, path: str, body: Any) -> dict[str, Any]:
        status, data = self.call("POST", path, body)
        assert status == 201, data
        return data

    def client(self, key: str) -> openai.OpenAI:
        client = openai.OpenAI(base_url=self.hub.url + "/v1", api_key=key, max_retries=0, timeout=10)
        self.fleet._stack.callback(client.close)
        return client

    def agent(self, backend_url: str, name: str) -> tuple[AgentProcess, str]:
        token = self.create("/api/agent-tokens", {"name": name})["token"]
        agent = AgentProcess(self.hub, self.fleet.root / name, [backend_url], name=name, token=token)
        self.fleet.agents.append(agent)
        return agent, str(self.hub.wait_agent(name)["id"])


def _models(client: openai.OpenAI) -> set[str]:
    return {m.id for m in client.models.list()}


def _chat(client: openai.OpenAI, model: str) -> str:
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    return reply.choices[0].message.content or ""


def _not_found(client: openai.OpenAI, model: str) -> dict[str, Any]:
    with pytest.raises(openai.NotFoundError) as missing:
        _chat(client, model)
    return missing.value.body  # type: ignore[return-value]


def test_keys_reach_exactly_the_agents_shared_into_their_groups(fleet: Fleet) -> None:
    shared, only_a, only_b = fleet.model("shared"), fleet.model("alice"), fleet.model("bob")
    backend_a, url_a = fleet.backend(shared, only_a)
    backend_b, url_b = fleet.backend(shared, only_b)
    alice, bob = Member(fleet, "alice"), Member(fleet, "bob")
    group_a = alice.create("/api/groups", {"name": "alice's lab"})["id"]
    group_b = bob.create("/api/groups", {"name": "bob's lab"})["id"]
    _agent_a, agent_a = alice.agent(url_a, "agent-alice")
    _agent_b, agent_b = bob.agent(url_b, "agent-bob")
    key_a = alice.client(alice.create("/api/keys", {"name": "a"})["key"])
    key_b = bob.client(bob.create("/api/keys", {"name": "b"})["key"])
    admin_key = fleet.client()

    # Not shared anywhere yet: nobody reaches them, not even their owners.
    assert _models(key_a) == set()
    assert _models(key_b) == set()
    assert _not_found(key_a, only_a)["code"] == "model_not_found"

    assert alice.call("POST", f"/api/agents/{agent_a}/groups", {"group_id": group_a})[0] == 200
    assert bob.call("POST", f"/api/agents/{agent_b}/groups", {"group_id": group_b})[0] == 200
    # Bob cannot share his agent into Alice's group, nor Alice's agent anywhere.
    assert bob.call("POST", f"/api/agents/{agent_b}/groups", {"group_id": group_a})[0] == 404
    assert bob.call("POST", f"/api/agents/{agent_a}/groups", {"group_id": group_b})[0] == 404

    assert _models(key_a) == {shared, only_a}
    assert _models(key_b) == {shared, only_b}
    listed = {m.id: m.model_extra for m in key_a.models.list()}
    assert listed[shared]["owners"] == ["alice"]  # type: ignore[index]
    # Usage and fleet views are the admin's: a user's token gets nothing there.
    assert alice.call("GET", "/admin/usage")[0] == 401
    assert alice.call("GET", "/admin/agents")[0] == 401
    # Another group's model is "not found", word for word like a model that exists nowhere.
    foreign = _not_found(key_a, only_b)
    nowhere = _not_found(key_a, "no-such-model")
    assert foreign["code"] == nowhere["code"] == "model_not_found"
    assert foreign["message"].replace(only_b, "X") == nowhere["message"].replace("no-such-model", "X")
    # A model both serve goes only to the caller's group's agent.
    for _ in range(4):
        assert _chat(key_a, shared)
    served_a = [r for r in backend_a.records if r.path == "/v1/chat/completions"]
    served_b = [r for r in backend_b.records if r.path == "/v1/chat/completions"]
    assert (len(served_a), len(served_b)) == (4, 0)
    # The admin's default group has neither agent.
    assert _models(admin_key).isdisjoint({shared, only_a, only_b})

    # Bob joins Alice's group: his all-groups key reaches her agent at once; leaving undoes it.
    code = alice.create(f"/api/groups/{group_a}/invites", {"max_uses": 1, "expires_in_s": 60})["code"]
    assert bob.call("POST", "/api/invites/redeem", {"code": code})[0] == 200
    assert _chat(key_b, only_a)
    assert bob.call("POST", f"/api/groups/{group_a}/leave")[0] == 200
    left_at = time.monotonic()
    assert _not_found(key_b, only_a)["code"] == "model_not_found"
    assert time.monotonic() - left_at < 1.0

    # A key scoped to one group sees only that group even when its owner is in more.
    group_a2 = alice.create("/api/groups", {"name": "alice's second"})["id"]
    scoped = alice.client(alice.create("/api/keys", {"name": "scoped", "groups": [group_a2]})["key"])
    assert _models(scoped) == set()
    assert alice.call("POST", "/api/keys", {"name": "bad", "groups": [group_b]})[0] == 400

    # Deleting the group stops its agents being routed for it.
    assert alice.call("DELETE", f"/api/groups/{group_a}")[0] == 200
    assert _models(key_a) == set()
    assert _not_found(key_a, only_a)["code"] == "model_not_found"


def test_revoked_user_key_is_refused_at_once(fleet: Fleet) -> None:
    carol = Member(fleet, "carol")
    created = carol.create("/api/keys", {"name": "k"})
    client = carol.client(created["key"])
    assert _models(client) == set()
    assert carol.call("DELETE", f"/api/keys/{created['id']}")[0] == 200
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    status, listed = carol.call("GET", "/api/keys")
    assert status == 200
    assert created["key"] not in str(listed)


def _shared_agent(fleet: Fleet, member: Member, *models: str, **knobs: Any) -> Any:
    group = member.create("/api/groups", {"name": f"g-{models[0]}"})["id"]
    backend, url = fleet.backend(*models, **knobs)
    _agent, agent_id = member.agent(url, f"agent-{models[0]}")
    assert member.call("POST", f"/api/agents/{agent_id}/groups", {"group_id": group})[0] == 200
    return backend


def test_key_limits_allow_list_and_expiry(fleet: Fleet) -> None:
    model, other = fleet.model("lim"), fleet.model("other")
    dave = Member(fleet, "dave")
    _shared_agent(fleet, dave, model, other, chunks=8)

    limited = dave.client(dave.create("/api/keys", {"name": "rpm", "rpm": 2})["key"])
    first = limited.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert first.headers["x-ratelimit-limit"] == "2"
    assert first.headers["x-ratelimit-remaining"] == "1"
    _chat(limited, model)
    with pytest.raises(openai.RateLimitError) as refused:
        _chat(limited, model)
    assert refused.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    headers = refused.value.response.headers
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert (headers["x-ratelimit-limit"], headers["x-ratelimit-remaining"]) == ("2", "0")
    assert int(headers["x-ratelimit-reset"]) > 0

    # Tokens are charged after the answer: one request of ~10 tokens exhausts a 5-TPM key.
    tokens = dave.client(dave.create("/api/keys", {"name": "tpm", "tpm": 5})["key"])
    _chat(tokens, model)
    with pytest.raises(openai.RateLimitError, match="tokens"):
        _chat(tokens, model)

    only = dave.client(dave.create("/api/keys", {"name": "one model", "models": [model]})["key"])
    assert _models(only) == {model}
    with pytest.raises(openai.PermissionDeniedError) as denied:
        _chat(only, other)
    assert denied.value.body["code"] == "permission_denied"  # type: ignore[index]

    short = dave.client(dave.create("/api/keys", {"name": "short", "expires_in_s": 1})["key"])
    assert _chat(short, model)
    time.sleep(1.1)  # not synchronisation: the key's 1 s lifetime passing is what is under test
    with pytest.raises(openai.AuthenticationError, match="expired"):
        _chat(short, model)
    assert dave.call("POST", "/api/keys", {"name": "bad", "rpm": 0})[0] == 400


async def test_concurrency_limit_per_key(fleet: Fleet) -> None:
    import asyncio

    model = fleet.model("conc")
    erin = Member(fleet, "erin")
    backend = _shared_agent(fleet, erin, model, hang=True)
    key = erin.create("/api/keys", {"name": "one at a time", "max_concurrency": 1})["key"]
    client = openai.AsyncOpenAI(base_url=fleet.hub.url + "/v1", api_key=key, max_retries=0, timeout=10)
    hanging = asyncio.ensure_future(
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    )
    assert await backend.wait_for_async(lambda: any(r.path == "/v1/chat/completions" for r in backend.records), 3.0)
    with pytest.raises(openai.RateLimitError, match="running"):
        await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "y"}])
    hanging.cancel()
    await asyncio.gather(hanging, return_exceptions=True)
    await client.close()


def test_owner_controls_pause_hours_and_own_requests_only(fleet: Fleet) -> None:
    model = fleet.model("owned")
    frank, gina = Member(fleet, "frank"), Member(fleet, "gina")
    group = frank.create("/api/groups", {"name": "frank's"})["id"]
    backend, url = fleet.backend(model)
    _agent, agent_id = frank.agent(url, "agent-frank")
    assert frank.call("POST", f"/api/agents/{agent_id}/groups", {"group_id": group})[0] == 200
    code = frank.create(f"/api/groups/{group}/invites", {"max_uses": 1, "expires_in_s": 60})["code"]
    assert gina.call("POST", "/api/invites/redeem", {"code": code})[0] == 200
    franks = frank.client(frank.create("/api/keys", {"name": "f"})["key"])
    ginas = gina.client(gina.create("/api/keys", {"name": "g"})["key"])
    assert _chat(ginas, model)

    # Pause: no new work for anyone, at once; resume: served again.
    assert frank.call("PATCH", f"/api/agents/{agent_id}", {"paused": True}) == (
        200,
        {"id": agent_id, "paused": True},
    )
    with pytest.raises(openai.APIStatusError) as paused:
        _chat(ginas, model)
    assert paused.value.status_code == 503
    assert frank.call("PATCH", f"/api/agents/{agent_id}", {"paused": False})[0] == 200
    assert _chat(ginas, model)

    # Hours: a window that excludes now makes it unavailable; one that includes now brings it back.
    today = time.gmtime().tm_wday
    closed = {"timezone": "UTC", "windows": [{"days": [(today + 3) % 7], "start": "00:00", "end": "23:59"}]}
    assert frank.call("PATCH", f"/api/agents/{agent_id}", {"schedule": closed})[0] == 200
    with pytest.raises(openai.APIStatusError):
        _chat(ginas, model)
    assert frank.call("PATCH", f"/api/agents/{agent_id}", {"schedule": None})[0] == 200
    assert _chat(ginas, model)
    assert frank.call("PATCH", f"/api/agents/{agent_id}", {"schedule": {"timezone": "Nowhere/Land"}})[0] == 400

    # Own requests only: the agent disappears for Gina, stays for Frank.
    assert frank.call("PATCH", f"/api/agents/{agent_id}", {"own_requests_only": True})[0] == 200
    assert _not_found(ginas, model)["code"] == "model_not_found"
    assert model not in _models(ginas)
    assert _chat(franks, model)
    # Only the owner changes an agent's controls.
    assert gina.call("PATCH", f"/api/agents/{agent_id}", {"paused": True})[0] == 404
    assert sum(1 for r in backend.records if r.path == "/v1/chat/completions") == 4


def test_members_share_agents_only_when_the_group_allows(fleet: Fleet) -> None:
    hank, ida = Member(fleet, "hank"), Member(fleet, "ida")
    group = hank.create("/api/groups", {"name": "hank's"})["id"]
    code = hank.create(f"/api/groups/{group}/invites", {"max_uses": 1, "expires_in_s": 60})["code"]
    assert ida.call("POST", "/api/invites/redeem", {"code": code})[0] == 200
    _backend, url = fleet.backend(fleet.model("ida"))
    _agent, agent_id = ida.agent(url, "agent-ida")

    assert ida.call("POST", f"/api/agents/{agent_id}/groups", {"group_id": group})[0] == 403
    assert ida.call("PATCH", f"/api/groups/{group}", {"members_can_share": True})[0] == 403
    assert hank.call("PATCH", f"/api/groups/{group}", {"members_can_share": True})[0] == 200
    assert ida.call("POST", f"/api/agents/{agent_id}/groups", {"group_id": group})[0] == 200
