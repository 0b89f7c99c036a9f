"""A replica that is slow or briefly cut off is not a dead one: a request for an agent behind a peer link that
is reconnecting waits for the link instead of getting a 404, and a replica whose lease lapsed while its link
still answered is neither swept nor forgotten."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from testing.balancer import Balancer
from testing.postgres import PostgresServer
from testing.processes import HubProcess, http_json
from testing.redis import RedisServer
from tests.cluster.conftest import Cluster, replicas

pytestmark = pytest.mark.slow

WAITS = "potluck_hub_peer_link_waits_total"


@pytest.fixture
def pair(
    own_redis: RedisServer, postgres: PostgresServer, postgres_template: str, tmp_path: Path
) -> Iterator[tuple[Cluster, Balancer, str]]:
    """Replicas A and B, B reached by its peers through a balancer the test can cut, and an agent on B serving
    a model of its own: the cluster, the balancer and the model."""
    database = postgres.create_database(template=postgres_template)
    with replicas(tmp_path, own_redis, database, count=0) as made, Balancer([]) as balancer:
        made.replica()
        b = made.replica("--advertise-url", balancer.url)
        balancer.upstreams = [(str(urlsplit(b.url).hostname), int(urlsplit(b.url).port or 0))]
        model = made.model("linked")
        _backend, url = made.backend(model)
        made.agent(b, url)
        assert HubProcess.wait_for(lambda: _served(made, made.hubs[0], model), 10)
        yield made, balancer, model


def _served(cluster: Cluster, hub: HubProcess, model: str) -> bool:
    status, data, _ = http_json("GET", hub.url + "/v1/models", None, cluster.key)
    return status == 200 and model in {m["id"] for m in data["data"]}


def _chat(cluster: Cluster, hub: HubProcess, model: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    body = {"model": model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 4}
    return http_json("POST", hub.url + "/v1/chat/completions", body, cluster.key)


def _links_up(hub: HubProcess) -> int:
    status, data, _ = http_json("GET", hub.url + "/readyz", None, None)
    return int(data["cluster"]["linked"]) if status == 200 else -1


def _waits(hub: HubProcess) -> float:
    """The replica's count of requests that waited for a peer link (its samples carry a replica label)."""
    with urllib.request.urlopen(hub.url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(WAITS + "{"))


async def test_a_request_waits_for_a_peer_link_that_is_reconnecting(pair: tuple[Cluster, Balancer, str]) -> None:
    cluster, balancer, model = pair
    a = cluster.hubs[0]
    balancer.cut()
    assert await asyncio.to_thread(HubProcess.wait_for, lambda: _links_up(a) == 0, 10)

    answer: list[tuple[int, dict[str, Any], dict[str, str]]] = []
    request = threading.Thread(target=lambda: answer.append(_chat(cluster, a, model)))
    request.start()
    # A holds the request (it would have answered 404 at once): it waits for the link to come back.
    assert await asyncio.to_thread(HubProcess.wait_for, lambda: _waits(a) == 1, 10)
    assert not answer
    balancer.restore()
    await asyncio.to_thread(request.join, 20)
    status, data, _headers = answer[0]
    assert status == 200, data
    assert data["choices"][0]["message"]["content"]

    # A link that stays down past a lease: 503 model_unavailable with Retry-After, which clients retry.
    balancer.cut()
    assert await asyncio.to_thread(HubProcess.wait_for, lambda: _links_up(a) == 0, 10)
    status, data, headers = await asyncio.to_thread(_chat, cluster, a, model)
    assert status == 503, data
    assert data["error"]["code"] == "model_unavailable"
    assert headers["Retry-After"] == "1"
    assert headers["x-request-id"]
    assert _waits(a) == 2
    balancer.restore()
    assert await asyncio.to_thread(HubProcess.wait_for, lambda: _links_up(a) == 1, 10)
    # A model nobody serves is still a 404 at once: only an agent behind a broken link is waited for.
    status, data, _ = await asyncio.to_thread(_chat, cluster, a, cluster.model("nowhere"))
    assert status == 404, data
    assert _waits(a) == 2
    assert (await asyncio.to_thread(_chat, cluster, a, model))[0] == 200


async def test_a_lapsed_lease_with_a_live_link_is_not_swept(pair: tuple[Cluster, Balancer, str]) -> None:
    cluster, _balancer, model = pair
    a, b = cluster.hubs
    status, view = b.admin("GET", "/admin/cluster")
    assert status == 200, view
    lease = f"potluck:replica:{view['replica']}"
    client = redis.Redis.from_url(cluster.redis.url)

    def lapse() -> bool:
        """Delete B's lease over and over (B renews it three times a lease) until A has seen it missing."""
        client.delete(lease)
        return "its lease lapsed but its peer link is up" in a.log()

    try:
        assert await asyncio.to_thread(HubProcess.wait_for, lapse, 15)
    finally:
        client.close()
    # B noticed at its next renewal and published its agents again; nobody swept it, B itself included.
    assert await asyncio.to_thread(HubProcess.wait_for, lambda: "its lease lapsed; publishing" in b.log(), 5)
    assert "is dead" not in a.log()
    assert "is dead" not in b.log()
    status, data, _ = await asyncio.to_thread(_chat, cluster, a, model)
    assert status == 200, data
    assert _served(cluster, a, model)
    assert _links_up(a) == 1
