"""Prometheus collectors for the hub, created on an injected registry (never the global one)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

# Gauges of live state (agents, queue, in flight) are set when /metrics is scraped, not per request.


class HubMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "potluck_hub_requests_total", "Client requests by outcome", ["outcome"], registry=registry
        )
        self.tokens = Counter("potluck_hub_tokens_total", "Tokens relayed", ["kind"], registry=registry)
        self.prompt_tokens = self.tokens.labels("prompt")
        self.completion_tokens = self.tokens.labels("completion")
        self._outcomes: dict[str, Counter] = {}
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
        self.ttft = Histogram(
            "potluck_hub_ttft_seconds",
            "Time from request arrival to the first byte sent to the client",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )

        self.stream_resets: Callable[[], int] = lambda: 0
        """Where `potluck_hub_stream_resets_total` is read from when scraped (the registry's count)."""
        registry.register(_Read(self))

    def request_outcome(self, outcome: str) -> Counter:
        """The labelled child for this outcome, cached (``labels()`` costs a lock and a lookup)."""
        child = self._outcomes.get(outcome)
        if child is None:
            child = self._outcomes[outcome] = self.requests.labels(outcome)
        return child


class _Read(Collector):
    """Counters the hub keeps elsewhere and never touches per request, read when /metrics is scraped."""

    def __init__(self, metrics: HubMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "potluck_hub_stream_resets",
            "Streams reset because their agent broke the protocol on them (sent past its credit window)",
            value=self._metrics.stream_resets(),
        )
