"""Every amount, limit, duration and date a client sends is bounded (hub/bounds.py): past the bound it
is a 400 ``invalid_request_error`` naming the field, in OpenAI's shape, never a 500; at the bound it
works. Real processes: a hub, and an agent owned by the user so that agent routes get that far.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from potluck.hub import bounds
from testing.fake_backend import BackgroundServer, FakeBackend
from testing.processes import ADMIN_TOKEN, AgentProcess, HubProcess, http_json

pytestmark = pytest.mark.slow

PASSWORD = "a long password"
TOO_BIG = 2**63  # one past SQLite's and PostgreSQL's BIGINT


@dataclass(frozen=True)
class World:
    hub: HubProcess
    token: str
    user_id: str
    group_id: str
    agent_id: str

    def call(
        self, method: str, path: str, body: Any = None, *, admin: bool = False
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        path = path.format(group=self.group_id, agent=self.agent_id, user=self.user_id)
        if body is not None:
            body = _fill(body, self.user_id)
        return http_json(method, self.hub.url + path, body, ADMIN_TOKEN if admin else self.token)


def _fill(body: Any, user_id: str) -> Any:
    if isinstance(body, dict):
        return {k: _fill(v, user_id) for k, v in body.items()}
    return user_id if body == "{user}" else body


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("bounds")
    hub = HubProcess(root / "hub")
    with contextlib.ExitStack() as stack:
        stack.callback(hub.stop)
        status, user = hub.admin("POST", "/admin/users", {"username": "bounded", "password": PASSWORD})
        assert status == 201, user
        status, login, _ = http_json("POST", hub.url + "/api/login", {"username": "bounded", "password": PASSWORD})
        assert status == 200, login
        token = str(login["token"])
        status, group, _ = http_json("POST", hub.url + "/api/groups", {"name": "bounded"}, token)
        assert status == 201, group
        status, agent_token, _ = http_json("POST", hub.url + "/api/agent-tokens", {"name": "box"}, token)
        assert status == 201, agent_token
        backend = stack.enter_context(BackgroundServer(FakeBackend(["bounded-model"]).make_app()))
        name = f"bounds-{uuid.uuid4().hex[:8]}"
        agent = AgentProcess(hub, root / "agent", [backend.url], name=name, token=str(agent_token["token"]))
        stack.callback(agent.stop)
        agent_id = str(hub.wait_agent(name)["id"])
        yield World(hub, token, str(user["id"]), str(group["id"]), agent_id)


def assert_invalid(reply: tuple[int, dict[str, Any], dict[str, str]], param: str) -> None:
    status, body, headers = reply
    assert status == 400, (status, body)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["type"] == "invalid_request_error", error
    assert error["code"] == "invalid_request_error", error
    assert error["param"] == param, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert {k.lower(): v for k, v in headers.items()}.get("x-request-id", "").startswith("req_"), headers


def _schedule(**window: Any) -> dict[str, Any]:
    return {"schedule": {"timezone": "UTC", "windows": [{"days": [0], "start": "08:00", "end": "18:00", **window}]}}


# (method, path, body, the param the error names, admin token?)
ABSURD: list[tuple[str, str, Any, str, bool]] = [
    # The values of the issue that answered 500.
    ("POST", "/admin/credits", {"user_id": "{user}", "amount": 1e13, "reason": "x"}, "amount", True),
    ("POST", "/api/keys", {"name": "k", "expires_in_s": 10**15}, "expires_in_s", False),
    ("POST", "/api/keys", {"name": "k", "expires_in_s": 1e15}, "expires_in_s", False),
    ("POST", "/api/keys", {"name": "k", "rpm": TOO_BIG}, "rpm", False),
    ("POST", "/api/keys", {"name": "k", "max_concurrency": 2**64}, "max_concurrency", False),
    ("GET", "/api/usage?until=9999-12-31", None, "until", False),
    # Every other number a client sends.
    ("POST", "/api/keys", {"name": "k", "tpm": TOO_BIG}, "tpm", False),
    ("POST", "/api/keys", {"name": "k", "priority": 10**9}, "priority", False),
    ("POST", "/api/keys", {"name": "k", "priority": 0}, "priority", False),
    ("POST", "/api/keys", {"name": "k", "rpm": 0}, "rpm", False),
    ("POST", "/admin/users", {"username": "user1", "password": PASSWORD, "rpm": TOO_BIG}, "rpm", True),
    ("POST", "/admin/users", {"username": "user2", "password": PASSWORD, "tpm": 2**64}, "tpm", True),
    ("POST", "/admin/users", {"username": "user3", "password": PASSWORD, "role": "root"}, "role", True),
    ("POST", "/admin/credits", {"user_id": "{user}", "amount": -5, "reason": "x"}, "amount", True),
    ("POST", "/api/groups/{group}/invites", {"max_uses": 10**12}, "max_uses", False),
    ("POST", "/api/groups/{group}/invites", {"expires_in_s": 10**15}, "expires_in_s", False),
    ("PATCH", "/api/groups/{group}", {"max_tokens_cap": TOO_BIG}, "max_tokens_cap", False),
    ("PATCH", "/api/groups/{group}", {"min_price_per_mtok": 1e300}, "min_price_per_mtok", False),
    ("PATCH", "/api/groups/{group}", {"max_price_per_mtok": 1e300}, "max_price_per_mtok", False),
    ("PATCH", "/api/groups/{group}", {"default_input_per_mtok": 1e300}, "default_input_per_mtok", False),
    ("PATCH", "/api/groups/{group}", {"default_output_per_mtok": -1}, "default_output_per_mtok", False),
    ("PATCH", "/api/groups/{group}", {"billing": "free"}, "billing", False),
    ("PUT", "/api/agents/{agent}/prices", {"m": {"input_per_mtok": 1e300, "output_per_mtok": 1}}, "prices", False),
    ("PUT", "/api/agents/{agent}/prices", {"m": {"input_per_mtok": 1, "output_per_mtok": -1}}, "prices", False),
    ("PUT", "/api/groups/{group}/aliases/big", {"models": [f"m{i}" for i in range(1000)]}, "models", False),
    ("PATCH", "/api/groups/{group}/members/{user}", {"role": "owner-of-everything"}, "role", False),
    ("PATCH", "/api/agents/{agent}", _schedule(days=[2**64]), "schedule", False),
    ("PATCH", "/api/agents/{agent}", _schedule(days=[0] * 1000), "schedule", False),
    ("PATCH", "/api/agents/{agent}", _schedule(start="99:99"), "schedule", False),
    ("PATCH", "/api/agents/{agent}", _schedule(end="1" * 5000), "schedule", False),
    ("PATCH", "/api/agents/{agent}", {"schedule": {"timezone": "America", "windows": []}}, "schedule", False),
    ("PATCH", "/api/agents/{agent}", {"schedule": {"timezone": "x" * 5000, "windows": []}}, "schedule", False),
    (
        "PATCH",
        "/api/agents/{agent}",
        {"schedule": {"windows": [{"days": [0], "start": "08:00", "end": "09:00"}] * 1000}},
        "schedule",
        False,
    ),
    ("GET", "/api/usage?since=9999-12-31", None, "since", False),
    ("GET", "/api/earnings?until=9999-12-31", None, "until", False),
    ("GET", "/api/groups/{group}/usage?until=9999-12-31", None, "until", False),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "param", "admin"),
    ABSURD,
    ids=[f"{m} {p.split('?')[0]} {param}#{i}" for i, (m, p, _, param, _) in enumerate(ABSURD)],
)
def test_an_absurd_value_is_400_naming_the_field(
    world: World, method: str, path: str, body: Any, param: str, admin: bool
) -> None:
    assert_invalid(world.call(method, path, body, admin=admin), param)
    # Refused before anything was written: the hub, its database and the user's balance are as they were.
    status, ready, _ = http_json("GET", world.hub.url + "/readyz")
    assert (status, ready["status"]) == (200, "ready")
    status, balance, _ = world.call("GET", "/api/balance")
    assert (status, balance["held_micro"]) == (200, 0), balance


def test_the_largest_allowed_values_work(world: World) -> None:
    status, key, _ = world.call(
        "POST",
        "/api/keys",
        {
            "name": "biggest",
            "expires_in_s": bounds.MAX_KEY_LIFETIME_S,
            "rpm": bounds.MAX_RATE,
            "tpm": bounds.MAX_RATE,
            "max_concurrency": bounds.MAX_CONCURRENCY,
            "priority": bounds.MAX_PRIORITY,
        },
    )
    assert status == 201, key
    assert (key["rpm"], key["tpm"], key["max_concurrency"]) == (bounds.MAX_RATE, bounds.MAX_RATE, 10**6)
    # The key is in the hub's key cache: it authenticates.
    status, models, _ = http_json("GET", world.hub.url + "/v1/models", token=str(key["key"]))
    assert status == 200, models

    grant = {"user_id": "{user}", "amount": bounds.MAX_CREDITS_PER_GRANT, "reason": "max"}
    status, granted, _ = world.call("POST", "/admin/credits", grant, admin=True)
    assert (status, granted.get("balance_micro")) == (201, bounds.MAX_CREDITS_PER_GRANT * 10**6), granted
    # A balance may hold more than one grant.
    status, granted, _ = world.call("POST", "/admin/credits", grant, admin=True)
    assert (status, granted.get("balance_micro")) == (201, 2 * bounds.MAX_CREDITS_PER_GRANT * 10**6), granted

    status, user, _ = world.call(
        "POST",
        "/admin/users",
        {"username": "biggest", "password": PASSWORD, "rpm": bounds.MAX_RATE, "tpm": bounds.MAX_RATE},
        admin=True,
    )
    assert status == 201, user
    status, invite, _ = world.call(
        "POST",
        "/api/groups/{group}/invites",
        {"max_uses": bounds.MAX_INVITE_USES, "expires_in_s": bounds.MAX_INVITE_LIFETIME_S},
    )
    assert (status, invite.get("max_uses")) == (201, bounds.MAX_INVITE_USES), invite
    price = float(bounds.MAX_PRICE_PER_MTOK)
    status, group, _ = world.call(
        "PATCH",
        "/api/groups/{group}",
        {
            "max_tokens_cap": bounds.MAX_TOKENS_CAP,
            "max_price_per_mtok": price,
            "default_input_per_mtok": price,
            "default_output_per_mtok": price,
        },
    )
    assert (status, group.get("max_tokens_cap")) == (200, bounds.MAX_TOKENS_CAP), group
    status, prices, _ = world.call(
        "PUT", "/api/agents/{agent}/prices", {"m": {"input_per_mtok": price, "output_per_mtok": price}}
    )
    assert (status, prices.get("prices")) == (200, {"m": {"input_per_mtok": price, "output_per_mtok": price}})
    targets = [f"m{i}" for i in range(bounds.MAX_ALIAS_MODELS)]
    status, alias, _ = world.call("PUT", "/api/groups/{group}/aliases/big", {"models": targets})
    assert (status, alias.get("models")) == (200, targets), alias
    windows = [{"days": [d], "start": "08:00", "end": "09:00"} for d in range(7)] * 10
    windows = windows[: bounds.MAX_SCHEDULE_WINDOWS]
    status, controls, _ = world.call("PATCH", "/api/agents/{agent}", {"schedule": {"windows": windows}})
    assert (status, len(controls["schedule"]["windows"])) == (200, bounds.MAX_SCHEDULE_WINDOWS), controls
    last = bounds.LAST_DAY.isoformat()
    status, usage, _ = world.call("GET", f"/api/usage?since=2000-01-01&until={last}")
    assert (status, usage) == (200, {"data": []})
