"""Cluster fixtures: a real Redis server, hub replicas sharing one database, agents and fake backends.

Replicas run as real processes on 127.0.0.1 with ``--redis-url`` and one ``--database-url``; each agent
is tunnelled to one replica, and a client may call any replica.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from potluck.store.database import Store
from testing.fake_backend import BackgroundServer, FakeBackend
from testing.postgres import PostgresServer
from testing.processes import AgentProcess, HubProcess, http_json
from testing.redis import RedisServer, RedisUnavailableError
from tests.conftest import required

PASSWORD = "a long password"
CLUSTER_SECRET = "test-cluster-secret"
FAST_ARGS = (
    *("--heartbeat-interval", "0.3", "--heartbeat-timeout", "1.5", "--replica-lease-s", "1.5"),
    *("--reprice-interval", "0.2"),
)


def start_redis() -> RedisServer:
    """A started Redis server (skips only outside CI when redis-server is not installed)."""
    return required(RedisServer, RedisUnavailableError).start()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The Redis server of this test process's shared cluster."""
    server = start_redis()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis server for one test alone (one that stops, restarts or kills things)."""
    server = start_redis()
    try:
        yield server
    finally:
        server.close()


class Cluster:
    """Hub replicas on one database and one Redis, and the agents and backends a test starts."""

    def __init__(self, root: Path, redis: RedisServer, database_url: str) -> None:
        self.root = root
        self.redis = redis
        self.database_url = database_url
        self.hubs: list[HubProcess] = []
        self.agents: list[AgentProcess] = []
        self._stack = contextlib.ExitStack()
        self._counter = itertools.count()
        self.key = ""
        self._servers: dict[int, BackgroundServer] = {}

    def replica(self, *extra: str) -> HubProcess:
        hub = HubProcess(
            self.root / f"hub-{len(self.hubs)}",
            *FAST_ARGS,
            "--database-url",
            self.database_url,
            "--redis-url",
            self.redis.url,
            "--cluster-secret",
            CLUSTER_SECRET,
            *extra,
        )
        self.hubs.append(hub)
        if not self.key:
            self.key = hub.create_key("cluster")
        return hub

    def model(self, hint: str = "m") -> str:
        return f"{hint}-{uuid.uuid4().hex[:8]}"

    def backend(self, *models: str, **knobs: Any) -> tuple[FakeBackend, str]:
        backend = FakeBackend(models, **knobs)
        server = self._stack.enter_context(BackgroundServer(backend.make_app()))
        self._servers[id(backend)] = server
        return backend, server.url

    def stop_backend(self, backend: FakeBackend) -> None:
        """Stop one fake backend: its port then refuses connections."""
        self._servers.pop(id(backend)).stop()

    def post_raw(self, hub: HubProcess, path: str, body: dict[str, Any]) -> tuple[int, str]:
        """POST with the cluster's key; the status and the whole body as text (streams included)."""
        request = urllib.request.Request(
            hub.url + path,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def agent(self, hub: HubProcess, *backends: str, max_concurrency: int = 8) -> AgentProcess:
        name = f"agent-{next(self._counter)}-{uuid.uuid4().hex[:6]}"
        agent = AgentProcess(
            hub,
            self.root / name,
            list(backends),
            name=name,
            token=hub.create_agent_token(name),
            max_concurrency=max_concurrency,
        )
        self.agents.append(agent)
        hub.wait_agent(name)
        return agent

    def client(self, hub: HubProcess, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 20)
        client = openai.OpenAI(base_url=hub.url + "/v1", api_key=self.key, **kwargs)
        self._stack.callback(client.close)
        return client

    async def ledger_problems(self) -> list[str]:
        """What the ledger audit finds in the shared database, open holds included (none expected once done)."""
        store = await Store.open(self.database_url)
        try:
            return await store.audit.problems(allow_open_holds=False)
        finally:
            await store.close()

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
        for hub in self.hubs:
            hub.stop()
        self._stack.close()


@pytest.fixture(scope="session")
def cluster(
    redis_server: RedisServer,
    postgres: PostgresServer,
    postgres_template: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """Three replicas sharing one PostgreSQL database and one Redis: started once per test process, shared by
    the tests that leave them as they found them (each uses models and users of its own)."""
    with replicas(
        tmp_path_factory.mktemp("cluster"), redis_server, postgres.create_database(template=postgres_template)
    ) as made:
        yield made


@contextlib.contextmanager
def replicas(root: Path, redis: RedisServer, database_url: str, count: int = 3) -> Iterator[Cluster]:
    """``count`` hub replicas on one database and one Redis; on leaving, they and all the test started stop."""
    made = Cluster(root, redis, database_url)
    try:
        for _ in range(count):
            made.replica()
        yield made
    finally:
        made.close()


class Member:
    """A user of the cluster, driven through the user API of one replica."""

    def __init__(self, cluster: Cluster, hub: HubProcess) -> None:
        self.cluster, self.hub = cluster, hub
        name = f"u{uuid.uuid4().hex[:8]}"
        assert hub.admin("POST", "/admin/users", {"username": name, "password": PASSWORD})[0] == 201
        status, login, _ = http_json("POST", hub.url + "/api/login", {"username": name, "password": PASSWORD})
        assert status == 200
        self.token = str(login["token"])

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        status, data, _ = http_json(method, self.hub.url + path, body, self.token)
        return status, data

    def create(self, path: str, body: Any) -> dict[str, Any]:
        status, data = self.call("POST", path, body)
        assert status in (200, 201), data
        return data

    def agent(self, backend_url: str, root: Path) -> str:
        """An agent of this member's on a backend, tunnelled to this member's replica; its id."""
        name = root.name
        token = self.create("/api/agent-tokens", {"name": name})["token"]
        agent = AgentProcess(self.hub, root, [backend_url], name=name, token=token)
        self.cluster.agents.append(agent)
        return str(self.hub.wait_agent(name)["id"])


def paid_market(cluster: Cluster, hub: HubProcess, model: str, backend_url: str, credits: float) -> tuple[Member, str]:
    """Bob's agent on ``backend_url`` (tunnelled to ``hub``) serving ``model`` in a credits group at 100/1,000
    micro-credits per token in/out, and Alice in that group with ``credits`` credits: Alice and her API key."""
    bob, alice = Member(cluster, hub), Member(cluster, hub)
    group = bob.create("/api/groups", {"name": "market"})["id"]
    billing = {"billing": "credits", "min_price_per_mtok": 1, "max_price_per_mtok": 5000, "max_tokens_cap": 64}
    assert bob.call("PATCH", f"/api/groups/{group}", billing)[0] == 200
    agent_id = bob.agent(backend_url, cluster.root / "bob-gpu")
    assert bob.call("POST", f"/api/agents/{agent_id}/groups", {"group_id": group})[0] == 200
    prices = {model: {"input_per_mtok": 100.0, "output_per_mtok": 1000.0}}
    assert bob.call("PUT", f"/api/agents/{agent_id}/prices", prices)[0] == 200
    code = bob.create(f"/api/groups/{group}/invites", {"max_uses": 5, "expires_in_s": 600})["code"]
    assert alice.call("POST", "/api/invites/redeem", {"code": code})[0] == 200
    key = alice.create("/api/keys", {"name": "alice"})["key"]
    me = alice.call("GET", "/api/me")[1]["id"]
    assert hub.admin("POST", "/admin/credits", {"user_id": me, "amount": credits, "reason": "test"})[0] == 201
    return alice, str(key)
