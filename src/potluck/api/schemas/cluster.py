"""Bodies of the cluster view (``GET /admin/cluster``) and of a replica's readiness in cluster mode."""

from __future__ import annotations

from potluck.api.schemas.common import Reply


class ClusterAgent(Reply, kw_only=True):
    """An agent tunnelled to a replica."""

    id: str
    """The agent's id (``agt_…``)."""
    name: str
    """Its name."""
    models: list[str]
    """What it serves."""
    in_flight: int
    """Requests on it through its replica, as last published."""
    max_concurrency: int
    """The requests it takes at once."""
    draining: bool
    """It takes no new work."""
    version: str
    """The agent's version."""


class ClusterReplica(Reply, kw_only=True):
    """One live replica, from its lease."""

    id: str
    """The replica's id (``r-…``, new at every start)."""
    url: str
    """Where the other replicas reach it."""
    version: str
    """The hub version it runs."""
    started_at: float
    """When it started (Unix time)."""
    queue_depth: int
    """Requests waiting for a slot there."""
    in_flight: int
    """Requests it owns now."""
    linked: bool
    """This replica has a peer link to it that is up (always true for itself)."""
    agents: list[ClusterAgent]
    """The agents tunnelled to it."""


class ClusterView(Reply, kw_only=True):
    """The cluster as the answering replica sees it (its in-memory view, kept by Redis pub/sub)."""

    replica: str
    """The answering replica's id."""
    redis: bool
    """Redis answered this replica's last attempt (while it does not, the view is the last one known)."""
    replicas: list[ClusterReplica]
    """Every live replica, this one included."""


class ClusterHealth(Reply, kw_only=True):
    """A replica's part in its cluster, for readiness probes."""

    replica: str
    """This replica's id."""
    redis: bool
    """Redis answered the last attempt."""
    peers: int
    """Other live replicas."""
    linked: int
    """Of those, the ones this replica has a peer link to."""
