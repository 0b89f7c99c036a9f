"""When a request waits for a hot slot rather than start its model cold, and for how long.

A cold start takes a slot for 10-60 s and may evict models that others are using, so under the
potluck policy a request waits in the queue when every agent with its model hot is busy and a hot
slot is expected well before the cold start would finish; and a queued request takes a cold slot
only once it has waited about as long as the cold start would have taken (ski rental: never more
than twice the better choice). Pure: no I/O, times come in.
"""

from __future__ import annotations

import math

from potluck.hub.fairqueue import FairQueue, Ticket
from potluck.hub.learning import Learning
from potluck.hub.roster import Roster
from potluck.hub.scoring import AgentSlots, Want, cold_wait_s

HOT_WAIT_SHARE = 0.75
"""A request waits for a hot slot only when one is expected within this share of its cold start: a load
also leaves the model hot on one more agent, for the requests after this one."""
LAST_CHANCE_S = 2.0
"""A request waiting for a hot slot takes a cold one at the latest this long before its wait times out."""


class Patience:
    def __init__(self, roster: Roster, queue: FairQueue, learning: Learning) -> None:
        self._roster = roster
        self._queue = queue
        self._learning = learning

    def hot_wait_s(self, want: Want, now: float) -> float | None:
        """Expected seconds until a slot frees on an agent with a wanted model hot: the requests queued for
        the model, plus this one, over the rate at which its hot slots free up (each hot agent's slots over
        its learnt request duration). None when no agent has it hot, or one has a free slot (then the
        scores preferred another agent: so be it)."""
        best: float | None = None
        for model in want.models:
            rate = 0.0
            one = Want((model,), want.exclude, want.groups, want.requester, pinned=want.pinned)
            for agent, name in self._roster.homes(one, now):
                if name in agent.hot:
                    if agent.in_flight < agent.max_concurrency:
                        return None
                    rate += agent.max_concurrency / self._learning.service_s(name, agent.agent_id)
            if rate > 0:
                wait = (self._queue.queued(model) + 1) / rate
                best = wait if best is None else min(best, wait)
        return best

    def worth_waiting(self, want: Want, agent: AgentSlots, model: str, now: float) -> float | None:
        """The expected wait for a hot slot, when it is shorter than `HOT_WAIT_SHARE` of what starting
        ``model`` on ``agent`` without it would take (None: start there now)."""
        if model in agent.hot:
            return None
        hot_s = self.hot_wait_s(want, now)
        return hot_s if hot_s is not None and hot_s < HOT_WAIT_SHARE * cold_wait_s(agent, model, now) else None

    def cold_after(self, want: Want, now: float, deadline: float) -> float:
        """From when a request queued now may take a cold slot: after the shortest expected cold start among
        the agents that could serve it, or `LAST_CHANCE_S` before its deadline if that is sooner; at once
        when no agent has its model hot or loading."""
        warm = False
        cold = math.inf
        for agent, model in self._roster.homes(want, now):
            warm = warm or model in agent.hot or model in agent.loading
            if model not in agent.hot:
                cold = min(cold, cold_wait_s(agent, model, now))
        if not warm or cold == math.inf:
            return now
        return max(now, min(now + cold, deadline - LAST_CHANCE_S))

    def cold_eligible(self, ticket: Ticket, now: float, cache: dict[Want, bool]) -> bool:
        """A waiting request may take a cold slot: its `Ticket.cold_after` has come, or no agent that could
        serve it has a wanted model hot or loading any more. ``cache``: per request shape, for one pass."""
        if now >= ticket.cold_after:
            return True
        warm = cache.get(ticket.want)
        if warm is None:
            homes = self._roster.homes(ticket.want, now)
            warm = cache[ticket.want] = any(m in a.hot or m in a.loading for a, m in homes)
        return not warm
