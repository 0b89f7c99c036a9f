"""PostgreSQL restarts under three hub replicas serving paid traffic: no client gets a 500, a request refused
during the outage gets a retryable 503 in the OpenAI shape, every request answered 200 is settled exactly once
with its receipt (settlements the outage held up land after it), and every replica serves again."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from potluck.store.database import Store
from potluck.store.engine import migrate_database
from testing.postgres import PostgresServer, PostgresUnavailableError
from testing.processes import ADMIN_TOKEN, HubProcess, http_json
from testing.redis import RedisServer
from tests.cluster.conftest import Cluster, paid_market, replicas
from tests.conftest import required

pytestmark = pytest.mark.slow

SERVING_AGAIN_S = 10.0


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this test alone (it restarts it)."""
    server = required(PostgresServer, PostgresUnavailableError).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def three(own_redis: RedisServer, own_postgres: PostgresServer, tmp_path: Path) -> Iterator[Cluster]:
    """Three replicas on a database and a Redis of their own."""
    url = own_postgres.create_database()
    asyncio.run(migrate_database(url))
    with replicas(tmp_path, own_redis, url) as made:
        yield made


@dataclass(frozen=True, slots=True)
class Answer:
    replica: int
    sent: float
    answered: float
    status: int
    body: dict[str, object]
    headers: dict[str, str]


class Traffic:
    """Paid chat requests, one thread per replica, each sending the next when the last is answered."""

    def __init__(self, hubs: list[HubProcess], key: str, model: str) -> None:
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._changed = threading.Condition()
        body = {"model": model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 8}
        self._threads = [
            threading.Thread(target=self._send, args=(i, hub.url, key, body), daemon=True) for i, hub in enumerate(hubs)
        ]

    def _send(self, replica: int, url: str, key: str, body: dict[str, object]) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            status, data, headers = http_json("POST", url + "/v1/chat/completions", body, key, timeout=20)
            with self._changed:
                self.answers.append(Answer(replica, sent, time.monotonic(), status, data, headers))
                self._changed.notify_all()

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(25)

    def wait(self, predicate: Callable[[list[Answer]], bool], timeout: float) -> bool:
        """Wait until ``predicate(answers)`` holds (checked on every answer)."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.answers), timeout)


def _models(hub: HubProcess, key: str) -> set[str]:
    status, data, _ = http_json("GET", hub.url + "/v1/models", None, key)
    return {m["id"] for m in data.get("data", [])} if status == 200 else set()


def _ready(hub: HubProcess) -> tuple[int, str]:
    status, data, _ = http_json("GET", hub.url + "/readyz", timeout=5)
    return status, str(data.get("status"))


@pytest.mark.timeout(120)  # about 13 s alone; more on a busy machine
async def test_a_postgresql_restart_costs_no_settlement_and_no_500(
    three: Cluster, own_postgres: PostgresServer
) -> None:
    cluster = three
    b = cluster.hubs[1]
    model = cluster.model("paid")
    backend, url = cluster.backend(model, chunks=2, delay=0.4)  # in flight long enough to settle during the outage
    alice, key = paid_market(cluster, b, model, url, 10.0)  # the agent is tunnelled to b: a's and c's go through b
    me = alice.call("GET", "/api/me")[1]["id"]

    free = cluster.model("free")  # served in the admin's mutual group: no hold, no database on its path
    cluster.agent(cluster.hubs[0], cluster.backend(free, chunks=1)[1])
    for hub in cluster.hubs:  # the key, the group's billing and the agent's prices have reached every replica
        assert await asyncio.to_thread(HubProcess.wait_for, lambda hub=hub: model in _models(hub, key), 5)
        assert await asyncio.to_thread(HubProcess.wait_for, lambda hub=hub: free in _models(hub, cluster.key), 5)

    def served_everywhere(answers: list[Answer]) -> bool:
        return {x.replica for x in answers if x.status == 200} == {0, 1, 2}

    with Traffic(cluster.hubs, key, model) as traffic:
        assert await asyncio.to_thread(traffic.wait, served_everywhere, 10), traffic.answers[-3:]
        assert await backend.wait_for_async(lambda: backend.in_flight >= 2, 5)  # held, not yet settled

        halting = time.monotonic()
        await asyncio.to_thread(own_postgres.halt)
        down = time.monotonic()
        # While it is down: readiness says so, and the traffic goes on (refused or served, never a 500).
        readiness = [await asyncio.to_thread(_ready, hub) for hub in cluster.hubs]
        reads = [
            await asyncio.to_thread(http_json, "GET", hub.url + "/api/balance", None, alice.token)
            for hub in cluster.hubs
        ]
        reads.append(await asyncio.to_thread(http_json, "GET", b.url + "/admin/usage", None, ADMIN_TOKEN))
        ask = {"model": free, "messages": [{"role": "user", "content": "x"}]}
        mutual = [
            (await asyncio.to_thread(http_json, "POST", hub.url + "/v1/chat/completions", ask, cluster.key))[0]
            for hub in cluster.hubs
        ]

        def outage_seen(answers: list[Answer]) -> bool:
            refused = {x.replica for x in answers if x.sent > down and x.status != 200}
            return refused == {0, 1, 2} and any(x.sent < halting < down < x.answered for x in answers)

        assert await asyncio.to_thread(traffic.wait, outage_seen, 10), traffic.answers[-3:]
        await asyncio.to_thread(own_postgres.resume)
        up = time.monotonic()

        def serving_again(answers: list[Answer]) -> bool:
            return {x.replica for x in answers if x.sent > up and x.status == 200} == {0, 1, 2}

        assert await asyncio.to_thread(traffic.wait, serving_again, SERVING_AGAIN_S), traffic.answers[-3:]
        # When each replica first took a request it then served, after the outage began (sent, not answered: a
        # request lasts ~0.8 s); before `up` when it served while `resume` was still waiting for pg_isready.
        again = max(
            min(x.sent for x in traffic.answers if x.replica == r and x.status == 200 and x.sent > down)
            for r in range(3)
        )
    assert readiness == [(503, "database_unavailable")] * 3
    assert mutual == [200] * 3
    # A read of the user or admin API that needs the database is refused the same retryable way.
    for status, answer, headers in reads:
        assert (status, answer["error"]["code"], headers["Retry-After"]) == (503, "server_overloaded", "1"), answer
    assert [_ready(hub) for hub in cluster.hubs] == [(200, "ready")] * 3

    answers = traffic.answers
    refused = [x for x in answers if x.status != 200]
    assert {x.status for x in refused} == {503}, [(x.status, x.body) for x in refused if x.status != 503][:3]
    for x in refused:
        error = x.body["error"]
        assert isinstance(error, dict), x.body
        assert error["code"] == "server_overloaded", x.body
        assert int(x.headers["Retry-After"]) >= 1
        assert x.headers["x-request-id"]
    outage = [x for x in answers if x.answered > halting and x.sent < up]
    # Held before the outage and answered during it: their settlements had to wait for the database.
    settled_late = [x for x in outage if x.status == 200 and x.sent < halting and x.answered < up]
    assert settled_late
    print(  # noqa: T201
        f"{len(answers)} requests; the outage lasted {up - halting:.2f} s (halt {down - halting:.2f} s); of "
        f"{len(outage)} requests that met it, {sum(x.status == 200 for x in outage)} answered 200 "
        f"({len(settled_late)} held before it and answered during it) and {sum(x.status == 503 for x in outage)} "
        f"answered 503; after it was back, {sum(x.status == 503 for x in answers if x.sent > up)} more answered 503 "
        f"and every replica took a request it then served {again - up:+.2f} s after PostgreSQL answered pg_isready"
    )

    # Every request answered 200 is settled exactly once, with its receipt and its usage record, once the
    # replicas have written what the outage held up; the refused ones are charged nothing.
    paid = {x.headers["x-request-id"] for x in answers if x.status == 200}
    store = await Store.open(cluster.database_url)
    try:

        async def books() -> Books:
            settled = await store.ledger.settled_request_ids(paid)
            receipts = await store.ledger.receipts(consumer_id=me, limit=len(answers) + 1)
            usage = await store.history.page(me, limit=len(answers) + 1)
            return Books(
                settled,
                {r.request_id: int(json.loads(r.payload)["charged"]) for r in receipts},
                {u.request_id: u.charged for u in usage},
                await store.audit.problems(allow_open_holds=False),
            )

        async with asyncio.timeout(10):
            while not (books_now := await books()).whole(paid):
                await asyncio.sleep(0.05)  # polling the database: nothing announces a replica's late write
    finally:
        await store.close()
    charged, usage = books_now.charged, books_now.usage
    assert all(amount > 0 for amount in charged.values())
    assert {rid for rid, amount in usage.items() if amount} == paid
    assert {rid: usage[rid] for rid in paid} == charged
    assert sum(usage.values()) == sum(charged.values())


@dataclass(frozen=True, slots=True)
class Books:
    """What the database says of the test's requests."""

    settled: set[str]
    charged: dict[str, int]
    """request_id -> the receipt's charge."""
    usage: dict[str, int]
    """request_id -> the usage record's charge."""
    problems: list[str]

    def whole(self, paid: set[str]) -> bool:
        return self.settled == paid and self.charged.keys() == paid and paid <= self.usage.keys() and not self.problems
