"""Credit holds across replicas: a balance that covers one request admits exactly one of twenty spread over
three replicas, and it is charged once."""

from __future__ import annotations

import json
import threading

import pytest

from potluck.hub.pricing import hold_amount
from potluck.store.billing import Price
from testing.processes import HubProcess, http_json
from tests.cluster.conftest import Cluster, Member

pytestmark = pytest.mark.slow

PRICE = Price(100.0, 1000.0)


async def test_twenty_requests_over_three_replicas_against_a_balance_for_one_admit_one(cluster: Cluster) -> None:
    import asyncio

    a, b, c = cluster.hubs
    model = cluster.model("paid")
    backend, url = cluster.backend(model, first_delay=1.0)
    bob, alice = Member(cluster, b), Member(cluster, a)
    group = bob.create("/api/groups", {"name": f"market-{model}"})["id"]
    billing = {"billing": "credits", "min_price_per_mtok": 1, "max_price_per_mtok": 5000, "max_tokens_cap": 64}
    assert bob.call("PATCH", f"/api/groups/{group}", billing)[0] == 200
    agent_id = bob.agent(url, cluster.root / f"gpu-{model}")
    assert bob.call("POST", f"/api/agents/{agent_id}/groups", {"group_id": group})[0] == 200
    prices = {model: {"input_per_mtok": PRICE.input_per_mtok, "output_per_mtok": PRICE.output_per_mtok}}
    assert bob.call("PUT", f"/api/agents/{agent_id}/prices", prices)[0] == 200
    code = bob.create(f"/api/groups/{group}/invites", {"max_uses": 5, "expires_in_s": 600})["code"]
    assert await asyncio.to_thread(
        HubProcess.wait_for, lambda: alice.call("POST", "/api/invites/redeem", {"code": code})[0] == 200, 2
    )
    key = alice.create("/api/keys", {"name": "alice"})["key"]
    body = {"model": model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 8}
    worst = hold_amount(len(json.dumps(body)), 8, 64, PRICE, 1.0)  # the bytes http_json sends
    granted = worst * 3 // 2  # covers one hold, not two
    me = alice.call("GET", "/api/me")[1]["id"]
    assert a.admin("POST", "/admin/credits", {"user_id": me, "amount": granted / 1e6, "reason": "test"})[0] == 201

    def ready(hub: HubProcess) -> bool:  # key, group, prices and agent known at every replica
        status, data, _ = http_json("GET", hub.url + "/v1/models", None, key)
        return status == 200 and model in {m["id"] for m in data["data"]}

    for hub in cluster.hubs:
        assert await asyncio.to_thread(HubProcess.wait_for, lambda hub=hub: ready(hub), 3), (
            hub.url,
            http_json("GET", hub.url + "/v1/models", None, key)[:2],
            hub.admin("GET", "/admin/agents"),
        )

    results: list[int] = []
    answers: list[tuple[int, int, object]] = []  # (replica, status, body): what a failure shows
    lock = threading.Lock()
    start = threading.Barrier(20)

    def call(i: int) -> None:
        start.wait()
        hub = cluster.hubs[i % 3]
        status, answer, _ = http_json("POST", hub.url + "/v1/chat/completions", body, key)
        with lock:
            results.append(status)
            answers.append((i % 3, status, answer.get("error", "")))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join, 30)

    assert sorted(results) == [200] + [402] * 19, sorted(answers, key=repr)
    assert len([r for r in backend.records if r.path == "/v1/chat/completions"]) == 1  # no work for the 19

    def settled() -> bool:
        balance = alice.call("GET", "/api/balance")[1]
        return bool(balance["held_micro"] == 0 and 0 < balance["balance_micro"] < granted)

    assert await asyncio.to_thread(HubProcess.wait_for, settled, 5)
    assert await cluster.ledger_problems() == []
    assert c.proc.poll() is None
