"""The throughput floor: an agent that serves a model too slowly, again and again, is parked for it.

A group may set a minimum of generated tokens per second for a model (or for all its models). Every
request an agent serves in full with at least ``min_tokens`` completion tokens is a measurement
(`potluck.hub.claims.Sample`: decode time for a stream, the whole answer otherwise). When ``strikes`` of
the last ``window`` measurements of that agent and model in the group fall below the floor, the agent is
parked for the model in that group: out of routing there, with the reason in its owner's agent listing
and the hub's log. One slow answer (a long prompt, a busy GPU) never parks anyone.

Un-parking: a group owner or admin lifts it (``potluck group lift``), or it lifts itself after
``cool_down_s`` (the lifecycle's claims loop), with a clean slate of measurements.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from potluck.hub.claims import Claims, Sample
from potluck.protocol.accounts import HoldKind


@dataclass(frozen=True, slots=True)
class FloorSettings:
    window: int = 10
    """Measurements kept per (group, agent, model)."""
    strikes: int = 5
    """Measurements below the floor among them that park the agent."""
    min_tokens: int = 32
    """Fewer completion tokens say too little about speed to count."""
    cool_down_s: float = 600.0
    """A parked agent is back in routing for the model after this long."""


class ThroughputFloor:
    """Watches what agents serve against their groups' floors (see the module docstring)."""

    def __init__(self, claims: Claims, settings: FloorSettings) -> None:
        self._claims = claims
        self.settings = settings
        self._seen: dict[tuple[str, str, str], deque[bool]] = {}
        """(group, agent, model) -> the last measurements: True where below the floor."""

    def served(self, sample: Sample) -> None:
        """Count a request an agent served in full (`RequestOwner`'s hook; synchronous, no I/O)."""
        settings = self.settings
        if sample.completion_tokens < settings.min_tokens:
            return
        view = self._claims.view
        if not view.rules:
            return
        rate = sample.tokens_per_s
        for group_id in self._claims.groups_for(sample.agent_id, sample.key_groups):
            rule = view.rule(group_id, sample.model)
            if rule is None or rule.min_tokens_per_s is None:
                continue
            key = (group_id, sample.agent_id, sample.model)
            if self._claims.held(group_id, sample.agent_id, sample.model, HoldKind.PARKED) is not None:
                continue
            seen = self._seen.get(key)
            if seen is None:
                seen = self._seen[key] = deque(maxlen=settings.window)
            seen.append(rate < rule.min_tokens_per_s)
            slow, measured = sum(seen), len(seen)
            if slow >= settings.strikes:
                seen.clear()  # a clean slate once it is back
                self._claims.hold(
                    group_id,
                    sample.agent_id,
                    sample.model,
                    HoldKind.PARKED,
                    f"served {sample.model} below the group's floor of {rule.min_tokens_per_s:g} tokens/s in "
                    f"{slow} of its last {measured} measured requests "
                    f"(latest {rate:.1f} tokens/s)",
                )

    def expire(self) -> None:
        """Lift the parks whose cool-down is over (the hub calls it every second)."""
        self._claims.expire(HoldKind.PARKED, self.settings.cool_down_s)
