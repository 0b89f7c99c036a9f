"""Routing seen from outside, with real processes: aliases, route-explain, the explain header, queue
position headers, and one user's bounded share of the queue."""

from __future__ import annotations

import json
import threading
from typing import Any

import openai
import pytest

from testing.processes import http_json
from tests.e2e.conftest import Fleet
from tests.e2e.test_isolation import Member

pytestmark = pytest.mark.slow

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def test_alias_routes_to_a_served_model_and_the_backend_sees_the_concrete_name(fleet: Fleet) -> None:
    served, missing = fleet.model("served"), fleet.model("missing")
    backend, url = fleet.backend(served)
    alice = Member(fleet, "alias-alice")
    group = alice.create("/api/groups", {"name": "lab"})["id"]
    _agent, agent_id = alice.agent(url, "alias-agent")
    assert alice.call("POST", f"/api/agents/{agent_id}/groups", {"group_id": group})[0] == 200
    client = alice.client(alice.create("/api/keys", {"name": "k"})["key"])

    status, alias = alice.call("PUT", f"/api/groups/{group}/aliases/qwen", {"models": [missing, served]})
    assert status == 200, alias
    assert alias["models"] == [missing, served]
    reply = client.chat.completions.create(model="qwen", messages=MESSAGES)
    assert reply.choices[0].message.content
    assert [r.json["model"] for r in backend.records if r.path == "/v1/chat/completions" and r.json] == [served]
    listed = {m.id: m for m in client.models.list()}
    assert listed["qwen"].model_extra is not None
    assert listed["qwen"].model_extra["alias_of"] == [missing, served]

    assert alice.call("GET", f"/api/groups/{group}/aliases")[1]["data"][0]["alias"] == "qwen"
    # Bad input is refused in OpenAI's shape; other users do not see the group at all.
    status, bad = alice.call("PUT", f"/api/groups/{group}/aliases/qwen", {"models": []})
    assert (status, bad["error"]["param"]) == (400, "models")
    status, bad = alice.call("PUT", f"/api/groups/{group}/aliases/qwen", {"models": [served, served]})
    assert status == 400
    mallory = Member(fleet, "alias-mallory")
    assert mallory.call("PUT", f"/api/groups/{group}/aliases/x", {"models": [served]})[0] == 404
    assert mallory.call("GET", f"/api/groups/{group}/aliases")[0] == 404

    assert alice.call("DELETE", f"/api/groups/{group}/aliases/qwen") == (200, {"alias": "qwen", "deleted": True})
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="qwen", messages=MESSAGES)
    assert alice.call("DELETE", f"/api/groups/{group}/aliases/qwen")[0] == 404


def test_route_explain_shows_candidates_terms_and_choice(fleet: Fleet) -> None:
    model = fleet.model()
    _hot, url_hot = fleet.backend(model)
    fleet.agent(url_hot, name="explain-a")
    fleet.agent(url_hot, name="explain-b", max_concurrency=2)
    status, keys = fleet.hub.admin("GET", "/admin/keys")
    assert status == 200
    key_id = next(k["id"] for k in keys["keys"] if k["revoked_at"] is None)

    status, data = fleet.hub.admin("GET", f"/admin/route-explain?model={model}&key_id={key_id}")
    assert status == 200, data
    assert data["policy"] == "potluck"
    assert data["model"] == model
    assert {c["agent_id"] for c in data["candidates"]} == {
        fleet.hub.wait_agent("explain-a")["id"],
        fleet.hub.wait_agent("explain-b")["id"],
    }
    assert all(c["eligible"] and "hot" in c["terms"] for c in data["candidates"])
    assert data["choice"]["agent_id"] in {c["agent_id"] for c in data["candidates"]}

    assert fleet.hub.admin("GET", "/admin/route-explain")[0] == 400
    status, missing = fleet.hub.admin("GET", f"/admin/route-explain?model={model}&key_id=key_nope")
    assert (status, missing["error"]["code"]) == (404, "not_found")
    status, _body, _headers = http_json("GET", f"{fleet.hub.url}/admin/route-explain?model={model}", None, "pk-wrong")
    assert status == 401


def test_admins_may_ask_a_request_to_explain_its_route(fleet: Fleet) -> None:
    model = fleet.model()
    _backend, url = fleet.backend(model)
    agent_id = fleet.hub.wait_agent(fleet.agent(url).name)["id"]
    raw = fleet.client().chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, extra_headers={"x-potluck-explain": "1"}
    )
    route = json.loads(raw.headers["x-potluck-route"])
    assert route["served_by"] == {"agent_id": agent_id, "model": model}
    assert route["candidates"][0]["agent_id"] == agent_id
    # Without the header, or from a plain user's key, nothing is explained.
    raw = fleet.client().chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    assert "x-potluck-route" not in raw.headers
    assert raw.headers.get("x-request-id")


def test_queued_request_learns_its_position_and_one_user_cannot_fill_the_queue(hub_factory: Any) -> None:
    fleet: Fleet = hub_factory("--max-queue", "4", "--queue-user-share", "0.5")
    model = fleet.model()
    _backend, url = fleet.backend(model, first_delay=1.5)
    fleet.agent(url, max_concurrency=1)
    client = fleet.client()
    results: dict[int, Any] = {}

    def call(i: int) -> None:
        try:
            results[i] = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
        except openai.APIStatusError as exc:
            results[i] = exc

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert fleet.hub.wait_for(lambda: fleet.hub.metric("potluck_hub_requests_in_flight") >= 1, 5)
    waiting = [threading.Thread(target=call, args=(i,)) for i in (1, 2)]
    for thread in waiting:
        thread.start()
    assert fleet.hub.wait_for(lambda: fleet.hub.metric("potluck_hub_queue_depth") >= 2, 5)
    call(3)  # the queue holds 4, but this user already has its share of 2
    for thread in (first, *waiting):
        thread.join(20)

    refused = results[3]
    assert isinstance(refused, openai.RateLimitError)
    assert refused.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert int(refused.response.headers["Retry-After"]) >= 1
    positions = sorted(int(results[i].headers["x-potluck-queue-position"]) for i in (1, 2))
    assert positions == [1, 2]
    assert all(int(results[i].headers["x-potluck-queue-wait-ms"]) > 500 for i in (1, 2))
    assert "x-potluck-queue-position" not in results[0].headers
