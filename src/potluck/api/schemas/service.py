"""Bodies of the model listing (``GET /v1/models``) and of health checks."""

from __future__ import annotations

from typing import Literal

import msgspec

from potluck.api.schemas.cluster import ClusterHealth
from potluck.api.schemas.common import Reply


class Model(Reply, kw_only=True):
    """A model (or a group's alias) that at least one agent the key reaches serves."""

    id: str
    """The name to ask for."""
    object: Literal["model"] = "model"
    """Always ``model``."""
    created: int = 0
    """Always 0 (OpenAI's field; models here have no creation time)."""
    owned_by: str = "potluck"
    """Always ``potluck``."""
    alias_of: list[str] | msgspec.UnsetType = msgspec.UNSET
    """For an alias: the models it stands for, most preferred first."""
    agents: int
    """How many agents the key reaches serve it."""
    hot: bool
    """At least one of them has it loaded."""
    owners: list[str]
    """Usernames of the owners of those agents."""
    withheld: int = 0
    """Agents the key reaches that list it but may not serve it now: not approved for the name where a group
    requires approval, flagged by spot checks, or parked below a throughput floor (not counted in ``agents``)."""


class ModelList(Reply, kw_only=True):
    """Models by id, then aliases."""

    object: Literal["list"] = "list"
    """Always ``list``."""
    data: list[Model]
    """The models."""


class Alive(Reply):
    """The process serves HTTP."""

    status: Literal["ok"] = "ok"
    """Always ``ok``."""


class Ready(Reply, kw_only=True):
    """The hub takes requests."""

    status: Literal["ready"] = "ready"
    """Always ``ready``."""
    agents: int
    """Connected agents (in cluster mode, those of the other replicas this one can reach included)."""
    cluster: ClusterHealth | msgspec.UnsetType = msgspec.UNSET
    """In cluster mode: this replica's id, whether Redis answers, and its peer links."""


class NotReady(Reply):
    """The hub does not take requests."""

    status: Literal["shutting_down", "database_unavailable", "joining"]
    """``shutting_down`` once shutdown began; ``database_unavailable`` when ``SELECT 1`` fails; ``joining`` while a
    replica of a cluster has not yet read the cluster's view from Redis."""
