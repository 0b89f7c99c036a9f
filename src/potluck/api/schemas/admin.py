"""Bodies of the admin API (``/admin/...``): keys, agent tokens, agents and usage records."""

from __future__ import annotations

from datetime import datetime

import msgspec

from potluck.api.schemas.common import AgentState, Reply, Timestamp
from potluck.protocol.accounts import UserRole
from potluck.protocol.agent import BackendInfo
from potluck.protocol.metrics import HostMetrics


class CreatedKey(Reply):
    """A new API key; ``key`` is shown only here (the hub keeps its hash)."""

    id: str
    """The key's id (``key_…``)."""
    name: str
    """Its name."""
    key: str
    """The secret (``pk-…``) to send as ``Authorization: Bearer``."""
    created_at: Timestamp
    """When it was made."""


class ListedUser(Reply):
    """An account as the admin's listing shows it (never a password hash or a token)."""

    id: str
    """The user's id (``usr_…``)."""
    username: str
    """Its login name."""
    role: UserRole
    """``admin`` or ``user``."""
    rpm: int | None
    """Requests per minute over all its keys; null: no limit."""
    tpm: int | None
    """Tokens per minute over all its keys; null: no limit."""
    balance: float
    """Spendable credits."""
    balance_micro: int
    """The same in micro-credits, exactly."""


class UserList(Reply):
    """Every account, by username (the built-in ``admin`` user included)."""

    users: list[ListedUser]
    """The accounts."""


class AgentToken(Reply):
    """A one-time enrolment token for ``potluck agent --token``; shown only here."""

    id: str
    """The token's id (``tok_…``)."""
    name: str
    """The name the enrolling agent gets."""
    token: str
    """The secret; spent by the first agent that enrols with it."""


class CreatedAgentToken(AgentToken):
    """An enrolment token made with the admin token."""

    created_at: Timestamp
    """When it was made."""


class AgentModel(Reply, omit_defaults=True):
    """A model a connected agent serves (fields the backend did not report are left out)."""

    id: str
    """The model name clients ask for."""
    hot: bool
    """Loaded now (no cold-load delay)."""
    context_length: int | None = None
    """Maximum context in tokens."""
    size_bytes: int | None = None
    """Size of the weights."""
    vram_bytes: int | None = None
    """Bytes of it in GPU memory now."""
    kind: str = "llm"
    """``llm`` or ``embedding``."""


class AdminAgent(Reply):
    """An enrolled agent. A connected one has every field; an offline one has none of the optional ones."""

    id: str
    """The agent's id (``agt_…``)."""
    name: str
    """Its name."""
    state: AgentState
    """``online``, ``draining`` (the agent or an admin asked for it) or ``offline``."""
    models: list[AgentModel]
    """What it serves; empty while offline."""
    in_flight: int
    """The hub's count of requests on it."""
    max_concurrency: int
    """Requests it takes at once; 0 while offline."""
    last_seen: Timestamp | None
    """Now for a connected agent; when it disconnected (or enrolled) for an offline one."""
    drained_by_admin: bool
    """An admin drained it (``POST /admin/agents/{agent_id}/drain``)."""
    backends: list[BackendInfo] | msgspec.UnsetType = msgspec.UNSET
    """Its local LLM servers."""
    host: HostMetrics | msgspec.UnsetType | None = msgspec.UNSET
    """Its host's CPU, RAM and GPUs at the last sample; null before the first."""
    agent_in_flight: int | msgspec.UnsetType = msgspec.UNSET
    """Requests in flight as the agent last reported them."""
    rtt_ms: float | msgspec.UnsetType | None = msgspec.UNSET
    """Heartbeat round trip, smoothed; null until the first pong."""
    version: str | msgspec.UnsetType = msgspec.UNSET
    """The agent's version."""
    implausible_usage: int | msgspec.UnsetType = msgspec.UNSET
    """Requests whose reported token counts could not be true (the hub billed its estimate)."""
    implausible_reason: str | msgspec.UnsetType = msgspec.UNSET
    """Why the latest of those was implausible; only once there was one."""


class AgentList(Reply):
    """Enrolled agents, oldest enrolment first."""

    agents: list[AdminAgent]
    """The agents."""


class AgentStateChange(Reply):
    """An agent's state after an admin drained or resumed it."""

    id: str
    """The agent's id."""
    state: AgentState
    """``draining`` after a drain; ``online``, or ``offline`` if not connected, after a resume."""


class UsageRecord(Reply):
    """One client request that reached the dispatcher."""

    request_id: str
    """The request's id (``req_…``), as in its ``x-request-id``."""
    key_id: str | None
    """The API key used."""
    agent_id: str | None
    """The agent that served it; null when none took it."""
    model: str
    """The model asked for."""
    path: str
    """The API path, e.g. ``/v1/chat/completions``."""
    outcome: str
    """How it ended: ``ok``, ``client_cancelled``, ``agent_failed``, ``upstream_error``, ``timeout``..."""
    status: int
    """The HTTP status answered."""
    prompt_tokens: int
    """Prompt tokens (the backend's count, or the hub's estimate)."""
    completion_tokens: int
    """Completion tokens."""
    queue_ms: int
    """Time spent in the fair queue."""
    ttft_ms: int | None
    """From arrival at the hub to the first body byte relayed; null when none was."""
    total_ms: int
    """From arrival to the end."""
    created_at: datetime
    """When it ended."""
    user_id: str | None
    """The consumer: the key's user."""
    group_id: str | None
    """The group it was served through and billed in."""
    owner_id: str | None
    """The serving agent's owner."""
    tokens_estimated: bool
    """The backend reported no usage, so the hub estimated the tokens."""
    flagged: bool
    """The agent's reported counts were implausible (the hub's estimate was billed)."""
    charged: int
    """Micro-credits the consumer paid (0 in a mutual group)."""
    earned: int
    """Micro-credits the agent's owner earned."""
    cache_read_tokens: int = 0
    """The part of ``prompt_tokens`` read from the backend's prompt cache (when it said)."""
    cache_write_tokens: int = 0
    """The part of ``prompt_tokens`` written to the backend's prompt cache (when it said)."""
    reasoning_tokens: int = 0
    """The part of ``completion_tokens`` spent reasoning (when the backend said)."""


class UsageList(Reply):
    """Usage records, newest first."""

    usage: list[UsageRecord]
    """The records."""


class UsageQuery(msgspec.Struct):
    """Query of ``GET /admin/usage``."""

    limit: int = 100
    """How many records (clamped to 1…1000)."""
