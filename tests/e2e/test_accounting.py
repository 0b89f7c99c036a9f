"""Credits end to end, with real processes: holds, exact charges, fee split, 402, receipts, reports."""

from __future__ import annotations

import json
import threading
import urllib.request
import uuid
from typing import Any

import openai
import pytest

from potluck.hub.pricing import hold_amount
from potluck.hub.receipts import parse_public_key, verify_receipt
from potluck.store.billing import Price
from testing.processes import http_json
from tests.e2e.conftest import Fleet
from tests.e2e.test_isolation import Member

pytestmark = pytest.mark.slow

PRICE = Price(100.0, 1000.0)
"""Credits per million tokens, so a token costs 100 µcr in and 1,000 µcr out."""
FEE_PERCENT = 10


class Market:
    """Bob runs a credits group with his agent in it; Alice joined it and has credits."""

    def __init__(self, fleet: Fleet, **knobs: Any) -> None:
        self.fleet = fleet
        self.model = fleet.model("paid")
        self.backend, url = fleet.backend(self.model, **knobs)
        suffix = uuid.uuid4().hex[:6]
        self.bob = Member(fleet, f"bob-{suffix}")
        self.alice = Member(fleet, f"alice-{suffix}")
        self.group = self.bob.create("/api/groups", {"name": "market"})["id"]
        status, settings = self.bob.call(
            "PATCH",
            f"/api/groups/{self.group}",
            {"billing": "credits", "min_price_per_mtok": 1, "max_price_per_mtok": 5000, "max_tokens_cap": 64},
        )
        assert status == 200, settings
        assert settings["billing"] == "credits"
        self.agent_name = f"bob-gpu-{suffix}"
        _agent, self.agent_id = self.bob.agent(url, self.agent_name)
        assert self.bob.call("POST", f"/api/agents/{self.agent_id}/groups", {"group_id": self.group})[0] == 200
        prices = {self.model: {"input_per_mtok": PRICE.input_per_mtok, "output_per_mtok": PRICE.output_per_mtok}}
        status, body = self.bob.call("PUT", f"/api/agents/{self.agent_id}/prices", prices)
        assert status == 200, body
        code = self.bob.create(f"/api/groups/{self.group}/invites", {"max_uses": 5, "expires_in_s": 600})["code"]
        assert self.alice.call("POST", "/api/invites/redeem", {"code": code})[0] == 200
        self.alice_key = self.alice.create("/api/keys", {"name": "alice"})["key"]

    def me(self, member: Member) -> str:
        return str(member.call("GET", "/api/me")[1]["id"])

    def grant(self, member: Member, credits: float) -> None:
        status, body = self.fleet.hub.admin(
            "POST", "/admin/credits", {"user_id": self.me(member), "amount": credits, "reason": "test"}
        )
        assert status == 201, body

    def balance(self, member: Member) -> dict[str, Any]:
        status, body = member.call("GET", "/api/balance")
        assert status == 200
        return body


def post_chat(url: str, key: str, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(url + "/v1/chat/completions", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def test_a_request_costs_exactly_its_tokens_and_the_owner_earns_it_less_the_fee(hub_factory: Any) -> None:
    fleet: Fleet = hub_factory("--platform-fee-percent", str(FEE_PERCENT))
    market = Market(fleet)
    market.grant(market.alice, 1.0)
    assert market.balance(market.alice)["balance_micro"] == 1_000_000
    client = market.alice.client(market.alice_key)

    raw = client.chat.completions.with_raw_response.create(
        model=market.model, messages=[{"role": "user", "content": "hello there"}], max_tokens=8
    )
    reply = raw.parse()
    assert reply.usage is not None
    charge = reply.usage.prompt_tokens * 100 + reply.usage.completion_tokens * 1000
    fee = charge * FEE_PERCENT // 100
    assert charge > 0

    alice, bob = market.balance(market.alice), market.balance(market.bob)
    assert (alice["balance_micro"], alice["held_micro"]) == (1_000_000 - charge, 0)
    assert bob["balance_micro"] == charge - fee

    # The receipt: signed by the hub's published key, for the consumer and the owner only.
    request_id = raw.headers["x-request-id"]
    status, signed = market.alice.call("GET", f"/api/receipts/{request_id}")
    assert status == 200, signed
    status, key_doc, _ = http_json("GET", fleet.hub.url + "/.well-known/potluck-hub-key")
    assert status == 200
    receipt = verify_receipt(json.dumps(signed).encode(), parse_public_key(json.dumps(key_doc)))
    assert (receipt.charged, receipt.fee, receipt.earned) == (charge, fee, charge - fee)
    assert (receipt.prompt_tokens, receipt.completion_tokens) == (
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
    )
    assert (receipt.agent_id, receipt.group_id, receipt.model) == (market.agent_id, market.group, market.model)
    assert market.bob.call("GET", f"/api/receipts/{request_id}")[0] == 200
    mallory = Member(fleet, f"mallory-{uuid.uuid4().hex[:6]}")
    assert mallory.call("GET", f"/api/receipts/{request_id}")[0] == 404
    tampered = json.loads(json.dumps(signed))
    tampered["receipt"]["charged"] = 1
    with pytest.raises(Exception, match="signature"):
        verify_receipt(json.dumps(tampered).encode(), parse_public_key(json.dumps(key_doc)))

    # Reports: the consumer's spend, the owner's earnings, the group's totals; JSON and CSV.
    usage = market.alice.call("GET", "/api/usage")[1]["data"]
    assert [(r["model"], r["requests"], r["spend_micro"]) for r in usage] == [(market.model, 1, charge)]
    earnings = market.bob.call("GET", "/api/earnings")[1]["data"]
    assert [(r["agent_id"], r["earned_micro"]) for r in earnings] == [(market.agent_id, charge - fee)]
    totals = market.bob.call("GET", f"/api/groups/{market.group}/usage")[1]["data"]
    assert [(r["requests"], r["spend_micro"], r["earned_micro"]) for r in totals] == [(1, charge, charge - fee)]
    assert market.alice.call("GET", f"/api/groups/{market.group}/usage")[0] == 403
    with urllib.request.urlopen(
        urllib.request.Request(
            fleet.hub.url + "/api/usage?format=csv", headers={"Authorization": f"Bearer {market.alice.token}"}
        )
    ) as resp:
        assert resp.headers["Content-Type"].startswith("text/csv")
        lines = resp.read().decode().splitlines()
    assert lines[0].split(",")[:3] == ["day", "user_id", "key_id"]
    assert len(lines) == 2
    assert market.alice.call("GET", "/api/usage?format=xml")[0] == 400
    with urllib.request.urlopen(
        urllib.request.Request(
            fleet.hub.url + "/api/earnings?format=csv", headers={"Authorization": f"Bearer {mallory.token}"}
        )
    ) as resp:
        assert resp.read().decode().splitlines() == [
            "day,agent_id,model,requests,prompt_tokens,completion_tokens,earned,earned_micro"
        ]
    status, group = market.alice.call("GET", f"/api/groups/{market.group}")
    assert (status, group["billing"], group["role"], group["max_tokens_cap"]) == (200, "credits", "member", 64)
    assert mallory.call("GET", f"/api/groups/{market.group}")[0] == 404

    record = fleet.hub.usage_of(request_id)
    assert (record["outcome"], record["prompt_tokens"]) == ("ok", reply.usage.prompt_tokens)


def test_twenty_concurrent_requests_against_a_balance_for_one_admit_exactly_one(hub_factory: Any) -> None:
    fleet: Fleet = hub_factory()
    market = Market(fleet, first_delay=1.0)
    body = json.dumps({"model": market.model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 8}).encode()
    worst = hold_amount(len(body), 8, 64, PRICE, 1.0)
    granted = worst * 3 // 2
    market.grant(market.alice, granted / 1e6)  # covers one hold, not two
    results: list[tuple[int, dict[str, Any], dict[str, str]]] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def call() -> None:
        start.wait()
        outcome = post_chat(fleet.hub.url, market.alice_key, body)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] + [402] * 19
    refused = next(body for status, body, _ in results if status == 402)
    assert refused["error"]["code"] == "insufficient_quota"
    assert next(h for s, _, h in results if s == 402)["x-request-id"]
    usage = next(body for status, body, _ in results if status == 200)["usage"]
    charge = usage["prompt_tokens"] * 100 + usage["completion_tokens"] * 1000
    balance = market.balance(market.alice)
    assert (balance["balance_micro"], balance["held_micro"]) == (granted - charge, 0)
    assert len([r for r in market.backend.records if r.path == "/v1/chat/completions"]) == 1  # no work for the 19


def test_mutual_groups_charge_nothing_and_serve_users_without_credit(fleet: Fleet) -> None:
    market = Market(fleet)
    status, _ = market.bob.call("PATCH", f"/api/groups/{market.group}", {"billing": "mutual"})
    assert status == 200
    client = market.alice.client(market.alice_key)
    raw = client.chat.completions.with_raw_response.create(
        model=market.model, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().choices[0].message.content
    assert market.balance(market.alice)["balance_micro"] == 0
    record = fleet.hub.usage_of(raw.headers["x-request-id"])
    assert (record["outcome"], record["prompt_tokens"] > 0) == ("ok", True)
    # Back to credits: with no credit and no free route, 402 before any work.
    assert market.bob.call("PATCH", f"/api/groups/{market.group}", {"billing": "credits"})[0] == 200
    before = len(market.backend.records)
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=market.model, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 402
    assert len(market.backend.records) == before


def test_prices_outside_the_groups_bounds_are_refused(fleet: Fleet) -> None:
    market = Market(fleet)
    too_high = {market.model: {"input_per_mtok": 1, "output_per_mtok": 9000}}
    status, body = market.bob.call("PUT", f"/api/agents/{market.agent_id}/prices", too_high)
    assert (status, body["error"]["code"]) == (400, "invalid_request_error")
    assert market.alice.call("PUT", f"/api/agents/{market.agent_id}/prices", too_high)[0] == 404
    status, body = market.bob.call(
        "PATCH", f"/api/groups/{market.group}", {"min_price_per_mtok": 10, "max_price_per_mtok": 1}
    )
    assert status == 400
    assert market.bob.call("PATCH", f"/api/groups/{market.group}", {"billing": "gold"})[0] == 400
    status, quotes = market.alice.call("GET", f"/api/groups/{market.group}/prices")
    assert status == 200
    assert [(q["model"], q["output_per_mtok"]) for q in quotes["data"]] == [(market.model, 1000.0)]


def test_a_stream_the_client_abandons_pays_only_for_what_reached_it(hub_factory: Any) -> None:
    fleet: Fleet = hub_factory()
    market = Market(fleet, chunks=60, delay=0.05)
    market.grant(market.alice, 1.0)
    client = market.alice.client(market.alice_key)
    with client.chat.completions.with_streaming_response.create(
        model=market.model, messages=[{"role": "user", "content": "tell me"}], stream=True, max_tokens=60
    ) as response:
        request_id = response.headers["x-request-id"]
        read = 0
        for line in response.iter_lines():
            if line.startswith("data:"):
                read += 1
            if read >= 6:
                break
    record = fleet.hub.usage_of(request_id, timeout=10)
    assert record["outcome"] == "client_cancelled"
    assert 0 < record["completion_tokens"] < 60
    status, signed = market.alice.call("GET", f"/api/receipts/{request_id}")
    assert status == 200
    paid = signed["receipt"]
    assert paid["completion_tokens"] == record["completion_tokens"]
    assert paid["charged"] == paid["prompt_tokens"] * 100 + paid["completion_tokens"] * 1000
    assert market.balance(market.alice)["balance_micro"] == 1_000_000 - paid["charged"]
