"""Prometheus collectors for the hub, created on an injected registry (never the global one).

What every request counts (its outcome, tokens and time to first byte) is kept in plain numbers by
`HubMetrics.request_done`, one call, and turned into metric families only when /metrics is scraped:
prometheus_client's own counters take a lock and several calls per update, about 4 µs a request. The
event loop is the only writer and the scrape runs on it too, so no lock is needed. Gauges of live state
(agents, queue, in flight) are set when /metrics is scraped, not per request.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class HubMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.outcomes: dict[str, int] = {}
        """Requests done, by outcome (`potluck_hub_requests_total`)."""
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.ttft_counts = [0] * (len(TTFT_BUCKETS) + 1)
        """Requests by time to first byte: one count per bucket of `TTFT_BUCKETS`, then the rest (not cumulative)."""
        self.ttft_sum = 0.0
        self.retries = Counter(
            "potluck_hub_retries_total", "Requests sent again to another agent before any byte", registry=registry
        )
        self.retries_over_budget = Counter(
            "potluck_hub_retries_over_budget_total",
            "Retries not made because retries in progress were at the retry budget",
            registry=registry,
        )
        self.link_waits = Counter(
            "potluck_hub_peer_link_waits_total",
            "Requests that waited for a peer link to another replica to come back (cluster mode)",
            registry=registry,
        )
        self.ledger_dropped = Counter(
            "potluck_hub_ledger_dropped_total",
            "Ledger transactions dropped because the database can never store them",
            registry=registry,
        )
        self.usage_dropped = Counter(
            "potluck_hub_usage_dropped_total",
            "Usage records dropped because the usage journal was full (the database far behind or away)",
            registry=registry,
        )
        self.ejected = Gauge(
            "potluck_hub_agents_ejected", "Agent-model pairs ejected after consecutive failures", registry=registry
        )
        self.agents = Gauge("potluck_hub_agents_connected", "Connected agents", registry=registry)
        self.queue_depth = Gauge("potluck_hub_queue_depth", "Requests waiting for a slot", registry=registry)
        self.in_flight = Gauge("potluck_hub_requests_in_flight", "Requests being relayed", registry=registry)

        self.stream_resets: Callable[[], int] = lambda: 0
        """Where `potluck_hub_stream_resets_total` is read from when scraped (the registry's count)."""
        registry.register(_Read(self))

    def request_done(self, outcome: str, prompt_tokens: int, completion_tokens: int, ttft: float | None) -> None:
        """Count a finished request: its outcome, the tokens it was billed for, its time to first byte if any."""
        outcomes = self.outcomes
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        if ttft is not None:
            self.ttft_counts[bisect_left(TTFT_BUCKETS, ttft)] += 1
            self.ttft_sum += ttft


class _Read(Collector):
    """The per-request counts, and counters the hub keeps elsewhere, read when /metrics is scraped."""

    def __init__(self, metrics: HubMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        requests = CounterMetricFamily("potluck_hub_requests", "Client requests by outcome", labels=["outcome"])
        for outcome, count in metrics.outcomes.items():
            requests.add_metric([str(outcome)], count)
        yield requests
        tokens = CounterMetricFamily("potluck_hub_tokens", "Tokens relayed", labels=["kind"])
        tokens.add_metric(["prompt"], metrics.prompt_tokens)
        tokens.add_metric(["completion"], metrics.completion_tokens)
        yield tokens
        cumulative, buckets = 0, []
        for bound, count in zip((*map(repr, TTFT_BUCKETS), "+Inf"), metrics.ttft_counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            "potluck_hub_ttft_seconds",
            "Time from request arrival to the first byte sent to the client",
            buckets=buckets,
            sum_value=metrics.ttft_sum,
        )
        yield CounterMetricFamily(
            "potluck_hub_stream_resets",
            "Streams reset because their agent broke the protocol on them (sent past its credit window)",
            value=metrics.stream_resets(),
        )
