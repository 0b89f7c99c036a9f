"""What a credit hold costs when hub replicas share PostgreSQL (store/holds.py), against the single hub's
in-memory hold, on a throwaway PostgreSQL server started here (testing/postgres.py):

    .venv/bin/python bench/shared_holds.py [--holds 2000] [--replicas 3] [--concurrency 32] [--json]

It prints the latency of one hold and of one settlement by the replica that placed the hold at c=1
(p50, p99; both one statement, one round trip), the CPU this process (the hub's side) spends on the
pair (less sensitive to a loaded machine than the latencies), the holds per second that
``--replicas`` stores (engines) sustain together at ``--concurrency``, and the in-memory hold for scale.
The server runs with fsync off, as in the tests: a durable server adds its commit latency to each hold.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from potluck.hub.ledger import Ledger
from potluck.store.database import Store
from potluck.store.ledger import LedgerTxn
from testing.postgres import PostgresServer

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _us(samples: list[float], q: float) -> float:
    return round(statistics.quantiles(samples, n=100)[int(q) - 1] * 1e6, 1)


async def _discard(_txns: object, _receipts: object) -> None:
    return None


async def run(holds: int, replicas: int, concurrency: int) -> dict[str, Any]:
    with PostgresServer() as server:
        url = server.create_database()
        stores = [await Store.open(url, migrate=i == 0) for i in range(replicas)]
        try:
            first = stores[0]
            big = 10**14
            await first.holds.record(LedgerTxn("grant", "grant", None, "bench", T0, (("mint", -big), ("user:u", big))))
            ids = itertools.count()

            hold_s: list[float] = []
            settle_s: list[float] = []
            cpu_start = time.process_time()
            for _ in range(holds):
                n = next(ids)
                start = time.perf_counter()
                await first.holds.hold(f"h{n}", f"r{n}", "u", 1000, T0)
                hold_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                await first.holds.settle(
                    f"s{n}", f"r{n}", 600, [("user:o", 540), ("platform", 60)], T0, held=("u", 1000)
                )
                settle_s.append(time.perf_counter() - start)
            cpu_s = time.process_time() - cpu_start

            queue = asyncio.Queue[int]()
            for _ in range(holds):
                queue.put_nowait(next(ids))

            async def worker(store: Store) -> None:
                while not queue.empty():
                    n = queue.get_nowait()
                    await store.holds.hold(f"h{n}", f"r{n}", "u", 1000, T0)

            start = time.perf_counter()
            async with asyncio.TaskGroup() as tg:
                for i in range(concurrency):
                    tg.create_task(worker(stores[i % replicas]))
            concurrent_s = time.perf_counter() - start
            problems = await first.audit.problems()
        finally:
            for store in stores:
                await store.close()

    ledger = Ledger(_discard)
    ledger.grant("u", big, "bench")
    start = time.perf_counter()
    for n in range(holds):
        ledger.hold(f"r{n}", "u", 1000)
    local_s = time.perf_counter() - start
    return {
        "holds": holds,
        "replicas": replicas,
        "concurrency": concurrency,
        "shared_hold_p50_us": _us(hold_s, 50),
        "shared_hold_p99_us": _us(hold_s, 99),
        "shared_settle_p50_us": _us(settle_s, 50),
        "shared_settle_p99_us": _us(settle_s, 99),
        "hub_cpu_per_hold_and_settle_us": round(cpu_s / holds * 1e6, 1),
        "shared_holds_per_s_one_account": round(holds / concurrent_s),
        "local_hold_us": round(local_s / holds * 1e6, 2),
        "audit_problems": len(problems),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--holds", type=int, default=2000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.holds, args.replicas, args.concurrency))
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:34} {value}")


if __name__ == "__main__":
    main()
