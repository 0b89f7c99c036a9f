"""What the scheduler learns from finished requests and completed loads, and outlier ejection.

Per agent and model: TTFT and prefill speed (seconds per 1,000 prompt tokens) from requests that found the
model hot, decode rate, request duration, success; per model: request duration (for expected waits);
per agent: weight-loading speed, from the loads the scheduler started. Pure: no I/O, times come in.

**Outlier ejection** (as Envoy does it): ``failures`` consecutive local-origin failures (connection
errors, timeouts, 5xx) eject an agent for that model for ``base_s`` x 2^(ejections - 1), capped at
``max_s``; never more than ``max_percent`` of a model's agents at once; client errors never count.
"""

from __future__ import annotations

import math

from potluck.hub.scoring import (
    DEFAULT_SERVICE_S,
    EWMA_ALPHA,
    PROMPT_FLOOR_TOKENS,
    RELIABILITY_ALPHA,
    AgentSlots,
    EjectionSettings,
    Load,
    ModelStats,
)


class Learning:
    def __init__(self, ejection: EjectionSettings) -> None:
        self.ejection = ejection
        self.stats: dict[tuple[str, str], ModelStats] = {}
        self._service: dict[str, float] = {}
        """Model -> EWMA of the duration of requests that found it hot, in seconds."""

    def ejected_now(self, agent_id: str, model: str, now: float) -> bool:
        stats = self.stats.get((agent_id, model))
        return stats is not None and stats.ejected_until > now

    def ejected(self, now: float) -> list[tuple[str, str, float]]:
        return [(a, m, s.ejected_until) for (a, m), s in self.stats.items() if s.ejected_until > now]

    def service_s(self, model: str, agent_id: str | None = None) -> float:
        """Expected seconds a hot request for ``model`` holds a slot (on ``agent_id`` when it has served it)."""
        if agent_id is not None:
            stats = self.stats.get((agent_id, model))
            if stats is not None and stats.service is not None:
                return stats.service
        return self._service.get(model, DEFAULT_SERVICE_S)

    def report(
        self,
        agent_id: str,
        model: str,
        now: float,
        *,
        ok: bool,
        hot: bool,
        ttft: float | None,
        decode_rate: float | None,
        duration: float | None,
        prompt_tokens: int | None,
        listing: list[str],
    ) -> None:
        """``listing``: the agents listing ``model`` (at most ``max_percent`` of them may be ejected at once)."""
        stats = self.stats.get((agent_id, model))
        if stats is None:
            stats = self.stats[(agent_id, model)] = ModelStats()
        stats.reliability += RELIABILITY_ALPHA * ((1.0 if ok else 0.0) - stats.reliability)
        if not ok:
            self._failed(stats, model, now, listing)
            return
        stats.failures = 0
        if stats.ejections and now > stats.ejected_until + self.ejection.max_s:
            stats.ejections = 0  # healthy for a long while: the next ejection starts short again
        if decode_rate is not None and decode_rate > 0:
            stats.decode = ewma(stats.decode, decode_rate)
        if not hot:
            return  # a cold request's duration and TTFT are mostly the load (learnt when the model turns hot)
        if duration is not None:
            self._service[model] = ewma(self._service.get(model), duration)
            stats.service = ewma(stats.service, duration)
        if ttft is not None:
            stats.ttft = ewma(stats.ttft, ttft)
            if prompt_tokens:  # 0: the usage did not say
                stats.prefill = ewma(stats.prefill, 1000.0 * ttft / max(PROMPT_FLOOR_TOKENS, prompt_tokens))

    def loaded(self, agent: AgentSlots, model: str, load: Load, now: float) -> None:
        """The agent reports hot a model whose load the scheduler started: learn its weight-loading speed."""
        size = agent.sizes.get(model)
        elapsed = now - load.started
        if size and elapsed > 0:
            agent.load_rate = ewma(agent.load_rate, size / elapsed)

    def _failed(self, stats: ModelStats, model: str, now: float, listing: list[str]) -> None:
        stats.failures += 1
        if (
            stats.failures >= self.ejection.failures
            and stats.ejected_until <= now
            and self._may_eject(model, now, listing)
        ):
            stats.ejections += 1
            backoff = self.ejection.base_s * 2 ** (stats.ejections - 1)
            stats.ejected_until = now + min(self.ejection.max_s, backoff)
            stats.failures = 0

    def _may_eject(self, model: str, now: float, listing: list[str]) -> bool:
        ejected = sum(1 for agent_id in listing if self.ejected_now(agent_id, model, now))
        return ejected + 1 <= math.floor(len(listing) * self.ejection.max_percent / 100)


def ewma(previous: float | None, sample: float) -> float:
    return sample if previous is None else previous + EWMA_ALPHA * (sample - previous)
