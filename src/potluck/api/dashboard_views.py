"""The dashboard's bodies, built from the hub's in-memory state for one viewer's `Scope`.

Shared by the JSON endpoints (api/dashboard.py) and the live stream (api/dashboard_stream.py), so a
figure on a page and in its stream are the same figure. Nothing here touches the database.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from potluck.api.billing import credits
from potluck.api.payloads import iso
from potluck.api.schemas.common import AgentState
from potluck.api.schemas.dashboard import (
    AccountNow,
    AgentChange,
    BackendView,
    FeedEvent,
    GpuView,
    Machine,
    MachineModel,
    Metric,
    ModelRow,
    NowView,
    PriceRange,
    RequestRow,
)
from potluck.hub.observe import BUCKET_S, BUCKETS, WINDOW_S, UsageRecord, Window
from potluck.hub.observe_fleet import Agent, AgentTrack, FleetEvent
from potluck.hub.observe_stream import RowView, Scope
from potluck.hub.services import HubServices
from potluck.hub.session import AgentSession

FEED_SHOWN = 50
_DIALECT_BADGES = {"/v1/messages": "anthropic", "/v1/responses": "responses"}


def _metric(window: Window, read: Callable[[int | None], float | None]) -> Metric:
    value = read(None)
    series = [read(i) if window.covered_s[i] > 0 else None for i in range(BUCKETS)]
    return Metric(value=_round(value), series=[_round(v) for v in series])


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def state_of(hub: HubServices, agent_id: str) -> AgentState:
    """``online``, ``draining`` or ``offline``: the same words as ``/admin/agents``."""
    if agent_id not in hub.registry.sessions:
        return "offline"
    slots = hub.registry.scheduler.agent(agent_id)
    return "draining" if slots is not None and slots.draining else "online"


def _visible_sessions(hub: HubServices, scope: Scope) -> list[AgentSession]:
    return [s for a, s in hub.registry.sessions.items() if scope.sees_agent(a)]


def _known_agents(hub: HubServices, scope: Scope) -> int:
    known = set(hub.access.agent_owner) | set(hub.registry.sessions)
    if scope.agents is not None:
        known &= scope.agents
    return len(known)


def _waiting(hub: HubServices, scope: Scope) -> Counter[str]:
    """Requests in the wait queue the viewer may see (theirs, or through one of their groups), by each model that
    could serve them; ``""`` counts each such request once."""
    counts: Counter[str] = Counter()
    for ticket in hub.registry.scheduler.waiting():
        want = ticket.want
        if (
            scope.agents is None
            or want.requester == scope.viewer.user_id
            or (want.groups is not None and not want.groups.isdisjoint(scope.groups))
        ):
            counts.update(want.models)
            counts[""] += 1
    return counts


def now_view(hub: HubServices, scope: Scope) -> NowView:
    dashboards = hub.dashboards
    window = dashboards.observer.window(scope.sees_key)
    sessions = _visible_sessions(hub, scope)
    scheduler = hub.registry.scheduler
    in_flight = 0
    for session in sessions:
        slots = scheduler.agent(session.agent_id)
        in_flight += slots.in_flight if slots is not None else 0
    queue = _waiting(hub, scope)[""] if scope.agents is not None else scheduler.queue_depth
    user_id = scope.viewer.user_id
    ledger = hub.accounting.ledger
    balance, held = ledger.balance(user_id), ledger.held(user_id)
    spent, earned = dashboards.observer.spent_24h(user_id), dashboards.observer.earned_24h(user_id)
    events = [feed_event(e) for e in reversed(dashboards.fleet.feed) if scope.sees_agent(e.agent_id)]
    return NowView(
        generated_at=iso(hub.clock.wall()),
        window_s=WINDOW_S,
        bucket_s=BUCKET_S,
        agents_online=len(sessions),
        agents_total=_known_agents(hub, scope),
        gpus=sum(len(s.host.gpus) for s in sessions if s.host is not None),
        hot_models=len({m.id for s in sessions for m in s.models if m.hot}),
        queue_depth=queue,
        in_flight=in_flight,
        requests_per_min=_metric(window, window.requests_per_min),
        tokens_per_s=_metric(window, window.tokens_per_s),
        ttft_p50_ms=_metric(window, lambda b: window.ttft_percentile(0.5, b)),
        error_rate=_metric(window, window.error_rate),
        account=AccountNow(
            balance=credits(balance),
            balance_micro=balance,
            held=credits(held),
            held_micro=held,
            spent_24h=credits(spent),
            spent_24h_micro=spent,
            earned_24h=credits(earned),
            earned_24h_micro=earned,
        ),
        events=events[:FEED_SHOWN],
    )


def feed_event(event: FleetEvent) -> FeedEvent:
    return FeedEvent(
        id=event.id,
        at=iso(event.at),
        kind=event.kind.value,
        agent_id=event.agent_id,
        agent_name=event.agent_name,
        model=event.model,
    )


def request_row(hub: HubServices, record: UsageRecord, view: RowView) -> RequestRow:
    """A finished request for the tail: in full for its consumer and admins, else for the serving agent's owner."""
    full = view is not RowView.SERVED
    key = hub.keys.live(record.key_id) if full and record.key_id is not None else None
    session = hub.registry.sessions.get(record.agent_id) if record.agent_id is not None else None
    track = hub.dashboards.fleet.tracks.get(record.agent_id) if record.agent_id is not None else None
    agent_name = session.name if session is not None else track.name if track is not None else None
    amount = record.charged if full else record.earned
    return RequestRow(
        request_id=record.request_id,
        at=iso(record.created_at),
        key_id=record.key_id if full else None,
        key_name=key.name if key is not None else None,
        model=record.model,
        agent_id=record.agent_id,
        agent_name=agent_name,
        status=record.status,
        outcome=str(record.outcome),
        ttft_ms=record.ttft_ms,
        duration_ms=record.total_ms,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        credits=credits(amount),
        credits_micro=amount,
        mine=view is RowView.MINE,
    )


def agent_change(hub: HubServices, agent_id: str) -> AgentChange:
    session = hub.registry.sessions.get(agent_id)
    track = hub.dashboards.fleet.tracks.get(agent_id)
    slots = hub.registry.scheduler.agent(agent_id)
    return AgentChange(
        agent_id=agent_id,
        name=session.name if session is not None else track.name if track is not None else "",
        state=state_of(hub, agent_id),
        paused=slots is not None and not slots.available,
        admin_drained=agent_id in hub.registry.admin_drained,
        in_flight=slots.in_flight if slots is not None else 0,
    )


@dataclass(slots=True)
class _Tally:
    hot: int = 0
    cold: int = 0
    loading: int = 0
    in_flight: int = 0
    slots: int = 0
    context: int | None = None
    badges: set[str] = field(default_factory=set)
    agents: list[str] = field(default_factory=list)


def model_rows(hub: HubServices, scope: Scope) -> list[ModelRow]:
    scheduler = hub.registry.scheduler
    windows = hub.dashboards.observer.by_model(scope.sees_key)
    waiting = _waiting(hub, scope)
    tallies: dict[str, _Tally] = {}
    for session in _visible_sessions(hub, scope):
        slots = scheduler.agent(session.agent_id)
        backends = {b.url: b for b in session.backends}
        for model in session.models:
            tally = tallies.setdefault(model.id, _Tally())
            tally.agents.append(session.agent_id)
            if model.hot:
                tally.hot += 1
            else:
                tally.cold += 1
            if slots is not None:
                tally.loading += model.id in slots.loading
                tally.in_flight += slots.in_flight
                tally.slots += slots.max_concurrency
            if model.context_length is not None:
                tally.context = max(model.context_length, tally.context or 0)
            tally.badges.add("embeddings" if model.kind == "embedding" else "chat")
            backend = backends.get(model.backend)
            if backend is not None:
                tally.badges.add(backend.kind)
                tally.badges.update(_DIALECT_BADGES[p] for p in backend.native_paths if p in _DIALECT_BADGES)
    return [
        _model_row(hub, scope, model_id, tallies[model_id], windows.get(model_id), waiting[model_id])
        for model_id in sorted(tallies)
    ]


def _model_row(
    hub: HubServices, scope: Scope, model_id: str, tally: _Tally, window: Window | None, queue: int
) -> ModelRow:
    return ModelRow(
        id=model_id,
        hot_agents=tally.hot,
        cold_agents=tally.cold,
        loading_agents=tally.loading,
        queue=queue,
        in_flight=tally.in_flight,
        slots=tally.slots,
        requests_15m=window.total_requests if window is not None else 0,
        ttft_p50_ms=window.ttft_percentile(0.5) if window is not None else None,
        ttft_p95_ms=window.ttft_percentile(0.95) if window is not None else None,
        tokens_per_s=_round(window.decode_tokens_per_s) if window is not None else None,
        error_rate=_round(window.error_rate()) if window is not None else None,
        context_length=tally.context,
        price=_price(hub, scope, model_id, tally.agents),
        capabilities=sorted(tally.badges),
    )


def _price(hub: HubServices, scope: Scope, model: str, agents: list[str]) -> PriceRange | None:
    accounting = hub.accounting
    groups = accounting.credit_groups(accounting.billing if scope.agents is None else scope.groups)
    if not groups:
        return None
    prices = [
        accounting.quote(group, agent_id, model).price
        for agent_id in agents
        for group in hub.access.groups_of_agent(agent_id) & groups
    ]
    if not prices:
        return None
    inputs = [p.input_per_mtok for p in prices]
    outputs = [p.output_per_mtok for p in prices]
    return PriceRange(input_min=min(inputs), input_max=max(inputs), output_min=min(outputs), output_max=max(outputs))


def machine(hub: HubServices, agent: Agent) -> Machine:
    session = hub.registry.sessions.get(agent.id)
    track = hub.dashboards.fleet.tracks.get(agent.id)
    slots = hub.registry.scheduler.agent(agent.id)
    host = session.host if session is not None else None
    wall = hub.clock.wall()
    return Machine(
        id=agent.id,
        name=session.name if session is not None else agent.name,
        owner_id=hub.access.agent_owner.get(agent.id, agent.owner_id),
        state=state_of(hub, agent.id),
        paused=slots is not None and not slots.available,
        admin_drained=agent.id in hub.registry.admin_drained,
        ejected_models=sorted(m for a, m, _until in hub.registry.scheduler.ejected() if a == agent.id),
        connected_at=iso(track.connected_at) if session is not None and track is not None else None,
        last_seen=iso(_last_seen(hub, session, track, agent, wall)),
        version=session.version if session is not None else track.version if track is not None else None,
        groups=sorted(hub.access.groups_of_agent(agent.id)),
        backends=[
            BackendView(
                url=b.url,
                kind=b.kind,
                version=b.version,
                healthy=b.healthy,
                running=b.running,
                waiting=b.waiting,
                slots=b.slots,
            )
            for b in (session.backends if session is not None else [])
        ],
        gpus=[
            GpuView(
                index=g.index,
                name=g.name,
                vendor=str(g.vendor),
                utilization_pct=g.utilization_pct,
                memory_used_bytes=g.memory_used_bytes,
                memory_total_bytes=g.memory_total_bytes,
                temperature_c=g.temperature_c,
                power_w=g.power_w,
                power_limit_w=g.power_limit_w,
            )
            for g in (host.gpus if host is not None else [])
        ],
        cpu_pct=host.cpu_pct if host is not None else None,
        ram_used_bytes=host.ram_used_bytes if host is not None else None,
        ram_total_bytes=host.ram_total_bytes if host is not None else None,
        load_at=iso(track.load_at) if session is not None and track is not None else None,
        models=[
            MachineModel(
                id=m.id,
                hot=m.hot,
                loading=slots is not None and m.id in slots.loading,
                context_length=m.context_length,
                size_bytes=m.size_bytes,
            )
            for m in sorted(session.models if session is not None else [], key=lambda m: m.id)
        ],
        slots=session.max_concurrency if session is not None else 0,
        in_flight=slots.in_flight if slots is not None else 0,
        reconnects=track.reconnects if track is not None else 0,
        ejections=track.ejections if track is not None else 0,
    )


def _last_seen(
    hub: HubServices, session: AgentSession | None, track: AgentTrack | None, agent: Agent, wall: datetime
) -> datetime | None:
    if session is not None:
        return wall - timedelta(seconds=max(0.0, hub.clock.now() - session.last_rx))
    if track is not None and track.last_seen is not None:
        return track.last_seen
    return agent.last_seen_at
