"""``GET /admin/cluster``: the replicas, their agents, queue depths and versions (cluster mode)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from potluck.hub.cluster import Cluster  # needs Redis: the `cluster` extra

from aiohttp import web

from potluck.api.admin import require_admin
from potluck.api.payloads import json_response
from potluck.api.schemas.cluster import ClusterAgent, ClusterHealth, ClusterReplica, ClusterView
from potluck.hub.cluster_view import AgentEntry
from potluck.hub.errors import NotFoundError


def _agent(entry: AgentEntry, in_flight: int) -> ClusterAgent:
    return ClusterAgent(
        id=entry.agent_id,
        name=entry.name,
        models=[m.id for m in entry.models],
        in_flight=in_flight,
        max_concurrency=entry.max_concurrency,
        draining=entry.draining,
        version=entry.version,
    )


def view(cluster: Cluster) -> ClusterView:
    replicas = []
    own = cluster.own_entries()
    for replica_id, info in sorted(cluster.replicas.items()):
        mine = replica_id == cluster.replica_id
        entries = own if mine else cluster.agents.get(replica_id, {})
        loads = cluster.loads.get(replica_id, {})
        replicas.append(
            ClusterReplica(
                id=replica_id,
                url=info.url,
                version=info.version,
                started_at=info.started_at,
                queue_depth=info.queue_depth,
                in_flight=info.in_flight,
                linked=mine or cluster.peering.linked(replica_id),
                agents=[
                    _agent(e, e.in_flight if mine else loads.get(a, e.in_flight)) for a, e in sorted(entries.items())
                ],
            )
        )
    return ClusterView(replica=cluster.replica_id, redis=cluster.redis_ok, replicas=replicas)


def health(cluster: Cluster) -> ClusterHealth:
    peers = cluster.peers()
    linked = sum(1 for p in peers if cluster.peering.linked(p))
    return ClusterHealth(replica=cluster.replica_id, redis=cluster.redis_ok, peers=len(peers), linked=linked)


def with_replica_label(text: bytes, replica_id: str) -> bytes:
    """Prometheus text with ``replica="<id>"`` on every sample, so one dashboard tells the replicas apart."""
    label = f'replica="{replica_id}"'.encode()
    lines = []
    for line in text.split(b"\n"):
        if line and not line.startswith(b"#"):
            name, brace, rest = line.partition(b"{")
            if brace:
                line = name + b"{" + label + (b"," if not rest.startswith(b"}") else b"") + rest
            else:
                name, _, value = line.partition(b" ")
                line = name + b"{" + label + b"} " + value
        lines.append(line)
    return b"\n".join(lines)


async def cluster_view(request: web.Request) -> web.Response:
    hub = await require_admin(request)
    if hub.cluster is None:
        raise NotFoundError("This hub is not a replica of a cluster (it runs without --redis-url)")
    return json_response(view(hub.cluster))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/cluster", cluster_view)
