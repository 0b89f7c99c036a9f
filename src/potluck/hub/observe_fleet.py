"""The fleet's event feed and per-agent history, for the dashboard.

`FleetWatch.scan` (twice a second, from `potluck.hub.observe_stream.Dashboards`) compares what the
registry and the scheduler say about each agent now with what they said at the previous scan, and
turns the differences into feed events (online, offline, reconnected, draining, paused, ejected,
model loading/loaded/unloaded) and into the agents whose badge changed. Diffing, rather than hooks in
the registry and the gate, keeps the agent paths untouched and costs O(agents) per scan whatever the
traffic; a change shows up on a dashboard within about a second. It also keeps what the registry
forgets: when an agent was last seen, its version, its reconnects and ejections since the hub started,
and when its latest LOAD frame arrived.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from potluck._shared.clock import Clock
from potluck.hub.registry import Registry
from potluck.hub.scoring import AgentSlots
from potluck.hub.session import AgentSession
from potluck.protocol.metrics import HostMetrics
from potluck.store.agents import Agent

__all__ = ["Agent", "AgentTrack", "EventKind", "FleetEvent", "FleetWatch"]

FEED = 200
"""Feed events kept."""


_NONE: frozenset[str] = frozenset()
"""The one empty set the tracks share."""


def _model_sets(
    session: AgentSession, slots: AgentSlots | None
) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(hot, listed, loading) models of an agent. The scheduler's sets are shared by every agent serving the same
    models (`Scheduler._intern`), and most agents load nothing: kept per agent, new sets cost about 1 KB each."""
    if slots is None:
        return frozenset(m.id for m in session.models if m.hot), frozenset(m.id for m in session.models), _NONE
    return slots.hot, slots.models, frozenset(slots.loading) if slots.loading else _NONE


class EventKind(enum.StrEnum):
    AGENT_ONLINE = "agent_online"
    AGENT_OFFLINE = "agent_offline"
    AGENT_RECONNECTED = "agent_reconnected"
    AGENT_DRAINING = "agent_draining"
    AGENT_RESUMED = "agent_resumed"
    AGENT_PAUSED = "agent_paused"
    AGENT_UNPAUSED = "agent_unpaused"
    AGENT_EJECTED = "agent_ejected"
    AGENT_RESTORED = "agent_restored"
    MODEL_LOADING = "model_loading"
    MODEL_LOADED = "model_loaded"
    MODEL_UNLOADED = "model_unloaded"


@dataclass(frozen=True, slots=True)
class FleetEvent:
    """An item of the feed."""

    id: int
    at: datetime
    kind: EventKind
    agent_id: str
    agent_name: str
    model: str | None = None


@dataclass(slots=True)
class AgentTrack:
    """What the dashboard knows about one agent beyond its live session."""

    agent_id: str
    name: str
    online: bool = False
    session: AgentSession | None = None
    """The connection seen last: another one is a new connection."""
    connected_at: datetime | None = None
    last_seen: datetime | None = None
    """While offline: when it went away."""
    version: str | None = None
    reconnects: int = 0
    ejections: int = 0
    load_at: datetime | None = None
    host: HostMetrics | None = None
    draining: bool = False
    paused: bool = False
    admin_drained: bool = False
    models: frozenset[str] = frozenset()
    hot: frozenset[str] = frozenset()
    loading: frozenset[str] = frozenset()
    ejected: frozenset[str] = field(default_factory=frozenset)

    @property
    def badge(self) -> tuple[bool, bool, bool, bool]:
        return (self.online, self.draining, self.paused, self.admin_drained)


class FleetWatch:
    """See the module docstring."""

    def __init__(self, registry: Registry, clock: Clock) -> None:
        self._registry = registry
        self._clock = clock
        self.tracks: dict[str, AgentTrack] = {}
        self.feed: deque[FleetEvent] = deque(maxlen=FEED)
        self._next_id = 0

    def scan(self) -> tuple[list[FleetEvent], list[str]]:
        """Compare with the previous scan: the new feed events, and the agents whose state badge changed."""
        registry = self._registry
        scheduler = registry.scheduler
        wall = self._clock.wall()
        ejected: dict[str, set[str]] = {}
        for agent_id, model, _until in scheduler.ejected():
            ejected.setdefault(agent_id, set()).add(model)
        events: list[FleetEvent] = []
        changed: list[str] = []
        for agent_id, session in registry.sessions.items():
            track = self.tracks.get(agent_id)
            fresh = track is None
            if track is None:
                track = self.tracks[agent_id] = AgentTrack(agent_id, session.name)
            before = track.badge
            track.name = session.name
            slots = scheduler.agent(agent_id)
            hot, models, loading = _model_sets(session, slots)
            now_ejected = frozenset(ejected[agent_id]) if agent_id in ejected else _NONE
            draining = slots.draining if slots is not None else False
            paused = not slots.available if slots is not None else False
            admin_drained = agent_id in registry.admin_drained
            if session.host is not track.host:
                track.host = session.host
                track.load_at = wall
            new_connection = session is not track.session
            if new_connection:
                self._connected(track, session, wall, fresh, events)
            else:
                self._models(track, wall, loading, hot, models, events)
                self._flags(track, wall, draining, paused, events)
            for model in sorted(now_ejected - track.ejected):
                track.ejections += 1
                events.append(self._event(wall, EventKind.AGENT_EJECTED, track, model))
            events.extend(self._event(wall, EventKind.AGENT_RESTORED, track, m) for m in track.ejected - now_ejected)
            track.online = True
            track.draining, track.paused, track.admin_drained = draining, paused, admin_drained
            track.models, track.hot, track.loading, track.ejected = models, hot, loading, now_ejected
            track.last_seen = _ago(wall, self._clock.now() - session.last_rx)
            if new_connection or track.badge != before:
                changed.append(agent_id)
        for agent_id, track in self.tracks.items():
            if track.online and agent_id not in registry.sessions:
                self._gone(track, wall, events)
                changed.append(agent_id)
        return events, changed

    def _gone(self, track: AgentTrack, wall: datetime, events: list[FleetEvent]) -> None:
        track.online = track.draining = track.paused = False
        track.admin_drained = track.agent_id in self._registry.admin_drained
        track.last_seen = wall
        track.host = None
        track.session = None
        track.hot = track.loading = track.models = track.ejected = _NONE
        events.append(self._event(wall, EventKind.AGENT_OFFLINE, track))

    def _connected(
        self, track: AgentTrack, session: AgentSession, wall: datetime, fresh: bool, events: list[FleetEvent]
    ) -> None:
        kind = EventKind.AGENT_RECONNECTED if track.online else EventKind.AGENT_ONLINE
        if not fresh:
            track.reconnects += 1
        track.session = session
        track.connected_at = wall
        track.version = session.version
        track.load_at = wall if session.host is not None else None
        events.append(self._event(wall, kind, track))

    def _models(
        self,
        track: AgentTrack,
        wall: datetime,
        loading: frozenset[str],
        hot: frozenset[str],
        models: frozenset[str],
        events: list[FleetEvent],
    ) -> None:
        events.extend(self._event(wall, EventKind.MODEL_LOADING, track, m) for m in sorted(loading - track.loading))
        events.extend(self._event(wall, EventKind.MODEL_LOADED, track, m) for m in sorted(hot - track.hot))
        gone = (track.hot - hot) & models
        events.extend(self._event(wall, EventKind.MODEL_UNLOADED, track, m) for m in sorted(gone))

    def _flags(self, track: AgentTrack, wall: datetime, draining: bool, paused: bool, events: list[FleetEvent]) -> None:
        if draining != track.draining:
            events.append(self._event(wall, EventKind.AGENT_DRAINING if draining else EventKind.AGENT_RESUMED, track))
        if paused != track.paused:
            events.append(self._event(wall, EventKind.AGENT_PAUSED if paused else EventKind.AGENT_UNPAUSED, track))

    def _event(self, at: datetime, kind: EventKind, track: AgentTrack, model: str | None = None) -> FleetEvent:
        self._next_id += 1
        event = FleetEvent(self._next_id, at, kind, track.agent_id, track.name, model)
        self.feed.append(event)
        return event


def _ago(wall: datetime, seconds: float) -> datetime:
    return wall - timedelta(seconds=max(0.0, seconds))
