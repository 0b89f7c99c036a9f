"""Changes made at one replica apply at the others within a second: membership, sharing, an owner's prices and
controls, a group's billing, deletion and model claims (a hold the replica took on its own included).

Each change is made at replica 0 (bob's agent is tunnelled there) and judged by requests at replicas 1 and 2,
which reach the agent over a peer link; the second counts from the moment the changing call returned.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from potluck.api.browser import CSRF_FIELD, SESSION_COOKIE, csrf_token
from potluck.hub.pricing import MICRO, cost, hold_amount
from potluck.store.billing import Price
from testing.processes import HubProcess, http_json
from tests.cluster.conftest import Cluster, Member

pytestmark = pytest.mark.slow

log = logging.getLogger(__name__)

WITHIN_S = 1.0
LARGE_CAP = 100_000
MODELS = ("gone", "joined", "priced", "billed", "deleted", "shared", "claimed", "parked", "paused", "loaded")


@dataclass
class Market:
    """Bob's agent at replica 0, serving one model per test of this module."""

    cluster: Cluster
    bob: Member
    agent_id: str
    models: dict[str, str]


@dataclass
class Guest:
    """A user at replica 0 with a key for every group it is in."""

    member: Member
    user_id: str
    key: str


@pytest.fixture(scope="module")
def market(cluster: Cluster) -> Market:
    models = {name: cluster.model(name) for name in MODELS}
    _backend, url = cluster.backend(*models.values(), chunks=3)
    bob = Member(cluster, cluster.hubs[0])
    agent_id = bob.agent(url, cluster.root / f"market-{uuid.uuid4().hex[:6]}")
    return Market(cluster, bob, agent_id, models)


def guest(market: Market) -> Guest:
    member = Member(market.cluster, market.cluster.hubs[0])
    user_id = member.call("GET", "/api/me")[1]["id"]
    key = member.create("/api/keys", {"name": "propagation"})["key"]
    return Guest(member, user_id, key)


def circle(market: Market, model: str, guests: int, **settings: Any) -> tuple[str, list[Guest]]:
    """A group of bob's with his agent shared into it and ``guests`` new members, each able to use ``model``
    at every replica."""
    bob = market.bob
    group = bob.create("/api/groups", {"name": f"circle-{model}"})["id"]
    if settings:
        assert bob.call("PATCH", f"/api/groups/{group}", settings)[0] == 200
    assert bob.call("POST", f"/api/agents/{market.agent_id}/groups", {"group_id": group})[0] == 200
    members = [guest(market) for _ in range(guests)]
    for one in members:
        code = bob.create(f"/api/groups/{group}/invites", {"max_uses": 1})["code"]
        assert one.member.call("POST", "/api/invites/redeem", {"code": code})[0] == 200
        for hub in market.cluster.hubs:
            assert HubProcess.wait_for(lambda hub=hub, one=one: listed(hub, one.key, model), 5), hub.url
    return group, members


def listed(hub: HubProcess, key: str, model: str) -> bool:
    status, data, _ = http_json("GET", hub.url + "/v1/models", None, key)
    return status == 200 and model in {m["id"] for m in data["data"]}


def chat(hub: HubProcess, key: str, model: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    return http_json(
        "POST", hub.url + "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]}, key
    )


def refused(hub: HubProcess, key: str, model: str, status: int, code: str) -> bool:
    """A request for ``model`` is refused with ``status`` and ``code`` in the OpenAI error shape."""
    got, data, headers = chat(hub, key, model)
    if got != status:
        return False
    assert data["error"]["code"] == code, data
    assert data["error"]["message"]
    assert headers.get("x-request-id") or headers.get("X-Request-Id"), headers
    return True


def served(hub: HubProcess, key: str, model: str) -> bool:
    return chat(hub, key, model)[0] == 200


def reaches_the_others(cluster: Cluster, changed_at: float, what: str, probe: Callable[[HubProcess], bool]) -> None:
    """Wait until ``probe`` holds at replicas 1 and 2, at most `WITHIN_S` after the change."""
    for index in (1, 2):
        hub = cluster.hubs[index]
        assert HubProcess.wait_for(lambda hub=hub: probe(hub), WITHIN_S), f"{what}: not at replica {index}"
    elapsed = time.monotonic() - changed_at
    log.info("%s reached replicas 1 and 2 in %.3f s", what, elapsed)
    assert elapsed <= WITHIN_S, f"{what} took {elapsed:.3f} s"


def change(member: Member, method: str, path: str, body: Any = None) -> float:
    """Make a change at the member's replica; the moment its answer came back."""
    status, data = member.call(method, path, body)
    assert status in (200, 201), data
    return time.monotonic()


# -- membership --------------------------------------------------------------------------------------------------


def test_a_member_removed_or_leaving_at_one_replica_loses_the_groups_agents_at_the_others(market: Market) -> None:
    model = market.models["gone"]
    group, (alice, carol) = circle(market, model, 2)

    changed_at = change(market.bob, "DELETE", f"/api/groups/{group}/members/{alice.user_id}")
    reaches_the_others(
        market.cluster, changed_at, "removal", lambda hub: refused(hub, alice.key, model, 404, "model_not_found")
    )
    changed_at = change(carol.member, "POST", f"/api/groups/{group}/leave")
    reaches_the_others(
        market.cluster, changed_at, "leaving", lambda hub: refused(hub, carol.key, model, 404, "model_not_found")
    )


def test_a_member_added_at_one_replica_reaches_the_groups_agents_at_the_others(market: Market) -> None:
    model = market.models["joined"]
    group, _ = circle(market, model, 0)
    code = market.bob.create(f"/api/groups/{group}/invites", {"max_uses": 2})["code"]
    dave, erin = guest(market), guest(market)
    for one in (dave, erin):  # their keys are known everywhere; the group's agents are not theirs yet
        for hub in market.cluster.hubs[1:]:
            assert HubProcess.wait_for(lambda hub=hub, one=one: refused(hub, one.key, model, 404, "model_not_found"), 5)

    changed_at = change(dave.member, "POST", "/api/invites/redeem", {"code": code})
    reaches_the_others(market.cluster, changed_at, "redeemed invite", lambda hub: served(hub, dave.key, model))
    # The invite link's form (the dashboard's way in) changes membership as the API does.
    changed_at = join_by_link(erin.member, code)
    reaches_the_others(market.cluster, changed_at, "invite link", lambda hub: served(hub, erin.key, model))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def join_by_link(member: Member, code: str) -> float:
    """Redeem ``code`` through the signed-in ``/join/<code>`` form; the moment its answer came back."""
    request = urllib.request.Request(
        member.hub.url + f"/join/{code}",
        data=urllib.parse.urlencode({CSRF_FIELD: csrf_token(member.token)}).encode(),
        headers={"Cookie": f"{SESSION_COOKIE}={member.token}", "Origin": member.hub.url},
    )
    with pytest.raises(urllib.error.HTTPError) as answer:  # the redirect, not followed
        urllib.request.build_opener(_NoRedirect).open(request, timeout=10)
    with answer.value as redirect:
        assert redirect.code == 303, redirect.read()
    return time.monotonic()


# -- prices and billing ------------------------------------------------------------------------------------------


def grant(cluster: Cluster, one: Guest, micro: int) -> None:
    body = {"user_id": one.user_id, "amount": micro / MICRO, "reason": "propagation test"}
    status, data = cluster.hubs[0].admin("POST", "/admin/credits", body)
    assert status == 201, data


def as_json(price: Price) -> dict[str, float]:
    return {"input_per_mtok": price.input_per_mtok, "output_per_mtok": price.output_per_mtok}


def quoted(hub: HubProcess, one: Guest, group: str, agent_id: str, model: str, price: Price) -> bool:
    """The group's price of ``model`` on the agent, as the replica's accounting quotes it now, is ``price``."""
    status, data, _ = http_json("GET", hub.url + f"/api/groups/{group}/prices", None, one.member.token)
    assert status == 200, data
    row = next(r for r in data["data"] if r["agent_id"] == agent_id and r["model"] == model)
    return Price(row["input_per_mtok"], row["output_per_mtok"]) == price


def charged(hub: HubProcess, one: Guest, model: str, price: Price) -> None:
    """A request at ``hub`` is charged exactly the tokens its answer reported at ``price``."""
    status, data, headers = chat(hub, one.key, model)
    assert status == 200, data
    request_id = headers.get("x-request-id") or headers["X-Request-Id"]
    status, signed, _ = http_json("GET", hub.url + f"/api/receipts/{request_id}", None, one.member.token)
    assert status == 200, signed
    receipt = signed["receipt"]
    usage = data["usage"]
    assert (receipt["prompt_tokens"], receipt["completion_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert Price(receipt["input_per_mtok"], receipt["output_per_mtok"]) == price
    assert receipt["multiplier"] == 1.0
    assert receipt["charged"] == cost(usage["prompt_tokens"], usage["completion_tokens"], price) > 0


def test_an_owners_price_change_at_one_replica_is_what_the_others_charge(market: Market) -> None:
    model, cluster = market.models["priced"], market.cluster
    old, new = Price(6000.0, 30000.0), Price(8000.0, 90000.0)
    group, (alice,) = circle(market, model, 1, billing="credits", max_tokens_cap=64)
    grant(cluster, alice, 100 * MICRO)
    prices = f"/api/agents/{market.agent_id}/prices"
    assert market.bob.call("PUT", prices, {model: as_json(old)})[0] == 200
    for hub in cluster.hubs[1:]:
        assert HubProcess.wait_for(lambda hub=hub: quoted(hub, alice, group, market.agent_id, model, old), 5)
        charged(hub, alice, model, old)

    changed_at = change(market.bob, "PUT", prices, {model: as_json(new)})
    reaches_the_others(cluster, changed_at, "price", lambda hub: quoted(hub, alice, group, market.agent_id, model, new))
    for hub in cluster.hubs[1:]:
        charged(hub, alice, model, new)


def test_a_groups_billing_and_bounds_changed_at_one_replica_apply_at_the_others(market: Market) -> None:
    model, cluster = market.models["billed"], market.cluster
    default = Price(3000.0, 40000.0)
    defaults = {f"default_{part}": value for part, value in as_json(default).items()}
    group, (poor, rich, tight) = circle(market, model, 3, max_tokens_cap=LARGE_CAP, **defaults)
    grant(cluster, rich, 10_000 * MICRO)  # holds at the large cap too
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    small_hold = hold_amount(len(body), None, 64, default, 1.0)  # what http_json sends, without max_tokens
    grant(cluster, tight, 3 * small_hold)  # one hold per replica at the small cap; none at the large one
    assert hold_amount(len(body), None, LARGE_CAP, default, 1.0) > 3 * small_hold
    for hub in cluster.hubs[1:]:
        assert served(hub, poor.key, model)  # mutual: free for everyone

    changed_at = change(market.bob, "PATCH", f"/api/groups/{group}", {"billing": "credits"})
    reaches_the_others(
        cluster, changed_at, "credits billing", lambda hub: refused(hub, poor.key, model, 402, "insufficient_quota")
    )
    for hub in cluster.hubs[1:]:
        charged(hub, rich, model, default)
        assert refused(hub, tight.key, model, 402, "insufficient_quota")  # the hold assumes the large cap

    changed_at = change(market.bob, "PATCH", f"/api/groups/{group}", {"max_tokens_cap": 64})
    reaches_the_others(cluster, changed_at, "max_tokens_cap", lambda hub: served(hub, tight.key, model))

    bounded = Price(5000.0, 40000.0)  # the input price is raised to the new minimum, the output one kept
    changed_at = change(market.bob, "PATCH", f"/api/groups/{group}", {"min_price_per_mtok": 5000.0})
    reaches_the_others(
        cluster, changed_at, "price bounds", lambda hub: quoted(hub, rich, group, market.agent_id, model, bounded)
    )
    for hub in cluster.hubs[1:]:
        charged(hub, rich, model, bounded)


# -- groups and sharing ------------------------------------------------------------------------------------------


def test_a_group_deleted_at_one_replica_is_gone_at_the_others(market: Market) -> None:
    model = market.models["deleted"]
    group, (alice,) = circle(market, model, 1, billing="credits")

    changed_at = change(market.bob, "DELETE", f"/api/groups/{group}")
    reaches_the_others(
        market.cluster, changed_at, "deletion", lambda hub: refused(hub, alice.key, model, 404, "model_not_found")
    )
    for hub in market.cluster.hubs[1:]:
        status, data, _ = http_json("GET", hub.url + f"/api/groups/{group}/prices", None, alice.member.token)
        assert (status, data["error"]["code"]) == (404, "not_found")


def test_an_agent_unshared_and_shared_again_at_one_replica_follows_at_the_others(market: Market) -> None:
    model = market.models["shared"]
    group, (alice,) = circle(market, model, 1)

    changed_at = change(market.bob, "DELETE", f"/api/agents/{market.agent_id}/groups/{group}")
    reaches_the_others(
        market.cluster, changed_at, "unsharing", lambda hub: refused(hub, alice.key, model, 404, "model_not_found")
    )
    changed_at = change(market.bob, "POST", f"/api/agents/{market.agent_id}/groups", {"group_id": group})
    reaches_the_others(market.cluster, changed_at, "sharing", lambda hub: served(hub, alice.key, model))


def test_a_groups_serving_policy_and_approvals_set_at_one_replica_apply_at_the_others(market: Market) -> None:
    model = market.models["claimed"]
    group, (alice,) = circle(market, model, 1)
    approval = f"/api/groups/{group}/approvals/{market.agent_id}/{model}"

    changed_at = change(market.bob, "PUT", f"/api/groups/{group}/claims/policy", {"policy": "approved"})
    reaches_the_others(
        market.cluster,
        changed_at,
        "approved-only policy",
        lambda hub: refused(hub, alice.key, model, 404, "model_not_found"),
    )
    changed_at = change(market.bob, "PUT", approval)
    reaches_the_others(market.cluster, changed_at, "approval", lambda hub: served(hub, alice.key, model))
    changed_at = change(market.bob, "DELETE", approval)
    reaches_the_others(
        market.cluster,
        changed_at,
        "withdrawn approval",
        lambda hub: refused(hub, alice.key, model, 404, "model_not_found"),
    )


def test_an_agent_paused_by_its_owner_at_one_replica_takes_no_work_at_the_others(market: Market) -> None:
    model = market.models["paused"]
    _group, (alice,) = circle(market, model, 1)
    controls = f"/api/agents/{market.agent_id}"
    try:
        changed_at = change(market.bob, "PATCH", controls, {"paused": True})
        reaches_the_others(
            market.cluster, changed_at, "pause", lambda hub: refused(hub, alice.key, model, 503, "server_overloaded")
        )
    finally:  # the module's other tests share the agent
        changed_at = change(market.bob, "PATCH", controls, {"paused": False})
    reaches_the_others(market.cluster, changed_at, "resume", lambda hub: served(hub, alice.key, model))


def claims(hub: HubProcess, one: Guest, group: str) -> dict[str, Any]:
    status, data, _ = http_json("GET", hub.url + f"/api/groups/{group}/claims", None, one.member.token)
    assert status == 200, data
    return data


def test_an_agent_parked_by_one_replicas_throughput_floor_is_parked_at_the_others(market: Market) -> None:
    model, hubs = market.models["parked"], market.cluster.hubs
    group, (alice,) = circle(market, model, 1)
    floor = {"min_tokens_per_s": 999_999}  # every answer is below it
    assert market.bob.call("PUT", f"/api/groups/{group}/model-rules/{model}", floor)[0] == 200
    for hub in hubs[1:]:  # the reloads this change caused are over: they cannot carry the park by chance
        assert HubProcess.wait_for(lambda hub=hub: claims(hub, alice, group)["rules"] != [], 5)
    # Answers of at least 32 completion tokens are measured; the fifth one below the floor parks the agent. The
    # hold is taken by replica 0 itself, not by an API call: only its write can tell the others.
    slow = {"model": model, "messages": [{"role": "user", "content": "hi"}], "fake": {"chunks": 40}}
    for _ in range(5):
        assert http_json("POST", hubs[0].url + "/v1/chat/completions", slow, alice.key)[0] == 200
    changed_at = time.monotonic()
    reaches_the_others(
        market.cluster, changed_at, "parked", lambda hub: refused(hub, alice.key, model, 404, "model_not_found")
    )
    assert refused(hubs[0], alice.key, model, 404, "model_not_found")
    for hub in hubs:
        assert [(h["agent_id"], h["kind"]) for h in claims(hub, alice, group)["holds"]] == [(market.agent_id, "parked")]
        assert events(hub, market.bob, model)[:1] == [("held", "parked")]  # its owner reads why at every replica
    changed_at = change(market.bob, "DELETE", f"/api/groups/{group}/holds/{market.agent_id}/{model}")
    reaches_the_others(market.cluster, changed_at, "lifted park", lambda hub: served(hub, alice.key, model))
    for hub in hubs:
        assert events(hub, market.bob, model)[:2] == [("lifted", "parked"), ("held", "parked")]


def events(hub: HubProcess, owner: Member, model: str) -> list[tuple[str, str]]:
    """The owner's claim events for ``model``, newest first, as one replica reads them: (change, kind)."""
    status, data, _ = http_json("GET", hub.url + "/api/claim-events", None, owner.token)
    assert status == 200, data
    return [(e["change"], e["kind"]) for e in data["events"] if e["model"] == model]


# -- load, which dynamic prices follow ----------------------------------------------------------------------------


def multipliers(hubs: list[HubProcess], one: Guest, group: str, agent_id: str, model: str) -> list[float]:
    """Each replica's dynamic multiplier for ``model`` on the agent, once each has computed one."""
    found = []
    for hub in hubs:
        status, data, _ = http_json("GET", hub.url + f"/api/groups/{group}/prices", None, one.member.token)
        assert status == 200, data
        row = next(r for r in data["data"] if r["agent_id"] == agent_id and r["model"] == model)
        found.append(float(row["multiplier"]) if row["reason"] != "not computed yet" else -1.0)
    return found


def test_every_replica_prices_by_the_whole_clusters_load(market: Market) -> None:
    """Requests placed at replica 1 fill bob's agent (tunnelled to replica 0) and queue: replicas 0 and 2, which
    placed none of them, quote the same busy price as replica 1, not the idle discount of what each saw alone."""
    model, cluster = market.models["loaded"], market.cluster
    hubs = cluster.hubs
    group, (alice,) = circle(market, model, 1, billing="credits", dynamic_pricing=True, max_tokens_cap=64)
    grant(cluster, alice, 1_000 * MICRO)
    assert HubProcess.wait_for(lambda: multipliers(hubs, alice, group, market.agent_id, model) == [0.5] * 3, 5)

    # The agent's 8 slots taken and 4 more waiting at replica 1: utilisation 100 %, demand 4/8, so 1 + 0.5.
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "fake": {"hang": True}})
    host, port = hubs[1].url.removeprefix("http://").split(":")
    with contextlib.ExitStack() as held:
        for _ in range(12):
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            held.callback(conn.close)  # the client goes away: the hub cancels its request end to end
            conn.request(
                "POST",
                "/v1/chat/completions",
                body,
                {"Authorization": f"Bearer {alice.key}", "Content-Type": "application/json"},
            )
        busy = lambda: multipliers(hubs, alice, group, market.agent_id, model) == [1.5] * 3  # noqa: E731
        assert HubProcess.wait_for(busy, 5), multipliers(hubs, alice, group, market.agent_id, model)
    idle = lambda: multipliers(hubs, alice, group, market.agent_id, model) == [0.5] * 3  # noqa: E731
    assert HubProcess.wait_for(idle, 5), multipliers(hubs, alice, group, market.agent_id, model)
