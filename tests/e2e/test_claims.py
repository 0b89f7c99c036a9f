"""Model claims a consumer can trust (real hub, agents and backends): a group's `approved` policy, spot checks
against real llama.cpp servers that catch an agent serving other weights under the same name, and the
throughput floor."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import openai
import pytest

from testing.llama import start_llama_server
from testing.processes import AgentProcess, HubProcess, http_json
from tests.e2e.conftest import FAST_HUB_ARGS, Fleet

pytestmark = pytest.mark.slow

PASSWORD = "a long password"


class Member:
    """A user of the hub, driven through the user API."""

    def __init__(self, fleet: Fleet, name: str) -> None:
        self.fleet = fleet
        self.hub = fleet.hub
        status, _ = self.hub.admin("POST", "/admin/users", {"username": name, "password": PASSWORD})
        assert status == 201
        status, login, _ = http_json("POST", self.hub.url + "/api/login", {"username": name, "password": PASSWORD})
        assert status == 200
        self.token = str(login["token"])
        self.key_id = ""

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> dict[str, Any]:
        status, data, _ = http_json(method, self.hub.url + path, body, self.token)
        assert status == expect, (method, path, status, data)
        return data

    def client(self, group_id: str) -> openai.OpenAI:
        key = self.call("POST", "/api/keys", {"name": "k", "groups": [group_id]}, expect=201)
        self.key_id = str(key["id"])
        client = openai.OpenAI(base_url=self.hub.url + "/v1", api_key=key["key"], max_retries=0, timeout=30)
        self.fleet.closing(client)
        return client

    def agent(self, backend_url: str, name: str, group_id: str) -> str:
        token = self.call("POST", "/api/agent-tokens", {"name": name}, expect=201)["token"]
        agent = AgentProcess(self.hub, self.fleet.root / name, [backend_url], name=name, token=token)
        self.fleet.agents.append(agent)
        agent_id = str(self.hub.wait_agent(name)["id"])
        self.call("POST", f"/api/agents/{agent_id}/groups", {"group_id": group_id})
        return agent_id


def _served_by(hub: HubProcess, request_id: str) -> str:
    return str(hub.usage_of(request_id)["agent_id"])


def _listed(client: openai.OpenAI) -> dict[str, tuple[int, int]]:
    """Model -> (agents serving it, agents withheld) as `/v1/models` says."""
    return {m.id: ((m.model_extra or {})["agents"], (m.model_extra or {})["withheld"]) for m in client.models.list()}


def _chat(client: openai.OpenAI, model: str) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=8
    )
    raw.parse()
    return raw.headers["x-request-id"]


def test_an_approved_group_routes_a_name_only_to_approved_agents(fleet: Fleet) -> None:
    model = fleet.model("org/llama-70b")  # a name with a slash, as the CLI sends it: quoted
    _honest, honest_url = fleet.backend(model)
    _rogue, rogue_url = fleet.backend(model)
    olga, mallory = Member(fleet, "olga-claims"), Member(fleet, "mallory-claims")
    group = olga.call("POST", "/api/groups", {"name": "market"}, expect=201)["id"]
    olga.call("PATCH", f"/api/groups/{group}", {"members_can_share": True})
    invite = olga.call("POST", f"/api/groups/{group}/invites", {"max_uses": 1}, expect=201)
    mallory.call("POST", "/api/invites/redeem", {"code": invite["code"]})
    honest = olga.agent(honest_url, "olga-70b", group)
    rogue = mallory.agent(rogue_url, "mallory-1b", group)
    client = olga.client(group)

    # Open (the default): both claim the name and both are routed to.
    assert _listed(client)[model] == (2, 0)
    served = {_served_by(fleet.hub, _chat(client, model)) for _ in range(6)}
    assert served == {honest, rogue}

    # Approved: only the pair Olga approved serves it; the rogue is withheld and explained.
    olga.call("PUT", f"/api/groups/{group}/claims/policy", {"policy": "approved"})
    olga.call("PUT", f"/api/groups/{group}/approvals/{honest}/{model}")
    mallory.call("PUT", f"/api/groups/{group}/approvals/{rogue}/{model}", expect=403)
    served = {_served_by(fleet.hub, _chat(client, model)) for _ in range(6)}
    assert served == {honest}
    assert _listed(client)[model] == (1, 1)
    status, explained = fleet.hub.admin("GET", f"/admin/route-explain?model={model}&key_id={olga.key_id}")
    assert status == 200
    reasons = {c["agent_id"]: c.get("reason") for c in explained["candidates"]}
    assert reasons[rogue] == "not approved for this model in the request's groups"
    assert reasons[honest] is None

    # No approved agent left: the name is not served in the group (404 at once, and not listed).
    olga.call("DELETE", f"/api/groups/{group}/approvals/{honest}/{quote(model, safe='')}")
    with pytest.raises(openai.NotFoundError):
        _chat(client, model)
    assert model not in {m.id for m in client.models.list()}
    claims = olga.call("GET", f"/api/groups/{group}/claims")
    assert claims["policy"] == "approved"
    assert claims["approvals"] == []


@pytest.fixture(scope="module")
def llamas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """Three real llama.cpp servers all calling their model `tiny`: two on the same random weights (seed 0),
    one on other weights (seed 1)."""
    root = tmp_path_factory.mktemp("llamas")
    with (
        start_llama_server(root, alias="tiny", parallel=2) as honest,
        start_llama_server(root, alias="tiny", parallel=2) as twin,
        start_llama_server(root, alias="tiny", parallel=2, seed=1) as impostor,
    ):
        yield honest, twin, impostor


def test_spot_checks_catch_an_impostor_and_never_flag_honest_agents(
    hub_factory: Any, llamas: tuple[str, str, str]
) -> None:
    fleet: Fleet = hub_factory("--spot-check-percent", "0")  # only the checks this test asks for
    honest_url, twin_url, impostor_url = llamas
    olga = Member(fleet, "olga")
    group = olga.call("POST", "/api/groups", {"name": "market"}, expect=201)["id"]
    honest = olga.agent(honest_url, "honest", group)
    twin = olga.agent(twin_url, "twin", group)  # the same weights, another server and agent
    impostor = olga.agent(impostor_url, "impostor", group)
    client = olga.client(group)
    _served_by(fleet.hub, _chat(client, "tiny"))
    usage_before = fleet.hub.usage()

    started = time.monotonic()
    report = olga.call("POST", f"/api/groups/{group}/spot-checks", {"model": "tiny", "rounds": 100})
    elapsed = time.monotonic() - started

    rounds = report["rounds"]
    assert len(rounds) == 100
    assert elapsed < 60  # lean: 0.35-0.7 s here
    assert report["flagged"] == [impostor]
    caught = next(n for n, r in enumerate(rounds, 1) if impostor in r["flagged"])
    assert caught <= 3  # three disagreements flag it (--spot-check-strikes)
    for r in rounds:
        verdicts = {a["agent_id"]: a["agrees"] for a in r["answers"]}
        assert verdicts[honest] is True
        assert verdicts[twin] is True
        assert r["mode"] == "majority"
    assert all(impostor not in {a["agent_id"] for a in r["answers"]} for r in rounds[caught:])

    # Its owner sees why; consumers' requests no longer reach it; the checks cost nobody anything.
    mine = {a["id"]: a for a in olga.call("GET", "/api/agents")["agents"]}
    (hold,) = mine[impostor]["holds"]
    assert hold["kind"] == "flagged"
    assert hold["group_id"] == group
    assert "differed from the other agents serving it" in hold["reason"]
    (event,) = olga.call("GET", "/api/claim-events")["events"]
    assert (event["change"], event["kind"], event["agent_id"], event["reason"]) == (
        "held",
        "flagged",
        impostor,
        hold["reason"],
    )
    assert mine[honest]["holds"] == []
    assert {_served_by(fleet.hub, _chat(client, "tiny")) for _ in range(4)} <= {honest, twin}
    assert fleet.hub.usage()[4:] == usage_before
    assert _listed(client)["tiny"] == (2, 1)

    # A group admin lifts the flag: it is routed to again (and checked again).
    olga.call("DELETE", f"/api/groups/{group}/holds/{impostor}/tiny")
    assert olga.call("GET", f"/api/groups/{group}/claims")["holds"] == []


def test_spot_checks_look_like_client_requests_on_the_wire(hub_factory: Any) -> None:
    fleet: Fleet = hub_factory("--spot-check-percent", "0")
    model = fleet.model("m")
    backend, url = fleet.backend(model)
    other, other_url = fleet.backend(model)
    olga = Member(fleet, "olga")
    group = olga.call("POST", "/api/groups", {"name": "lab"}, expect=201)["id"]
    olga.agent(url, "a", group)
    olga.agent(other_url, "b", group)
    client = olga.client(group)
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=16, temperature=0, seed=7
    )
    olga.call("POST", f"/api/groups/{group}/spot-checks", {"model": model})

    records = [r for r in [*backend.records, *other.records] if r.path == "/v1/chat/completions"]
    assert len(records) == 3  # the client's request, and one check on each agent
    shapes = {(tuple(sorted(r.headers)), tuple(sorted(r.json or {}))) for r in records}
    assert len(shapes) == 1, shapes


def test_an_agent_below_the_throughput_floor_is_parked_and_its_owner_told(hub_factory: Any) -> None:
    fleet: Fleet = hub_factory("--throughput-min-tokens", "8", "--throughput-strikes", "2", "--throughput-window", "3")
    model = fleet.model("m")
    _fast, fast_url = fleet.backend(model, chunks=16)
    _slow, slow_url = fleet.backend(model, chunks=16, delay=0.02)  # about 50 tokens/s
    olga = Member(fleet, "olga")
    group = olga.call("POST", "/api/groups", {"name": "lab"}, expect=201)["id"]
    slow = olga.agent(slow_url, "slow", group)
    olga.call("PUT", f"/api/groups/{group}/model-rules/*", {"min_tokens_per_s": 200})
    client = olga.client(group)

    # Its second slow answer parks it: the group has no agent for the name any more.
    assert [_served_by(fleet.hub, _chat(client, model)) for _ in range(2)] == [slow, slow]
    with pytest.raises(openai.NotFoundError):
        _chat(client, model)
    mine = {a["id"]: a for a in olga.call("GET", "/api/agents")["agents"]}
    (hold,) = mine[slow]["holds"]
    assert hold["kind"] == "parked"
    assert "below the group's floor of 200 tokens/s in 2 of its last 2 measured requests" in hold["reason"]

    # A fast agent serves it meanwhile; once a group admin lifts the park, the slow one may serve again.
    fast = olga.agent(fast_url, "fast", group)
    assert {_served_by(fleet.hub, _chat(client, model)) for _ in range(3)} == {fast}
    assert olga.call("GET", "/api/agents")["agents"][1]["holds"] == []
    olga.call("DELETE", f"/api/groups/{group}/holds/{slow}/{model}")
    status, explained = fleet.hub.admin("GET", f"/admin/route-explain?model={model}&key_id={olga.key_id}")
    assert status == 200
    assert {c["agent_id"]: c["eligible"] for c in explained["candidates"]} == {slow: True, fast: True}


def test_holds_and_their_events_survive_a_hub_restart(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub", *FAST_HUB_ARGS)
    fleet = Fleet(hub, tmp_path / "fleet")
    try:
        model = fleet.model("m")
        _backend, url = fleet.backend(model)
        olga = Member(fleet, "olga")
        group = olga.call("POST", "/api/groups", {"name": "lab"}, expect=201)["id"]
        agent = olga.agent(url, "a", group)
        olga.call("PUT", f"/api/groups/{group}/claims/policy", {"policy": "approved"})
        olga.call("PUT", f"/api/groups/{group}/approvals/{agent}/{model}")
        pinned = {"reference_prompt": "Say ok", "reference_answer": "not what the fake says"}
        olga.call("PUT", f"/api/groups/{group}/model-rules/{model}", pinned)
        assert olga.call("POST", f"/api/groups/{group}/spot-checks", {"model": model, "rounds": 3})["flagged"] == [
            agent
        ]
    finally:
        fleet.close()
        hub.stop()
    hub = HubProcess(tmp_path / "hub", *FAST_HUB_ARGS)
    try:
        status, login, _ = http_json("POST", hub.url + "/api/login", {"username": "olga", "password": PASSWORD})
        assert status == 200
        status, claims, _ = http_json("GET", f"{hub.url}/api/groups/{group}/claims", None, login["token"])
        assert status == 200
        assert claims["policy"] == "approved"
        assert [(a["agent_id"], a["model"]) for a in claims["approvals"]] == [(agent, model)]
        assert [(h["agent_id"], h["kind"]) for h in claims["holds"]] == [(agent, "flagged")]
        assert claims["rules"][0]["reference_answer"] == "not what the fake says"
        # Its owner still reads why.
        status, events, _ = http_json("GET", f"{hub.url}/api/claim-events", None, login["token"])
        assert status == 200
        assert [(e["change"], e["kind"], e["agent_id"]) for e in events["events"]] == [("held", "flagged", agent)]
    finally:
        hub.stop()


def test_the_hub_spot_checks_on_its_own_within_its_share_of_the_traffic(hub_factory: Any) -> None:
    fleet: Fleet = hub_factory("--spot-check-percent", "50", "--spot-check-interval-s", "0.1")
    model = fleet.model("m")
    backend_a, url_a = fleet.backend(model)
    backend_b, url_b = fleet.backend(model)
    olga = Member(fleet, "olga")
    group = olga.call("POST", "/api/groups", {"name": "lab"}, expect=201)["id"]
    olga.agent(url_a, "a", group)
    olga.agent(url_b, "b", group)
    client = olga.client(group)

    def checks() -> int:
        records = [*backend_a.records, *backend_b.records]
        return sum(1 for r in records if r.path == "/v1/chat/completions" and "seed" in (r.json or {}))

    for _ in range(8):
        _served_by(fleet.hub, _chat(client, model))
    # 8 requests at 50 %: room for 4 check requests, two checks of both agents, and no more.
    assert fleet.hub.wait_for(lambda: checks() == 4, timeout=10)
    assert len(fleet.hub.usage(limit=100)) == 8  # checks are recorded nowhere
    _served_by(fleet.hub, _chat(client, model))
    assert checks() == 4  # 9 requests: 4.5 check requests' worth, not enough for another check of both


def test_a_parked_agent_is_back_after_its_cool_down(hub_factory: Any) -> None:
    fleet: Fleet = hub_factory(
        "--throughput-min-tokens", "8", "--throughput-strikes", "1", "--throughput-window", "1",
        "--throughput-cool-down-s", "2",
    )  # fmt: skip
    model = fleet.model("m")
    _slow, slow_url = fleet.backend(model, chunks=16, delay=0.02)
    olga = Member(fleet, "olga")
    group = olga.call("POST", "/api/groups", {"name": "lab"}, expect=201)["id"]
    slow = olga.agent(slow_url, "slow", group)
    olga.call("PUT", f"/api/groups/{group}/model-rules/{model}", {"min_tokens_per_s": 200})
    client = olga.client(group)

    def kinds() -> list[str]:
        return [h["kind"] for h in olga.call("GET", "/api/agents")["agents"][0]["holds"]]

    _chat(client, model)
    assert fleet.hub.wait_for(lambda: kinds() == ["parked"], timeout=2)  # lifted 2 to 3 s later, not before
    assert fleet.hub.wait_for(lambda: kinds() == [], timeout=10)
    assert _served_by(fleet.hub, _chat(client, model)) == slow
