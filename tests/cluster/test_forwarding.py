"""A request arriving at one replica is served by an agent tunnelled only to another, over a peer link."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import pytest

from potluck.api.openapi import build_document
from testing.fake_backend import FakeBackend, RequestRecord
from testing.processes import ADMIN_TOKEN, HubProcess, http_json
from tests.api.test_openapi import JSON, check_answer
from tests.cluster.conftest import Cluster

pytestmark = pytest.mark.slow


def _chats(backend: FakeBackend) -> list[RequestRecord]:
    return [r for r in backend.records if r.path == "/v1/chat/completions"]


def _routable(cluster: Cluster, hub_index: int, model: str, timeout: float = 10) -> None:
    """Wait until ``model`` is listed by replica ``hub_index`` (its proxy of the remote agent is attached)."""
    client = cluster.client(cluster.hubs[hub_index])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(m.id == model for m in client.models.list().data):
            return
        time.sleep(0.05)
    raise AssertionError(f"{model} never became routable at replica {hub_index}")


def test_request_at_one_replica_streams_from_an_agent_at_another(cluster: Cluster) -> None:
    model = cluster.model()
    backend, url = cluster.backend(model, chunks=6)
    cluster.agent(cluster.hubs[1], url)
    _routable(cluster, 0, model)

    client = cluster.client(cluster.hubs[0])
    whole = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert whole.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 tok5 "
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
    )
    parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(parts) == "tok0 tok1 tok2 tok3 tok4 tok5 "
    assert len(_chats(backend)) == 2


def test_client_leaving_a_forwarded_stream_cancels_it_on_the_backend(cluster: Cluster) -> None:
    model = cluster.model()
    backend, url = cluster.backend(model, chunks=200, delay=0.05)
    cluster.agent(cluster.hubs[2], url)
    _routable(cluster, 0, model)

    client = cluster.client(cluster.hubs[0])
    with client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], stream=True) as s:
        for chunk in s:
            if chunk.choices and chunk.choices[0].delta.content:
                break
    assert backend.wait_for(lambda: _chats(backend)[-1].disconnected, 5)


def test_failure_before_the_first_byte_is_retried_on_another_agent(cluster: Cluster) -> None:
    model = cluster.model()
    dead, dead_url = cluster.backend(model)
    dead_agent = cluster.agent(cluster.hubs[1], dead_url)
    live, live_url = cluster.backend(model, chunks=3)
    live_agent = cluster.agent(cluster.hubs[2], live_url)
    # Both remote agents, not just one of them, must be placeable at replica 0 before the dead one fails:
    # with only the dead one known there, nothing is left to retry on.
    for agent in (dead_agent, live_agent):
        cluster.hubs[0].wait_agent(agent.name, models={model})
    cluster.stop_backend(dead)

    client = cluster.client(cluster.hubs[0])
    for _ in range(4):  # whichever agent the scheduler picks first, every answer comes from the live one
        answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == "tok0 tok1 tok2 "
    assert len(_chats(live)) == 4


def test_failure_after_bytes_ends_the_stream_with_an_error_and_no_done(cluster: Cluster) -> None:
    model = cluster.model()
    _backend, url = cluster.backend(model, chunks=8, fail_after=2)
    cluster.agent(cluster.hubs[1], url)
    _routable(cluster, 0, model)

    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    status, text = cluster.post_raw(cluster.hubs[0], "/v1/chat/completions", body)
    assert status == 200
    assert "tok0" in text
    assert '"error"' in text
    assert "[DONE]" not in text


def test_admin_cluster_lists_every_replica_its_agents_and_links(cluster: Cluster) -> None:
    model = cluster.model()
    _backend, url = cluster.backend(model)
    agent = cluster.agent(cluster.hubs[2], url)
    _routable(cluster, 0, model)

    with urllib.request.urlopen(
        urllib.request.Request(
            cluster.hubs[0].url + "/admin/cluster", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    ) as resp:
        raw = resp.read()
        view = check_answer(build_document(), "GET", "/admin/cluster", resp.status, resp.headers, JSON, raw)
    replicas = {r["id"]: r for r in view["replicas"]}
    assert len(replicas) == 3
    assert all(r["linked"] for r in replicas.values())
    holders = [r for r in replicas.values() if any(a["name"] == agent.name for a in r["agents"])]
    assert len(holders) == 1
    assert holders[0]["url"] == cluster.hubs[2].url
    assert model in next(a for a in holders[0]["agents"] if a["name"] == agent.name)["models"]
    with urllib.request.urlopen(cluster.hubs[0].url + "/readyz") as resp:
        ready = check_answer(build_document(), "GET", "/readyz", resp.status, resp.headers, JSON, resp.read())
    assert ready["cluster"] == {"replica": view["replica"], "redis": True, "peers": 2, "linked": 2}
    with urllib.request.urlopen(cluster.hubs[0].url + "/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    samples = [line for line in metrics.splitlines() if line and not line.startswith("#")]
    assert samples
    assert all(f'replica="{view["replica"]}"' in line for line in samples)
    # A peer link needs the cluster secret (its derived key): anything else is refused before the upgrade.
    status, refused, _ = http_json("GET", cluster.hubs[0].url + "/cluster/peer", None, "not-the-derived-key")
    assert status == 401
    assert refused["error"]["code"] == "invalid_api_key"


def test_a_key_revoked_at_one_replica_is_refused_by_the_others_within_a_second(cluster: Cluster) -> None:
    model = cluster.model()
    _backend, url = cluster.backend(model)
    cluster.agent(cluster.hubs[0], url)
    status, created = cluster.hubs[0].admin("POST", "/admin/keys", {"name": "short-lived"})
    assert status == 201
    secret = created["key"]
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    # A key made at replica 0 works at replica 1 once the invalidation reached it.
    assert HubProcess.wait_for(lambda: _call(cluster.hubs[1], secret, body) == 200, 1.0)

    status, _ = cluster.hubs[0].admin("DELETE", f"/admin/keys/{created['id']}")
    assert status == 200
    revoked_at = time.monotonic()
    assert HubProcess.wait_for(lambda: _call(cluster.hubs[1], secret, body) == 401, 1.0)
    assert HubProcess.wait_for(lambda: _call(cluster.hubs[2], secret, body) == 401, 1.0)
    assert time.monotonic() - revoked_at <= 1.0


def _call(hub: HubProcess, secret: str, body: Any) -> int:
    status, _data, _headers = http_json("POST", hub.url + "/v1/chat/completions", body, secret)
    return status
