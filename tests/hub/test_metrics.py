"""The per-request counts are plain numbers turned into Prometheus families when scraped."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from potluck.hub.metrics import HubMetrics
from potluck.hub.outcome import Outcome


def scrape(metrics: HubMetrics) -> list[str]:
    return [line for line in generate_latest(metrics.registry).decode().splitlines() if not line.startswith("#")]


def test_requests_tokens_and_time_to_first_byte_are_exposed_as_prometheus_counts() -> None:
    metrics = HubMetrics(CollectorRegistry())
    metrics.request_done(Outcome.OK, 3, 4, 0.005)  # on a bucket's bound: counted in that bucket (le)
    metrics.request_done(Outcome.OK, 10, 0, 0.2)
    metrics.request_done(Outcome.MODEL_NOT_FOUND, 0, 0, None)
    metrics.request_done(Outcome.TIMEOUT, 0, 0, 61.0)  # past the last bound: +Inf only
    lines = scrape(metrics)
    assert 'potluck_hub_requests_total{outcome="ok"} 2.0' in lines
    assert 'potluck_hub_requests_total{outcome="model_not_found"} 1.0' in lines
    assert 'potluck_hub_requests_total{outcome="timeout"} 1.0' in lines
    assert 'potluck_hub_tokens_total{kind="prompt"} 13.0' in lines
    assert 'potluck_hub_tokens_total{kind="completion"} 4.0' in lines
    buckets = [line for line in lines if line.startswith("potluck_hub_ttft_seconds_bucket")]
    assert buckets[0] == 'potluck_hub_ttft_seconds_bucket{le="0.005"} 1.0'
    assert 'potluck_hub_ttft_seconds_bucket{le="0.1"} 1.0' in buckets
    assert 'potluck_hub_ttft_seconds_bucket{le="0.25"} 2.0' in buckets
    assert buckets[-2:] == [
        'potluck_hub_ttft_seconds_bucket{le="60.0"} 2.0',
        'potluck_hub_ttft_seconds_bucket{le="+Inf"} 3.0',
    ]
    assert "potluck_hub_ttft_seconds_count 3.0" in lines
    assert "potluck_hub_ttft_seconds_sum 61.205" in lines


def test_an_idle_hub_exposes_zero_tokens_and_an_empty_histogram() -> None:
    lines = scrape(HubMetrics(CollectorRegistry()))
    assert not any(line.startswith("potluck_hub_requests_total") for line in lines)
    assert 'potluck_hub_tokens_total{kind="prompt"} 0.0' in lines
    assert 'potluck_hub_ttft_seconds_bucket{le="+Inf"} 0.0' in lines
    assert "potluck_hub_ttft_seconds_count 0.0" in lines
