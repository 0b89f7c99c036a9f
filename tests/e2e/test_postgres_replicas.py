"""Three hub processes on one PostgreSQL, each with its own agent: twenty concurrent requests split over
them, against a balance that covers one, admit exactly one (the database decides every hold)."""

from __future__ import annotations

import copy
import json
import threading
from typing import Any

import pytest

from potluck.hub.pricing import hold_amount
from tests.e2e.conftest import Fleet
from tests.e2e.test_accounting import PRICE, Market, post_chat
from tests.e2e.test_postgres_hub import ledger_problems

pytestmark = pytest.mark.slow


def test_twenty_requests_over_three_replicas_against_a_balance_for_one_admit_exactly_one(
    hub_factory: Any, postgres_url: str
) -> None:
    first: Fleet = hub_factory("--database-url", postgres_url)
    market = Market(first, first_delay=1.0)
    body = json.dumps({"model": market.model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 8}).encode()
    granted = hold_amount(len(body), 8, 64, PRICE, 1.0) * 3 // 2
    market.grant(market.alice, granted / 1e6)  # covers one hold, not two
    backend_url = first.servers[id(market.backend)].url
    # The other replicas start after the accounts, keys and prices exist, and each gets an agent of Bob's.
    hubs = [first.hub]
    for n in (1, 2):
        fleet: Fleet = hub_factory("--database-url", postgres_url)
        bob = copy.copy(market.bob)
        bob.fleet, bob.hub = fleet, fleet.hub
        _agent, agent_id = bob.agent(backend_url, f"{market.agent_name}-{n}")
        assert bob.call("POST", f"/api/agents/{agent_id}/groups", {"group_id": market.group})[0] == 200
        prices = {market.model: {"input_per_mtok": PRICE.input_per_mtok, "output_per_mtok": PRICE.output_per_mtok}}
        assert bob.call("PUT", f"/api/agents/{agent_id}/prices", prices)[0] == 200
        hubs.append(fleet.hub)

    results: list[tuple[int, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def call(n: int) -> None:
        start.wait()
        status, _body, _headers = post_chat(hubs[n % 3].url, market.alice_key, body)
        with lock:
            results.append((status, hubs[n % 3].url))

    threads = [threading.Thread(target=call, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [402] * 19, results
    assert len([r for r in market.backend.records if r.path == "/v1/chat/completions"]) == 1
    for hub in hubs:  # settlements are written behind the answer: a graceful stop writes what is pending
        hub.stop()
        assert hub.proc.returncode == 0, hub.log()
    assert ledger_problems(postgres_url) == []
