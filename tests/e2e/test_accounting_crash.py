"""`kill -9` of the hub under paid load, then a restart: the books still balance.

Invariants checked on the database after recovery: every transaction sums to zero and so does the
whole ledger; no hold is left open and no request is settled twice; no balance is negative; every
receipt a client fetched before the crash survived and verifies; every receipt has its usage record
with the same charge, and no usage record claims a charge without a receipt.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from potluck.hub.receipts import parse_public_key, verify_receipt
from testing.processes import HubProcess, free_port, http_json
from tests.e2e.conftest import FAST_HUB_ARGS, Fleet
from tests.e2e.test_accounting import Market, post_chat

pytestmark = pytest.mark.slow

CLIENTS = 6


def test_kill_9_under_load_loses_no_settled_usage_and_charges_nothing_twice(tmp_path: Path) -> None:
    args = ("--port", str(free_port()), *FAST_HUB_ARGS, "--platform-fee-percent", "10")
    hub = HubProcess(tmp_path / "hub", *args)
    fleet = Fleet(hub, tmp_path / "fleet")
    restarted: HubProcess | None = None
    try:
        market = Market(fleet, first_delay=0.05, chunks=4)
        market.grant(market.alice, 50.0)
        key_doc = http_json("GET", hub.url + "/.well-known/potluck-hub-key")[1]
        load = PaidLoad(hub, market)
        load.start()
        assert hub.wait_for(lambda: len(load.fetched) >= 5 and len(load.served) >= 40, 30), load
        hub.kill()  # SIGKILL, mid-load: requests in flight, holds open, batches unwritten
        load.stop()
        fetched = load.fetched

        db = sqlite3.connect(tmp_path / "hub" / "potluck.db")
        try:
            left_open = open_holds(db)
        finally:
            db.close()
        restarted = HubProcess(tmp_path / "hub", *args)
        if left_open:
            assert f"{len(left_open)} open holds released" in restarted.log()
        db = sqlite3.connect(tmp_path / "hub" / "potluck.db")
        try:
            check_books(db)
            stored = {
                rid: (payload, sig)
                for rid, payload, sig in db.execute("SELECT request_id, payload, signature FROM receipts")
            }
            charged = dict(db.execute("SELECT request_id, charged FROM usage_records WHERE charged > 0"))
        finally:
            db.close()

        key = parse_public_key(json.dumps(key_doc))
        for rid, signed in fetched.items():
            assert rid in stored, f"receipt {rid} fetched before the crash is gone"
            payload, signature = stored[rid]
            assert json.loads(payload) == signed["receipt"]
            assert signature == signed["signature"]
            verify_receipt(json.dumps(signed).encode(), key)
        receipts = {rid: json.loads(payload)["charged"] for rid, (payload, _) in stored.items()}
        assert charged == {rid: amount for rid, amount in receipts.items() if amount > 0}

        # The restarted hub serves and bills on the recovered balances.
        restarted.wait_agent(market.agent_name, timeout=20)
        before = market.balance(market.alice)
        assert before["held_micro"] == 0
        status, reply, _ = post_chat(
            restarted.url,
            market.alice_key,
            json.dumps({"model": market.model, "messages": [{"role": "user", "content": "after"}]}).encode(),
        )
        assert status == 200, reply
        after = market.balance(market.alice)
        usage = reply["usage"]
        assert after["balance_micro"] == before["balance_micro"] - (
            usage["prompt_tokens"] * 100 + usage["completion_tokens"] * 1000
        )
    finally:
        fleet.close()
        hub.stop()
        if restarted is not None:
            restarted.stop()


class PaidLoad:
    """Clients sending paid requests in a loop; some fetch their receipts and keep them."""

    def __init__(self, hub: HubProcess, market: Market) -> None:
        self.hub = hub
        self.market = market
        self.fetched: dict[str, dict[str, Any]] = {}
        self.served: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(CLIENTS)]

    def __repr__(self) -> str:
        return f"PaidLoad(served={len(self.served)}, fetched={len(self.fetched)})"

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _client(self, n: int) -> None:
        market = self.market
        body = json.dumps(
            {"model": market.model, "messages": [{"role": "user", "content": f"q{n}"}], "max_tokens": 4}
        ).encode()
        while not self._stop.is_set():
            try:
                status, _reply, headers = post_chat(self.hub.url, market.alice_key, body)
                if status == 200:
                    self._served(headers["x-request-id"])
            except OSError:
                return  # the hub is gone

    def _served(self, rid: str) -> None:
        with self._lock:
            self.served.append(rid)
            keep = len(self.served) % 5 == 0
        if keep:
            code, signed, _ = http_json("GET", f"{self.hub.url}/api/receipts/{rid}", None, self.market.alice.token)
            if code == 200:
                with self._lock:
                    self.fetched[rid] = signed


def check_books(db: sqlite3.Connection) -> None:
    unbalanced = db.execute(
        "SELECT txn_id, SUM(amount) FROM ledger_entries GROUP BY txn_id HAVING SUM(amount) != 0"
    ).fetchall()
    assert unbalanced == []
    assert db.execute("SELECT COALESCE(SUM(amount), 0) FROM ledger_entries").fetchone() == (0,)
    twice = db.execute(
        "SELECT request_id FROM ledger_txns WHERE kind = 'settle' GROUP BY request_id HAVING COUNT(*) > 1"
    ).fetchall()
    assert twice == []
    assert open_holds(db) == []
    balances = dict(db.execute("SELECT account, SUM(amount) FROM ledger_entries GROUP BY account"))
    assert all(v == 0 for a, v in balances.items() if a.startswith("hold:")), balances
    assert all(v >= 0 for a, v in balances.items() if a.startswith("user:") or a == "platform"), balances
    assert balances.get("mint", 0) < 0
    holds = db.execute("SELECT COUNT(*) FROM ledger_txns WHERE kind = 'hold'").fetchone()[0]
    assert holds > 0


def open_holds(db: sqlite3.Connection) -> list[str]:
    rows = db.execute(
        "SELECT h.request_id FROM ledger_txns h WHERE h.kind = 'hold' AND NOT EXISTS "
        "(SELECT 1 FROM ledger_txns s WHERE s.kind = 'settle' AND s.request_id = h.request_id)"
    ).fetchall()
    return [str(r[0]) for r in rows]
