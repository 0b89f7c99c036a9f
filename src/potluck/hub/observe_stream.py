"""Who sees what on the dashboard, and the fan-out of its live stream to every open page.

A `Scope` is one viewer's visibility: an admin sees everything; anyone else the agents they own and the
agents shared into their groups, their own requests and the requests their agents served.

`Dashboards.tick` runs ten times a second in the hub's TaskGroup, never on the request path. Pages are spread
over the ten ticks of a second: at its tick, a page gets the requests finished since its previous one (from
the `Observer`'s ring) and its viewer's `now` snapshot; feed events and badge changes from a `FleetWatch` scan
go to every page at once. Each item is rendered once (the
`Renderer`, which the API layer provides, turns them into Server-Sent Events) and hands the bytes to the
subscribers that may see them. A subscriber's queue is bounded: tail rows and feed items beyond
`MAX_ITEMS` are dropped and counted, a newer ``now`` replaces an older one, an agent's newer badge its
older one. A slow page therefore costs a bounded amount of memory, and nothing here ever waits on it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from potluck.hub.access import AccessMap
from potluck.hub.observe import Observer, WindowKey
from potluck.hub.observe_fleet import FleetEvent, FleetWatch
from potluck.hub.scoring import Want
from potluck.store.usage import UsageRecord

log = logging.getLogger(__name__)

TICK_S = 0.1
SLOTS = 10
"""Pages are spread over this many ticks (one second): each page gets its figures and tail rows once a second,
at its own tick, so 200 pages are 20 writes every 0.1 s rather than one burst of 200 that stalls the event
loop (and every request behind it) once a second."""
SCAN_EVERY = 5
"""Ticks between fleet scans: a drain or a new agent reaches every page that sees it within about half a
second (the issue asks for 2)."""
QUIET_TICKS = 150
"""A page given nothing for this many ticks (15 s) is woken anyway: its handler sends a keep-alive (and
checks its session), so no handler needs a timer of its own."""
MAX_ITEMS = 256
"""Tail rows and feed items a subscriber may have waiting."""
MAX_ROWS_PER_TICK = 20
"""Tail rows given to a page per delivery (20 a second: more than anyone reads); the rest count as dropped. A
busy hub's fan-out thus costs at most this many rows per page per delivery, whatever its request rate."""


class RowView(enum.Enum):
    """How a viewer sees a finished request in the live tail."""

    MINE = "mine"
    """They made it: in full."""
    ANY = "any"
    """An admin, someone else's request: in full."""
    SERVED = "served"
    """One of their agents served someone else's request: no key, and the credits are their earnings."""


@dataclass(frozen=True, slots=True)
class Viewer:
    user_id: str
    admin: bool


@dataclass(frozen=True, slots=True)
class Scope:
    """What one viewer may see now."""

    viewer: Viewer
    agents: frozenset[str] | None
    """Agents they may see; None: all (an admin)."""
    groups: frozenset[str]
    """Their groups."""
    owned: frozenset[str] = frozenset()
    """Agents they own."""

    def sees_agent(self, agent_id: str) -> bool:
        return self.agents is None or agent_id in self.agents

    def sees_key(self, key: WindowKey) -> bool:
        """A window key: traffic through one of their groups (on an agent they see, or on none), or any
        traffic on an agent they own. Traffic of another group on an agent shared with theirs is not theirs."""
        if self.agents is None:
            return True
        agent_id, group_id = key[0], key[1]
        if agent_id is not None and agent_id in self.owned:
            return True
        if group_id is None or group_id not in self.groups:
            return False
        return agent_id is None or agent_id in self.agents

    def sees_want(self, want: Want) -> bool:
        """A request waiting in the queue: theirs, or one through one of their groups."""
        if self.agents is None or want.requester == self.viewer.user_id:
            return True
        return want.groups is not None and not want.groups.isdisjoint(self.groups)

    def sees_record(self, record: UsageRecord) -> RowView | None:
        """How the viewer sees a finished request; None: not at all."""
        user_id = self.viewer.user_id
        if record.user_id == user_id:
            return RowView.MINE
        if self.viewer.admin:
            return RowView.ANY
        if record.owner_id == user_id:
            return RowView.SERVED
        return None


def scope_of(viewer: Viewer, access: AccessMap) -> Scope:
    """The viewer's scope from the in-memory access map (no database)."""
    groups = frozenset(access.user_groups.get(viewer.user_id, ()))
    if viewer.admin:
        return Scope(viewer, None, groups)
    owned = frozenset(a for a, owner in access.agent_owner.items() if owner == viewer.user_id)
    shared = {a for a, into in access.agent_groups.items() if not into.isdisjoint(groups)}
    return Scope(viewer, owned | shared, groups, owned)


class Renderer(Protocol):
    """Turns the hub's items into the stream's bytes (one Server-Sent Event each)."""

    def now(self, scope: Scope) -> tuple[bytes, bytes]:
        """The viewer's ``now`` snapshot: (what identifies its figures, leaving out when it was taken; the event)."""
        ...

    def request(self, record: UsageRecord, view: RowView) -> bytes: ...

    def event(self, event: FleetEvent) -> bytes: ...

    def agent(self, agent_id: str) -> bytes: ...


class Subscriber:
    """One open dashboard stream: what it has not read yet, bounded."""

    def __init__(self, viewer: Viewer, max_items: int = MAX_ITEMS) -> None:
        self.viewer = viewer
        self.max_items = max_items
        self.items: deque[bytes] = deque()
        self.now: bytes | None = None
        self.agents: dict[str, bytes] = {}
        self.dropped = 0
        """Items dropped since the page last read."""
        self.dropped_total = 0
        self._last_now: bytes | None = None
        """The figures of the ``now`` last given (without its time)."""
        self._ready = asyncio.Event()
        self.quiet_ticks = 0
        """Ticks since the page last took something; after `QUIET_TICKS` it is woken to send a keep-alive."""
        self.slot = 0
        """The tick of each second at which the page gets its figures and tail rows."""

    def push(self, item: bytes) -> None:
        if len(self.items) >= self.max_items:
            self.items.popleft()
            self.dropped += 1
            self.dropped_total += 1
        self.items.append(item)
        self._ready.set()

    def skip(self, count: int) -> None:
        self.dropped += count
        self.dropped_total += count
        self._ready.set()

    def offer_now(self, snapshot: tuple[bytes, bytes]) -> None:
        """A ``now`` snapshot: kept only when its figures differ from those last given."""
        figures, event = snapshot
        if figures != self._last_now:
            self._last_now, self.now = figures, event
            self._ready.set()

    def offer_agent(self, agent_id: str, change: bytes) -> None:
        self.agents[agent_id] = change
        self._ready.set()

    def wake(self) -> None:
        """Wake the page's handler with nothing new (it looks at the hub's state)."""
        self._ready.set()

    async def wait(self) -> None:
        """Wait until something is ready, or the page is woken (no timer: the ticks wake a quiet page)."""
        await self._ready.wait()

    def take(self) -> tuple[bytes | None, list[bytes], list[bytes], int]:
        """Everything ready: the latest ``now``, the agents' badges, the items, and how many were dropped."""
        now, self.now = self.now, None
        agents = list(self.agents.values())
        self.agents.clear()
        items = list(self.items)
        self.items.clear()
        dropped, self.dropped = self.dropped, 0
        self.quiet_ticks = 0
        self._ready.clear()
        return now, agents, items, dropped


class Dashboards:
    """See the module docstring."""

    def __init__(
        self,
        observer: Observer,
        fleet: FleetWatch,
        access: AccessMap,
        *,
        admin: Callable[[str], bool],
        closing: Callable[[], bool] = lambda: False,
        tick_s: float = TICK_S,
    ) -> None:
        self._closing = closing
        self.observer = observer
        self.fleet = fleet
        self._access = access
        self._is_admin = admin
        self._tick_s = tick_s
        self.renderer: Renderer | None = None
        self.subscribers: set[Subscriber] = set()
        self._slots: list[set[Subscriber]] = [set() for _ in range(SLOTS)]
        self._next_slot = 0
        self._ticks = 0
        self._seen = [observer.seq] * SLOTS
        """Per slot: the sequence number of the last record its pages were given."""
        self._nows: dict[Viewer, tuple[int, tuple[bytes, bytes]]] = {}
        """Per viewer: the tick of its latest ``now`` snapshot, and the snapshot (reused for a second)."""
        self._cache: dict[tuple[object, ...], tuple[int, bytes]] = {}
        """Items rendered over the last second (with the tick they were rendered at), so that 200 pages
        showing the same request cost one encoding."""

    def viewer(self, user_id: str) -> Viewer:
        return Viewer(user_id, self._is_admin(user_id))

    def scope(self, user_id: str) -> Scope:
        return scope_of(self.viewer(user_id), self._access)

    def subscribe(self, user_id: str, max_items: int = MAX_ITEMS) -> Subscriber:
        subscriber = Subscriber(self.viewer(user_id), max_items)
        subscriber.slot = self._next_slot
        self._next_slot = (self._next_slot + 1) % SLOTS
        self.subscribers.add(subscriber)
        self._slots[subscriber.slot].add(subscriber)
        renderer = self.renderer
        if renderer is not None:
            subscriber.offer_now(renderer.now(self.scope(user_id)))
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        self._slots[subscriber.slot].discard(subscriber)

    async def run(self) -> None:
        """Tick until cancelled. A failing tick is logged and the next one runs: the dashboard is a view of
        the hub, and a fault in it must not stop the hub (which a crashed background loop does)."""
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                self.tick()
            except Exception:  # logged; the next tick starts afresh
                log.exception("a dashboard tick failed")
                self._cache.clear()

    def tick(self) -> None:
        if self._closing():
            self._wake_all()
            return
        self._ticks += 1
        slot = self._ticks % SLOTS
        if slot == 0:
            # Every slot's pages have had what was rendered more than a second ago: forget it.
            self._cache = {k: v for k, v in self._cache.items() if v[0] > self._ticks - SLOTS}
        events: list[FleetEvent] = []
        changed: list[str] = []
        if self._ticks % SCAN_EVERY == 0:
            events, changed = self.fleet.scan()
        rows = self._new_rows(slot)
        renderer = self.renderer
        if renderer is None or not self.subscribers:
            return
        self._keep_alive()
        scopes: dict[Viewer, Scope] = {}
        if events or changed:
            for subscriber in self.subscribers:
                self._fleet_to(subscriber, self._scope(scopes, subscriber.viewer), events, changed, renderer)
        self._deliver(self._slots[slot], rows, scopes, renderer)

    def _deliver(
        self, pages: set[Subscriber], rows: list[UsageRecord], scopes: dict[Viewer, Scope], renderer: Renderer
    ) -> None:
        """One slot's pages get their tail rows and their viewer's ``now``."""
        deliveries: dict[Viewer, _Delivery] = {}
        for subscriber in pages:
            viewer = subscriber.viewer
            delivery = deliveries.get(viewer)
            if delivery is None:
                delivery = deliveries[viewer] = self._delivery(self._scope(scopes, viewer), rows, renderer)
            if delivery.skipped:
                subscriber.skip(delivery.skipped)
            for item in delivery.items:
                subscriber.push(item)
            subscriber.offer_now(self._now(viewer, scopes, renderer))

    def _scope(self, scopes: dict[Viewer, Scope], viewer: Viewer) -> Scope:
        scope = scopes.get(viewer)
        if scope is None:
            scope = scopes[viewer] = scope_of(viewer, self._access)
        return scope

    def _now(self, viewer: Viewer, scopes: dict[Viewer, Scope], renderer: Renderer) -> tuple[bytes, bytes]:
        """The viewer's ``now`` snapshot, taken at most once a second whatever the number of their pages."""
        cached = self._nows.get(viewer)
        if cached is not None and self._ticks - cached[0] < SLOTS:
            return cached[1]
        snapshot = renderer.now(self._scope(scopes, viewer))
        self._nows[viewer] = (self._ticks, snapshot)
        if len(self._nows) > 4 * len(self.subscribers) + SLOTS:
            live = {s.viewer for s in self.subscribers}
            self._nows = {v: n for v, n in self._nows.items() if v in live}
        return snapshot

    def _fleet_to(
        self, subscriber: Subscriber, scope: Scope, events: list[FleetEvent], changed: list[str], renderer: Renderer
    ) -> None:
        """Feed events and badge changes go to every page that sees the agent at once (they are rare)."""
        for event in events:
            if scope.sees_agent(event.agent_id):
                subscriber.push(self._render(("event", event.id), partial(renderer.event, event)))
        for agent_id in changed:
            if scope.sees_agent(agent_id):
                subscriber.offer_agent(
                    agent_id, self._render(("agent", agent_id, self._ticks), partial(renderer.agent, agent_id))
                )

    def _keep_alive(self) -> None:
        for subscriber in self.subscribers:
            subscriber.quiet_ticks += 1
            if subscriber.quiet_ticks >= QUIET_TICKS:
                subscriber.quiet_ticks = 0
                subscriber.wake()

    def close(self) -> None:
        """The hub is shutting down: wake every page's handler, which sees it and ends its stream."""
        self._wake_all()

    def _wake_all(self) -> None:
        for subscriber in self.subscribers:
            subscriber.wake()

    def _delivery(self, scope: Scope, rows: list[UsageRecord], renderer: Renderer) -> _Delivery:
        """The tail rows every page of one viewer in this slot gets (computed once per viewer and slot)."""
        shown = [(record, view) for record in rows if (view := scope.sees_record(record)) is not None]
        skipped = max(0, len(shown) - MAX_ROWS_PER_TICK)
        items = [
            self._render(("request", record.request_id, view), partial(renderer.request, record, view))
            for record, view in shown[skipped:]
        ]
        return _Delivery(items, skipped)

    def _new_rows(self, slot: int) -> list[UsageRecord]:
        """The records finished since this slot's pages were last given rows (a second ago), oldest first,
        reading only those from the ring's end."""
        seen, self._seen[slot] = self._seen[slot], self.observer.seq
        rows = []
        for seq, record in reversed(self.observer.recent):
            if seq <= seen:
                break
            rows.append(record)
        rows.reverse()
        return rows

    def _render(self, key: tuple[object, ...], render: Callable[[], bytes]) -> bytes:
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = (self._ticks, render())
        return cached[1]


@dataclass(slots=True)
class _Delivery:
    items: list[bytes]
    """Tail rows."""
    skipped: int
    """Tail rows beyond `MAX_ROWS_PER_TICK`."""
