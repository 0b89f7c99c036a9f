"""An absurd credit grant never stalls the ledger: real hub, agent and backend, then `kill -9` and a restart.

The grant that once overflowed SQLite's integers (1e13 credits) answered 200 and stopped every later
settlement from being written: receipts answered 404, and a restart lost what had been paid.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from potluck.hub.pricing import MICRO
from potluck.store.ledger import MAX_AMOUNT
from testing.processes import ADMIN_TOKEN, HubProcess, free_port, http_json
from tests.e2e.conftest import FAST_HUB_ARGS, Fleet
from tests.e2e.test_accounting import Market, post_chat
from tests.e2e.test_accounting_crash import check_books

pytestmark = pytest.mark.slow

MAX_CREDITS = MAX_AMOUNT // MICRO


def test_absurd_grants_are_refused_and_settlements_receipts_and_a_restart_stay_intact(tmp_path: Path) -> None:
    args = ("--port", str(free_port()), *FAST_HUB_ARGS, "--platform-fee-percent", "10")
    hub = HubProcess(tmp_path / "hub", *args)
    fleet = Fleet(hub, tmp_path / "fleet")
    restarted: HubProcess | None = None
    try:
        market = Market(fleet)
        alice_id, bob_id = market.me(market.alice), market.me(market.bob)

        for absurd in (1e13, 2.0**63, MAX_CREDITS + 1):
            status, body, headers = http_json(
                "POST",
                hub.url + "/admin/credits",
                {"user_id": alice_id, "amount": absurd, "reason": "absurd"},
                ADMIN_TOKEN,
            )
            assert status == 400, (absurd, body)
            assert (body["error"]["type"], body["error"]["param"]) == ("invalid_request_error", "amount")
            assert headers["x-request-id"]
        # The biggest grant the ledger takes: every credit there can be. Then not one more, to anyone.
        status, body = hub.admin(
            "POST", "/admin/credits", {"user_id": alice_id, "amount": MAX_CREDITS, "reason": "all"}
        )
        assert (status, body.get("balance_micro")) == (201, MAX_AMOUNT), body
        status, body = hub.admin("POST", "/admin/credits", {"user_id": bob_id, "amount": 1, "reason": "one more"})
        assert status == 400, body

        paid = [_paid_request(market, n) for n in range(3)]
        receipts = {}
        for request_id in paid:
            status, signed = market.alice.call("GET", f"/api/receipts/{request_id}")
            assert status == 200, (request_id, signed)
            receipts[request_id] = signed
        charged = sum(r["receipt"]["charged"] for r in receipts.values())
        earned = sum(r["receipt"]["earned"] for r in receipts.values())
        assert charged > 0
        alice, bob = market.balance(market.alice), market.balance(market.bob)
        assert (alice["balance_micro"], alice["held_micro"], bob["balance_micro"]) == (
            MAX_AMOUNT - charged,
            0,
            earned,
        )
        assert "writing the ledger failed" not in hub.log()

        hub.kill()  # SIGKILL: only what the database holds survives
        restarted = HubProcess(tmp_path / "hub", *args)
        assert market.balance(market.alice) == alice
        assert market.balance(market.bob) == bob
        for request_id, signed in receipts.items():
            assert market.alice.call("GET", f"/api/receipts/{request_id}") == (200, signed)
        with urllib.request.urlopen(restarted.url + "/metrics", timeout=5) as resp:
            assert "potluck_hub_ledger_dropped_total 0.0" in resp.read().decode()
    finally:
        fleet.close()
        hub.stop()
        if restarted is not None:
            restarted.stop()
    db = sqlite3.connect(tmp_path / "hub" / "potluck.db")
    try:
        check_books(db)
    finally:
        db.close()


def _paid_request(market: Market, n: int) -> str:
    body: dict[str, Any] = {"model": market.model, "messages": [{"role": "user", "content": f"q{n}"}], "max_tokens": 8}
    status, reply, headers = post_chat(market.fleet.hub.url, market.alice_key, json.dumps(body).encode())
    assert status == 200, reply
    return headers["x-request-id"]
