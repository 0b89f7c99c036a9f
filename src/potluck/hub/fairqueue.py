"""The wait queue: one queue per requested model name, deficit round robin over users inside each.

Each user's quantum is its key's priority, so a user flooding the queue waits behind everyone
else's next request instead of in front of it; and a user may hold at most ``user_share`` of the
whole queue. Pure data structure: the scheduler decides which tickets an agent may take.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from potluck.hub.scoring import Placement, Want


class QueueFullError(Exception):
    """The wait queue is at its bound."""


class QueueShareError(QueueFullError):
    """This user already holds its share of the wait queue."""


@dataclass(slots=True, eq=False)
class Ticket:
    """A request waiting for a slot. ``placement`` is set when a slot is granted."""

    id: int
    want: Want
    queue: str
    enqueued_at: float
    deadline: float
    cold_after: float = -math.inf
    """From when it may take a slot on an agent that must load its model (until then it waits for a hot one)."""
    placement: Placement | None = None
    done: bool = False

    @property
    def agent_id(self) -> str | None:
        return None if self.placement is None else self.placement.agent_id


@dataclass(frozen=True, slots=True)
class Grant:
    ticket: Ticket
    placement: Placement

    @property
    def agent_id(self) -> str:
        return self.placement.agent_id


@dataclass(slots=True)
class _Flow:
    tickets: deque[Ticket] = field(default_factory=deque)
    deficit: float = 0.0


@dataclass(slots=True)
class _Queue:
    """One requested model name's waiting tickets: a flow per user, served by deficit round robin."""

    models: tuple[str, ...]
    flows: dict[str, _Flow] = field(default_factory=dict)
    active: deque[str] = field(default_factory=deque)
    size: int = 0


_ANONYMOUS = ""


class FairQueue:
    def __init__(self, max_size: int, user_share: float) -> None:
        self.max_size = max_size
        self.user_share = user_share
        self._queues: dict[str, _Queue] = {}
        self._per_user: dict[str, int] = {}
        self.depth = 0

    def push(self, ticket: Ticket) -> None:
        """Raises QueueFullError at the bound, QueueShareError past the user's share."""
        if self.depth >= self.max_size:
            raise QueueFullError
        user = ticket.want.requester or _ANONYMOUS
        # A request another replica placed (pinned) is bounded there, by that replica's count of the agent's slots.
        if ticket.want.pinned is None and self._per_user.get(user, 0) >= max(1, int(self.max_size * self.user_share)):
            raise QueueShareError
        q = self._queues.get(ticket.queue)
        if q is None:
            q = self._queues[ticket.queue] = _Queue(ticket.want.models)
        flow = q.flows.get(user)
        if flow is None:
            flow = q.flows[user] = _Flow()
            q.active.append(user)
        flow.tickets.append(ticket)
        q.size += 1
        self.depth += 1
        self._per_user[user] = self._per_user.get(user, 0) + 1

    def remove(self, ticket: Ticket) -> None:
        q = self._queues.get(ticket.queue)
        user = ticket.want.requester or _ANONYMOUS
        flow = q.flows.get(user) if q is not None else None
        if q is None or flow is None:
            return
        with contextlib.suppress(ValueError):
            flow.tickets.remove(ticket)
            self._removed(ticket.queue, q, user, flow)

    def tickets(self) -> Iterator[Ticket]:
        for q in self._queues.values():
            for flow in q.flows.values():
                yield from flow.tickets

    def in_turns(self) -> list[Ticket]:
        """Every waiting ticket, users taking turns: each user's oldest first, then each one's second..."""
        turns: dict[str, int] = {}
        order: list[tuple[int, float, int, Ticket]] = []
        for ticket in sorted(self.tickets(), key=lambda t: (t.enqueued_at, t.id)):
            user = ticket.want.requester or _ANONYMOUS
            turns[user] = turns.get(user, 0) + 1
            order.append((turns[user], ticket.enqueued_at, ticket.id, ticket))
        order.sort(key=lambda entry: entry[:3])
        return [entry[3] for entry in order]

    def queued(self, model: str) -> int:
        """Tickets that ``model`` could serve."""
        return sum(q.size for q in self._queues.values() if model in q.models)

    def queued_by_model(self) -> dict[str, int]:
        """`queued` for every model some waiting ticket could be served by."""
        counts: dict[str, int] = {}
        for q in self._queues.values():
            if q.size:
                for model in q.models:
                    counts[model] = counts.get(model, 0) + q.size
        return counts

    def ahead(self, ticket: Ticket) -> tuple[int, tuple[str, ...]]:
        """(this ticket's place in line under round robin, 1 = next; the models that can serve it)."""
        q = self._queues.get(ticket.queue)
        user = ticket.want.requester or _ANONYMOUS
        mine = q.flows.get(user) if q is not None else None
        if q is None or mine is None:
            return 0, ()
        rounds = next((i for i, t in enumerate(mine.tickets) if t is ticket), len(mine.tickets)) + 1
        quantum = max(1, ticket.want.weight)
        place = rounds
        before = True  # users ahead of this one in the round robin get one more round in
        for other in q.active:
            if other == user:
                before = False
                continue
            flow = q.flows[other]
            if flow.tickets:
                per_round = max(1, flow.tickets[0].want.weight)
                turns = rounds if before else rounds - 1
                place += min(len(flow.tickets), math.ceil(turns * per_round / quantum))
        return place, q.models

    def next_for(self, models: frozenset[str], eligible: Callable[[Ticket], bool]) -> Ticket | None:
        """Take the next ticket an agent serving ``models`` should start: queues by their oldest head
        (first come, first served across models), and deficit round robin over users within one."""
        queues = sorted(
            (
                (min((f.tickets[0].enqueued_at, f.tickets[0].id) for f in q.flows.values()), name, q)
                for name, q in self._queues.items()
                if not models.isdisjoint(q.models)
            ),
            key=lambda entry: entry[0],
        )
        for _, name, q in queues:
            ticket = self._drr(name, q, eligible)
            if ticket is not None:
                return ticket
        return None

    def _drr(self, name: str, q: _Queue, eligible: Callable[[Ticket], bool]) -> Ticket | None:
        for _ in range(2 * len(q.active) + 1):
            if not q.active:
                return None
            user = q.active[0]
            flow = q.flows[user]
            ticket = next((t for t in flow.tickets if eligible(t)), None)
            if ticket is None:
                q.active.rotate(-1)  # nothing of theirs fits this agent: no turn used
                continue
            if flow.deficit < 1.0:
                flow.deficit += max(1, ticket.want.weight)
            flow.deficit -= 1.0
            flow.tickets.remove(ticket)
            if flow.tickets and flow.deficit < 1.0:
                q.active.rotate(-1)  # its turn is over
            self._removed(name, q, user, flow)
            return ticket
        return None

    def _removed(self, name: str, q: _Queue, user: str, flow: _Flow) -> None:
        q.size -= 1
        self.depth -= 1
        left = self._per_user[user] - 1
        if left:
            self._per_user[user] = left
        else:
            del self._per_user[user]
        if not flow.tickets:
            del q.flows[user]
            with contextlib.suppress(ValueError):
                q.active.remove(user)
            flow.deficit = 0.0
        if not q.size:
            del self._queues[name]
