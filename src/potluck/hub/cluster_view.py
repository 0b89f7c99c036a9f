"""The cluster's shared records (hub/cluster.py keeps them in Redis and in memory), and their msgpack codec."""

from __future__ import annotations

import enum
import secrets

import msgspec

from potluck.protocol.agent import BackendInfo, ModelInfo


class ReplicaInfo(msgspec.Struct, frozen=True):
    """One replica's lease."""

    id: str
    url: str
    version: str
    started_at: float
    queue_depth: int = 0
    in_flight: int = 0


class AgentEntry(msgspec.Struct, frozen=True):
    """One agent tunnelled to one replica: what the others need to place requests on it."""

    agent_id: str
    name: str
    replica: str
    connected_at: float
    """Wall-clock time of the connection (the newest wins when an agent appears at two replicas)."""
    models: list[ModelInfo]
    backends: list[BackendInfo]
    max_concurrency: int
    draining: bool
    version: str
    in_flight: int = 0


class EventKind(enum.StrEnum):
    AGENT = "agent"
    LEFT = "left"
    LOAD = "load"
    INVALIDATE = "invalidate"
    REPLICA_GONE = "replica_gone"


class Event(msgspec.Struct, frozen=True):
    kind: EventKind
    replica: str
    agent: AgentEntry | None = None
    agent_id: str = ""
    loads: dict[str, int] = {}
    """LOAD: agent id -> requests in flight on it, for each agent tunnelled to the replica."""
    queue_depth: int = 0
    queued: dict[str, int] = {}
    """LOAD: model -> requests waiting for it at the replica."""


encode = msgspec.msgpack.Encoder().encode
decode_event = msgspec.msgpack.Decoder(Event).decode
decode_agent = msgspec.msgpack.Decoder(AgentEntry).decode
decode_replica = msgspec.msgpack.Decoder(ReplicaInfo).decode


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def raw(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def new_replica_id() -> str:
    """A fresh replica id (``r-`` and 8 hex digits): a restarted replica is a new one."""
    return "r-" + secrets.token_hex(4)
