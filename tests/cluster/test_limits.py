"""Rate and concurrency limits hold across replicas (Redis scripts), and a member's setup made at one replica
(account, group, agent, key) is seen by the others."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from testing.fake_backend import FakeBackend
from testing.processes import AgentProcess, HubProcess, http_json
from tests.cluster.conftest import Cluster

pytestmark = pytest.mark.slow

PASSWORD = "a long password"


class Member:
    """A user of the cluster, driven through the user API of replica 0."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.hub = cluster.hubs[0]
        name = f"u{uuid.uuid4().hex[:8]}"
        assert self.hub.admin("POST", "/admin/users", {"username": name, "password": PASSWORD})[0] == 201
        status, login, _ = http_json("POST", self.hub.url + "/api/login", {"username": name, "password": PASSWORD})
        assert status == 200
        self.token = str(login["token"])

    def create(self, path: str, body: Any) -> dict[str, Any]:
        status, data, _ = http_json("POST", self.hub.url + path, body, self.token)
        assert status in (200, 201), data
        return data

    def shared_agent(self, at: HubProcess, model: str, max_concurrency: int = 8, **knobs: Any) -> FakeBackend:
        """An agent of this member's, tunnelled to replica ``at`` and shared into a group of the member's."""
        group = self.create("/api/groups", {"name": f"g-{model}"})["id"]
        backend, url = self.cluster.backend(model, **knobs)
        name = f"agent-{model}"
        token = self.create("/api/agent-tokens", {"name": name})["token"]
        agent = AgentProcess(
            at, self.cluster.root / name, [url], name=name, token=token, max_concurrency=max_concurrency
        )
        self.cluster.agents.append(agent)
        agent_id = at.wait_agent(name)["id"]
        # Enrolled at another replica: replica 0 hears of the agent within a second.
        path = f"{self.hub.url}/api/agents/{agent_id}/groups"
        assert HubProcess.wait_for(lambda: http_json("POST", path, {"group_id": group}, self.token)[0] == 200, 1.0)
        return backend


def _chat(hub: HubProcess, key: str, model: str) -> tuple[int, dict[str, Any]]:
    body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
    status, answer, _ = http_json("POST", hub.url + "/v1/chat/completions", body, key)
    return status, answer


def _routable_everywhere(cluster: Cluster, key: str, model: str) -> None:
    for hub in cluster.hubs:
        assert HubProcess.wait_for(
            lambda hub=hub: (
                model in {m["id"] for m in http_json("GET", hub.url + "/v1/models", None, key)[1].get("data", [])}
            ),
            5,
        ), f"{model} not routable at {hub.url}"


def test_requests_per_minute_hold_across_replicas(cluster: Cluster) -> None:
    model = cluster.model("rpm")
    member = Member(cluster)
    # Room for the whole burst at once: what is measured is the rate limit, not the agent's capacity (replicas
    # can together send an agent more than its --max-concurrency: see the test below).
    member.shared_agent(cluster.hubs[1], model, max_concurrency=12, chunks=2)
    unlimited = member.create("/api/keys", {"name": "free"})["key"]
    _routable_everywhere(cluster, unlimited, model)
    key = member.create("/api/keys", {"name": "limited", "rpm": 10})["key"]
    for hub in cluster.hubs[1:]:  # the key reached every replica (listing models spends none of its requests)
        assert HubProcess.wait_for(lambda hub=hub: http_json("GET", hub.url + "/v1/models", None, key)[0] == 200, 2)

    # 30 requests spread over the three replicas at once: 10 get through, and one more for each 6 s the burst
    # took (the bucket refills continuously, 10 a minute).
    started = time.monotonic()
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda i: _chat(cluster.hubs[i % 3], key, model), range(30)))
    elapsed = time.monotonic() - started
    statuses = [status for status, _ in answers]
    # Where a replica found Redis too slow to answer, it enforced its share of the limit alone, by design:
    # say so, rather than fail without a cause.
    fallbacks = sum(hub.log_path.read_text().count("Redis did not answer a rate-limit check") for hub in cluster.hubs)
    odd = [(i % 3, body) for i, (status, body) in enumerate(answers) if status not in (200, 429)]
    seen = f"statuses {statuses} in {elapsed:.1f} s, others (replica, body) {odd}; Redis fallbacks: {fallbacks}"
    assert set(statuses) <= {200, 429}, seen
    assert 10 <= statuses.count(200) <= 10 + int(elapsed / 6), seen


async def test_concurrency_limit_holds_across_replicas(cluster: Cluster) -> None:
    model = cluster.model("conc")
    member = Member(cluster)
    backend = member.shared_agent(cluster.hubs[2], model, hang=True)
    free = member.create("/api/keys", {"name": "free"})["key"]
    _routable_everywhere(cluster, free, model)
    key = member.create("/api/keys", {"name": "one at a time", "max_concurrency": 1})["key"]
    for hub in cluster.hubs:  # the new key reached every replica
        assert HubProcess.wait_for(lambda hub=hub: http_json("GET", hub.url + "/v1/models", None, key)[0] == 200, 1)
    clients = [openai.AsyncOpenAI(base_url=h.url + "/v1", api_key=key, max_retries=0, timeout=10) for h in cluster.hubs]
    try:
        hanging = asyncio.ensure_future(
            clients[0].chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        )
        assert await backend.wait_for_async(lambda: any(r.path == "/v1/chat/completions" for r in backend.records), 5)
        for client in clients[1:]:
            with pytest.raises(openai.RateLimitError, match="running"):
                await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "y"}])
        hanging.cancel()
        await asyncio.gather(hanging, return_exceptions=True)
    finally:
        for client in clients:
            await client.close()


def test_a_request_for_a_busy_agent_held_by_another_replica_waits_for_its_slot(cluster: Cluster) -> None:
    model = cluster.model("busy")
    member = Member(cluster)
    backend = member.shared_agent(cluster.hubs[1], model, max_concurrency=1, first_delay=1.0)
    key = member.create("/api/keys", {"name": "free"})["key"]
    _routable_everywhere(cluster, key, model)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(_chat, cluster.hubs[1], key, model)  # takes the agent's one slot for a second
        assert backend.wait_for(lambda: any(r.path == "/v1/chat/completions" for r in backend.records), 5)
        second = pool.submit(_chat, cluster.hubs[0], key, model)  # placed by replica 0, which saw a free slot
        assert first.result()[0] == 200
        assert second.result()[0] == 200, second.result()
