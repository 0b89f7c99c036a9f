"""bench/relay.py (the `bench.relaybench` package): its scenario table, and its load generator against a real
fake backend."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest

from bench.relaybench.loadgen import LoadSpec, run_load
from bench.relaybench.results import RunResult, summarize
from bench.relaybench.scenarios import BURST_CHUNKS, MODEL, OPENAI_CHAT, Api, Kind, Scenario, build_request, select
from testing.fake_backend import FakeBackend

WINDOW_S = 0.3


def test_a_group_names_every_scenario_of_its_kind_in_the_tables_order() -> None:
    chosen = select(["paced", "nonstream-c64", "nonstream"], quick=True)
    assert [s.name for s in chosen] == ["nonstream-c1", "nonstream-c64", "nonstream-c256", "paced-c1000"]


def test_an_unknown_scenario_is_refused() -> None:
    with pytest.raises(SystemExit, match="unknown scenario 'nope'"):
        select(["nope"], quick=True)


def test_a_scenario_sends_its_apis_path_and_body() -> None:
    api = Api("/v1/messages", {"model": MODEL, "max_tokens": 8}, b"message_stop", end_event_is_chunk=True)
    request = build_request("127.0.0.1", 9, "key", Scenario("messages", Kind.STREAM, 1, api=api))
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/messages HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer key" in head
    assert f"\r\nContent-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"model": MODEL, "max_tokens": 8, "stream": True}


async def measure(url: str, scenario: Scenario) -> RunResult:
    """Drive ``scenario`` at ``url`` for a short window with the load generator's own entry point."""
    host, _, port = url.removeprefix("http://").partition(":")
    now = time.monotonic()
    start_at, measure_from = now + 0.05, now + 0.1
    measure_to = measure_from + WINDOW_S
    request = build_request(host, int(port), None, scenario)
    spec = LoadSpec(
        host, int(port), request, scenario.concurrency, start_at, measure_from, measure_to, measure_to + 5,
        stream_end=scenario.api.stream_end,
    )  # fmt: skip
    load = await asyncio.to_thread(run_load, spec)
    assert not load.crashes
    return summarize(scenario, "direct", [load], (measure_from, measure_to), {}, 0.0, 0.0)


async def test_the_load_generator_counts_whole_streams_and_their_chunks() -> None:
    with FakeBackend(chunks=BURST_CHUNKS).running() as url:
        result = await measure(url, Scenario("stream", Kind.STREAM, 2))
    assert result.completed > 0
    assert (result.failed, result.io_errors, result.unfinished) == (0, 0, 0)
    # 64 content chunks, the role's and the finish's: 66 events relayed per stream, [DONE] not counted.
    assert result.chunks == (BURST_CHUNKS + 2) * result.completed
    assert result.ttft_p50_ms is not None


async def test_a_stream_that_does_not_end_as_its_api_says_is_a_failure() -> None:
    api = dataclasses.replace(OPENAI_CHAT, stream_end=b"message_stop")
    with FakeBackend(chunks=4).running() as url:
        result = await measure(url, Scenario("stream", Kind.STREAM, 1, api=api))
    assert result.completed == 0
    assert result.failed > 0


async def test_the_load_generator_times_non_streaming_answers() -> None:
    with FakeBackend(chunks=BURST_CHUNKS).running() as url:
        result = await measure(url, Scenario("nonstream", Kind.NONSTREAM, 1))
    assert result.completed > 0
    assert result.failed == 0
    assert result.latency_p50_ms is not None
    assert result.chunks == 0
