"""Models whose agents are away for a moment are unavailable, not missing.

A 404 ``model_not_found`` is a permanent error to the openai SDK and LiteLLM. Two absences are brief:

- right after the hub restarts, the agents that served a model are still dialling back (within seconds).
  Until each agent that was connected when the hub stopped is back, or the grace period ends, a request
  for a model it served gets 503 ``model_unavailable`` with Retry-After instead, which every client
  retries (`Returning`);
- in a cluster, the peer link to the replica holding the agent is reconnecting. The request waits for
  the link, up to a replica lease, and is placed once it is up; after that it gets the same 503
  (`Relinking`, implemented by hub/cluster.py).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Protocol

from potluck._shared.clock import Clock


class Relinking(Protocol):
    """Agents another replica holds, behind a peer link that is down right now."""

    lease_s: float
    """How long a request waits for a link before it is told to retry."""

    def unlinked(self, models: tuple[str, ...], reachable: Collection[str] | None) -> bool:
        """Whether an agent serving one of ``models`` (among ``reachable``; None: any) is behind a link that is
        down."""
        ...

    async def relinked(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a link to come up; whether one did."""
        ...


class Returning:
    def __init__(self, clock: Clock, served: dict[str, list[str]], grace_s: float) -> None:
        self._clock = clock
        self._until = clock.now() + grace_s
        self._served = {agent_id: frozenset(models) for agent_id, models in served.items() if models}

    def arrived(self, agent_id: str) -> None:
        self._served.pop(agent_id, None)

    def awaited(self, models: Iterable[str], reachable: Iterable[str] | None) -> int | None:
        """Seconds to suggest in Retry-After if one of ``models`` is on an agent still expected back (among
        ``reachable`` agents; None: any); None once the grace period is over or nothing is expected."""
        if not self._served:
            return None
        left = self._until - self._clock.now()
        if left <= 0:
            self._served.clear()
            return None
        wanted = frozenset(models)
        agents = self._served.keys() if reachable is None else set(reachable) & self._served.keys()
        if any(self._served[agent_id] & wanted for agent_id in agents):
            return max(1, min(5, round(left)))
        return None
