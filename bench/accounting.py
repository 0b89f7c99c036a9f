"""What credits cost on the hot path: hold + settle (+ an Ed25519-signed receipt) per request, in-process.

The relay benchmark measures mutual groups (no hold, no receipt). This one times what a request in a
credits group adds on top, with the hub's own `Accounting`, `Ledger` and `HubSigner`, and the group
commit into a real SQLite file:

    .venv/bin/python bench/accounting.py [--requests 20000] [--json]

It prints µs per request for admission (the worst-case hold), settlement (charge, fee split, signed
receipt), the mutual-group path for comparison, and the database time of the group commit per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from potluck._shared.clock import ManualClock
from potluck.hub.access import AccessMap
from potluck.hub.accounting import Accounting, GroupBilling, Served
from potluck.hub.ledger import Ledger
from potluck.hub.outcome import Outcome
from potluck.hub.receipts import HubSigner
from potluck.hub.scheduler import Scheduler, Want
from potluck.protocol.accounts import BillingMode
from potluck.protocol.agent import Usage
from potluck.store.billing import Price
from potluck.store.database import Store
from potluck.store.engine import sqlite_url

BODY = json.dumps(
    {"model": "m", "messages": [{"role": "user", "content": "Say hello in five words."}], "max_tokens": 64}
).encode()


def _accounting(ledger: Ledger, agents: int) -> Accounting:
    access = AccessMap("admin", "default")
    scheduler = Scheduler(ManualClock())
    for n in range(agents):
        agent = f"gpu{n}"
        access.agent_owner[agent] = "bob"
        access.agent_groups[agent] = {"paid", "free"}
        scheduler.upsert_agent(agent, ["m"], 8, hot=["m"], groups=frozenset({"paid", "free"}))
    accounting = Accounting(ledger, HubSigner.generate(), access, scheduler, fee_percent=10)
    accounting.set_billing("paid", GroupBilling(mode=BillingMode.CREDITS, default=Price(100, 1000)))
    accounting.prices = {f"gpu{n}": {"m": Price(100 + n, 1000 + n)} for n in range(agents)}
    return accounting


def _served(groups: frozenset[str] | None) -> Served:
    return Served("key", groups, "gpu0", "m", Usage(20, 40, 60), len(BODY), 1200, 1200, None, Outcome.OK, 200)


async def run(requests: int, agents: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(sqlite_url(Path(tmp) / "bench.db"))
        try:
            ledger = Ledger(store.ledger.append)
            accounting = _accounting(ledger, agents)
            ledger.grant("alice", 10**15, "bench")
            paid = Want(("m",), groups=frozenset({"paid"}), requester="alice")
            free = Want(("m",), groups=frozenset({"free"}), requester="alice")

            start = time.perf_counter()
            holds = [(await accounting.admit(f"r{i}", paid, BODY))[1] for i in range(requests)]
            admit_s = time.perf_counter() - start

            start = time.perf_counter()
            for hold in holds:
                accounting.settle(hold, _served(paid.groups))
            settle_s = time.perf_counter() - start

            start = time.perf_counter()
            for i in range(requests):
                _want, hold = await accounting.admit(f"f{i}", free, BODY)
                accounting.settle(hold, _served(free.groups))
            mutual_s = time.perf_counter() - start

            start = time.perf_counter()
            await ledger.flush()
            flush_s = time.perf_counter() - start
            total = await store.ledger.total()
        finally:
            await store.close()
    per = 1e6 / requests
    return {
        "requests": requests,
        "agents_in_group": agents,
        "admit_hold_us": round(admit_s * per, 2),
        "settle_and_sign_us": round(settle_s * per, 2),
        "credits_total_us": round((admit_s + settle_s) * per, 2),
        "mutual_us": round(mutual_s * per, 2),
        "group_commit_db_us": round(flush_s * per, 2),
        "ledger_sums_to_zero": total == 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--agents", type=int, default=8, help="agents in the credits group (the hold scans them)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.requests, args.agents))
    if args.json:
        print(json.dumps(result))
        return
    for name, value in result.items():
        print(f"{name:24} {value}")


if __name__ == "__main__":
    main()
