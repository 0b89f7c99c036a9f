"""Bodies of the dashboard's numbers (``/api/dashboard/...``): live figures from the hub's in-memory
aggregates, daily usage from the rollup table, and the Server-Sent Events of one page's stream.

Every body is scoped to the viewer: an admin sees the whole hub, anyone else the agents they own and the
agents shared into their groups, their own requests and the requests their agents served. Strings that
come from agents (agent, model, backend and GPU names) are returned verbatim: escaping them is the page's job.
Money comes as credits with the exact micro-credits beside them (``*_micro``).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from potluck.api.schemas.common import AgentState, Reply, Timestamp

EventKind = Literal[
    "agent_online",
    "agent_offline",
    "agent_reconnected",
    "agent_draining",
    "agent_resumed",
    "agent_paused",
    "agent_unpaused",
    "agent_ejected",
    "agent_restored",
    "model_loading",
    "model_loaded",
    "model_unloaded",
]
"""What happened to an agent or one of its models (the feed's items)."""

# -- requests -----------------------------------------------------------------------------------------


class UsageQuery(msgspec.Struct):
    """Query of ``GET /api/dashboard/usage`` and ``GET /api/dashboard/usage.csv``."""

    days: int = 30
    """How many UTC days back, today included (1 to 366)."""


class ModelQuery(msgspec.Struct):
    """Query of ``GET /api/dashboard/explain``."""

    model: str
    """The model or alias to explain."""


# -- /api/dashboard/now ---------------------------------------------------------------------------------


class Metric(Reply):
    """One figure over the recent window, with its sparkline."""

    value: float | None
    """Over the whole window (null: nothing to measure, e.g. no request finished)."""
    series: list[float | None]
    """One point per bucket, oldest first, the current (partial) bucket last; null where nothing was measured."""


class AccountNow(Reply):
    """The viewer's credits now and their flows over the last 24 hours."""

    balance: float
    """Spendable credits."""
    balance_micro: int
    """``balance`` in micro-credits."""
    held: float
    """Credits held for the viewer's requests in flight."""
    held_micro: int
    """``held`` in micro-credits."""
    spent_24h: float
    """Credits the viewer's finished requests were charged in the current UTC hour and the 23 before it."""
    spent_24h_micro: int
    """``spent_24h`` in micro-credits."""
    earned_24h: float
    """Credits the viewer's agents earned over the same hours."""
    earned_24h_micro: int
    """``earned_24h`` in micro-credits."""


class FeedEvent(Reply):
    """An item of the event feed."""

    id: int
    """Increasing within one hub process (a page that reconnects can skip what it has)."""
    at: Timestamp
    """When the hub noticed it."""
    kind: EventKind
    """What happened."""
    agent_id: str
    """The agent."""
    agent_name: str
    """Its name (agent-supplied: untrusted text)."""
    model: str | None = None
    """The model, for ``model_*`` events and model ejections."""


class NowView(Reply):
    """``GET /api/dashboard/now``: the fleet the viewer can see, right now and over the last minutes."""

    generated_at: Timestamp
    """When these figures were taken."""
    window_s: int
    """Length of the recent window (15 minutes)."""
    bucket_s: int
    """Length of one sparkline bucket (60 s)."""
    agents_online: int
    """Connected agents (draining and paused ones included)."""
    agents_total: int
    """Enrolled agents, connected or not."""
    gpus: int
    """GPUs the connected agents report."""
    hot_models: int
    """Distinct models loaded on some connected agent."""
    queue_depth: int
    """Requests waiting for a slot that the viewer may see: their own, and those through their groups."""
    in_flight: int
    """Requests running on the connected agents now."""
    requests_per_min: Metric
    """Finished requests per minute (served or refused after admission)."""
    tokens_per_s: Metric
    """Completion tokens generated per second, over all agents."""
    ttft_p50_ms: Metric
    """Median time to first byte, in milliseconds (approximate: from a log-scale histogram, within 10 %)."""
    error_rate: Metric
    """Share of finished requests, 0 to 1, that failed (agent failed, timeout, upstream error, overloaded,
    not found, hub error); a client cancelling is not an error."""
    account: AccountNow
    """The viewer's credits."""
    events: list[FeedEvent]
    """The latest feed items, newest first (up to 50)."""


# -- /api/dashboard/models ------------------------------------------------------------------------------


class PriceRange(Reply):
    """What a model costs across the agents and groups the viewer reaches, in credits per million tokens."""

    input_min: float
    """Cheapest prompt price."""
    input_max: float
    """Dearest prompt price."""
    output_min: float
    """Cheapest completion price."""
    output_max: float
    """Dearest completion price."""


class ModelRow(Reply):
    """A model the viewer's agents serve."""

    id: str
    """The model name (agent-supplied: untrusted text)."""
    hot_agents: int
    """Connected agents with it loaded."""
    cold_agents: int
    """Connected agents that list it but do not have it loaded."""
    loading_agents: int
    """Of ``cold_agents``, those loading it now for a request."""
    queue: int
    """Requests waiting for it that the viewer may see (their own, and those through their groups)."""
    in_flight: int
    """Slots in use on the agents listing it (an agent's slots are shared by all its models)."""
    slots: int
    """Slots in all on those agents."""
    requests_15m: int
    """Requests of it finished over the window."""
    ttft_p50_ms: float | None
    """Median time to first byte over the window (null: none measured)."""
    ttft_p95_ms: float | None
    """95th percentile time to first byte over the window."""
    tokens_per_s: float | None
    """Decode speed: completion tokens per second after the first byte, over the window."""
    error_rate: float | None
    """Share of its requests that failed, over the window (see `NowView.error_rate`)."""
    context_length: int | None
    """Largest context the agents report for it, in tokens."""
    price: PriceRange | None
    """Its price in credit-billing groups; null where only mutual groups reach it."""
    capabilities: list[str]
    """Badges, sorted: ``chat`` or ``embeddings`` (the model's kind), ``anthropic`` and ``responses`` (a
    backend serving it speaks that dialect natively), and the backends' kinds (``ollama``, ``vllm``...)."""


class ModelsView(Reply):
    """``GET /api/dashboard/models``."""

    generated_at: Timestamp
    """When these figures were taken."""
    models: list[ModelRow]
    """By name."""


# -- /api/dashboard/machines ----------------------------------------------------------------------------


class BackendView(Reply):
    """A backend behind an agent, as its last LOAD frame (or its hello) said."""

    url: str
    """Its base URL on the agent's side (owner-chosen)."""
    kind: str
    """``openai``, ``ollama``, ``vllm``, ``llamacpp``, ``lmstudio``..."""
    version: str | None
    """Its version, when it tells."""
    healthy: bool
    """Answered its last catalog request."""
    running: int | None
    """Requests it is working on, when it tells."""
    waiting: int | None
    """Requests queued inside it, when it tells."""
    slots: int | None
    """Its parallel slots, when it tells."""


class GpuView(Reply):
    """One GPU, from the agent's last LOAD frame."""

    index: int
    """Index as its vendor tool numbers it."""
    name: str
    """Marketing name (agent-supplied: untrusted text)."""
    vendor: str
    """``nvidia`` or ``amd``."""
    utilization_pct: float
    """Busy share, 0 to 100."""
    memory_used_bytes: int
    """Device memory in use."""
    memory_total_bytes: int
    """Device memory in all."""
    temperature_c: float | None
    """Temperature, when reported."""
    power_w: float | None
    """Power draw, when reported."""
    power_limit_w: float | None
    """Power cap, when reported."""


class MachineModel(Reply):
    """A model an agent lists."""

    id: str
    """The model name."""
    hot: bool
    """Loaded now."""
    loading: bool
    """Being loaded for a request now."""
    context_length: int | None
    """Its context, when the backend says."""
    size_bytes: int | None
    """Its weights, when the backend says."""


class Machine(Reply):
    """An agent: its connection, hardware and load."""

    id: str
    """The agent's id (``agt_…``)."""
    name: str
    """Its name (agent-supplied: untrusted text)."""
    owner_id: str | None
    """Its owner's user id; null for agents enrolled with an admin token and no owner."""
    state: AgentState
    """``online``, ``draining`` or ``offline``."""
    paused: bool
    """Its owner paused it, or it is outside its availability windows."""
    admin_drained: bool
    """An admin took it out of rotation."""
    ejected_models: list[str]
    """Models taken out of rotation on it for failing, now."""
    connected_at: Timestamp | None
    """When its current connection was made (null while offline)."""
    last_seen: Timestamp | None
    """Last frame from it (while online) or when it disconnected; null when never seen."""
    version: str | None
    """The agent's software version (of its current or last connection this process saw)."""
    groups: list[str]
    """Groups it is shared into."""
    backends: list[BackendView]
    """Its backends."""
    gpus: list[GpuView]
    """Its GPUs (empty while offline or when it reports none)."""
    cpu_pct: float | None
    """Host CPU use, 0 to 100."""
    ram_used_bytes: int | None
    """Host memory in use."""
    ram_total_bytes: int | None
    """Host memory in all."""
    load_at: Timestamp | None
    """When its last LOAD frame arrived (null: none yet on this connection)."""
    models: list[MachineModel]
    """What it lists, by name; empty while offline."""
    slots: int
    """Requests it runs at once (0 while offline)."""
    in_flight: int
    """Requests it runs now."""
    reconnects: int
    """Connections after its first one since the hub started."""
    ejections: int
    """Times a model of it was taken out of rotation since the hub started."""


class MachinesView(Reply):
    """``GET /api/dashboard/machines``: the viewer's agents (every agent for admins)."""

    generated_at: Timestamp
    """When these figures were taken."""
    machines: list[Machine]
    """Online first, then by name."""


# -- /api/dashboard/usage -------------------------------------------------------------------------------


class UsageDay(Reply):
    """What the viewer spent and earned on one model on one UTC day."""

    day: str
    """``YYYY-MM-DD`` (UTC)."""
    model: str
    """The model."""
    requests: int
    """The viewer's requests an agent served."""
    not_served: int
    """The viewer's requests that reached no agent (free)."""
    prompt_tokens: int
    """Prompt tokens of the viewer's requests."""
    completion_tokens: int
    """Completion tokens of the viewer's requests."""
    spent: float
    """Credits charged to the viewer."""
    spent_micro: int
    """``spent`` in micro-credits."""
    served: int
    """Requests the viewer's agents served."""
    earned: float
    """Credits the viewer's agents earned."""
    earned_micro: int
    """``earned`` in micro-credits."""


class UsageTotals(Reply):
    """Sums over the days of the report."""

    requests: int
    """The viewer's requests an agent served."""
    spent: float
    """Credits charged to the viewer."""
    spent_micro: int
    """``spent`` in micro-credits."""
    served: int
    """Requests the viewer's agents served."""
    earned: float
    """Credits the viewer's agents earned."""
    earned_micro: int
    """``earned`` in micro-credits."""


class MemberShare(Reply):
    """One member's part of a group's traffic over the report's days."""

    user_id: str
    """The member."""
    username: str
    """Their username."""
    role: str
    """``owner``, ``admin`` or ``member``."""
    consumed_requests: int
    """Their requests served through the group."""
    consumed_tokens: int
    """Prompt plus completion tokens of those."""
    consumed: float
    """Credits they were charged in the group."""
    consumed_micro: int
    """``consumed`` in micro-credits."""
    contributed_requests: int
    """Requests their agents served through the group."""
    contributed_tokens: int
    """Prompt plus completion tokens of those."""
    contributed: float
    """Credits their agents earned in the group."""
    contributed_micro: int
    """``contributed`` in micro-credits."""


class GroupShares(Reply):
    """Each member's contributed and consumed share of a group the viewer owns or administers."""

    group_id: str
    """The group."""
    name: str
    """Its name."""
    members: list[MemberShare]
    """Every member, by username."""


class UsageView(Reply):
    """``GET /api/dashboard/usage?days=N``: daily series from the rollup table."""

    since: str
    """First day (UTC), ``YYYY-MM-DD``."""
    until: str
    """Last day (UTC), today."""
    series: list[UsageDay]
    """One row per day and model with anything in it, oldest day first, then by model."""
    totals: UsageTotals
    """Sums of ``series``."""
    groups: list[GroupShares]
    """Groups the viewer owns or administers (every group for admins), by name."""


class OpenHold(Reply):
    """Credits held for one of the viewer's requests in flight."""

    request_id: str
    """The request."""
    amount: float
    """Credits held."""
    amount_micro: int
    """``amount`` in micro-credits."""


class HoldsView(Reply):
    """``GET /api/dashboard/holds``: the viewer's open holds."""

    held: float
    """Their sum (equals `AccountNow.held`)."""
    held_micro: int
    """``held`` in micro-credits."""
    holds: list[OpenHold]
    """By request id."""


# -- /api/dashboard/stream ------------------------------------------------------------------------------


class RequestRow(Reply):
    """A finished request for the live tail (event ``request``). Never a prompt or a completion."""

    request_id: str
    """The request's id."""
    at: Timestamp
    """When it finished."""
    key_id: str | None
    """The key it was made with (null for requests of other users served by the viewer's agents)."""
    key_name: str | None
    """That key's name (null as ``key_id``)."""
    model: str
    """The model it ran on."""
    agent_id: str | None
    """The agent that served it; null when it reached none."""
    agent_name: str | None
    """Its name (untrusted text)."""
    status: int
    """The HTTP status the client got."""
    outcome: str
    """``ok``, ``client_cancelled``, ``upstream_error``, ``agent_failed``, ``timeout``, ``model_not_found``,
    ``overloaded`` or ``error``."""
    ttft_ms: int | None
    """Time to first byte; null when nothing came back."""
    duration_ms: int
    """From arrival to the end."""
    prompt_tokens: int
    """Prompt tokens billed."""
    completion_tokens: int
    """Completion tokens billed."""
    credits: float
    """Charged to the consumer (for the viewer's own requests) or earned (for requests their agents served)."""
    credits_micro: int
    """``credits`` in micro-credits."""
    mine: bool
    """The viewer made it (otherwise one of their agents served it)."""


class AgentChange(Reply):
    """An agent's state changed (event ``agent``): a badge to update, a machine to add."""

    agent_id: str
    """The agent."""
    name: str
    """Its name (untrusted text)."""
    state: AgentState
    """Its state now."""
    paused: bool
    """Paused or outside its windows."""
    admin_drained: bool
    """Taken out of rotation by an admin."""
    in_flight: int
    """Requests it runs now."""


class Dropped(Reply):
    """Event ``dropped``: the page read too slowly and this many ``request`` and ``event`` items were skipped;
    ``now`` and ``agent`` carry the current state, so the page is right again after the next of each."""

    count: int
    """Items skipped since the last ``dropped`` event."""
