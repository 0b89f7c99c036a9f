"""The dashboard's in-memory numbers on a manual clock: minute buckets over 15 minutes, percentiles from the
log-scale histogram, the 24-hour sums, the bound on window keys, and the fleet watch's events."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from potluck._shared.clock import ManualClock
from potluck.hub.observe import BUCKETS, MAX_KEYS, Observer, bin_value, ttft_bin
from potluck.hub.observe_fleet import EventKind, FleetWatch
from potluck.hub.outcome import Outcome
from potluck.protocol.agent import LoadMessage, ModelInfo, ModelsMessage, StateMessage
from potluck.protocol.metrics import GpuMetrics, HostMetrics
from potluck.store.usage import UsageRecord
from testing.memory_channel import HubCore

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def record(n: int, clock: ManualClock, **fields: object) -> UsageRecord:
    values: dict[str, object] = {
        "key_id": "key_1",
        "agent_id": "agt_a",
        "model": "m",
        "path": "/v1/chat/completions",
        "outcome": Outcome.OK,
        "status": 200,
        "prompt_tokens": 10,
        "completion_tokens": 100,
        "queue_ms": 0,
        "ttft_ms": 200,
        "total_ms": 1200,
        "created_at": clock.wall(),
        "user_id": "alice",
        "group_id": "grp_1",
        "owner_id": "olga",
    }
    values.update(fields)
    return UsageRecord(request_id=f"req_{n}", **values)  # type: ignore[arg-type]


def everything(_key: object) -> bool:
    return True


def test_requests_land_in_their_minute_and_leave_after_fifteen() -> None:
    clock = ManualClock(epoch=EPOCH)
    observer = Observer(clock)
    observer.finished(record(1, clock), clock.now())
    clock.advance(60)
    observer.finished(record(2, clock, outcome=Outcome.AGENT_FAILED, completion_tokens=0, ttft_ms=None), clock.now())
    observer.finished(record(3, clock, outcome=Outcome.CLIENT_CANCELLED), clock.now())

    window = observer.window(everything)

    assert window.requests[-2:] == [1, 2]
    assert window.errors[-2:] == [0, 1]  # a client cancelling is not an error
    assert window.error_rate() == pytest.approx(1 / 3)
    assert window.completion_tokens[-2:] == [100, 100]
    # 200 completion tokens over the 60.0 s the hub has been up (bucket 13 fully, bucket 14 for 0 s).
    assert window.tokens_per_s() == pytest.approx(200 / 60)
    assert window.decode_tokens_per_s == pytest.approx(200 / 2.0)  # 100 tokens in 1000 ms, twice
    assert window.covered_s[:-2] == [0.0] * (BUCKETS - 2)  # before the hub started: nothing measured

    clock.advance(60 * BUCKETS)
    assert observer.window(everything).total_requests == 0


@pytest.mark.parametrize("ms", [1, 7, 95, 230, 1_000, 4_321, 60_000])
def test_a_percentile_read_from_the_histogram_is_within_ten_percent(ms: int) -> None:
    assert bin_value(ttft_bin(ms)) == pytest.approx(ms, rel=0.1)


def test_p50_and_p95_come_from_the_merged_histograms() -> None:
    clock = ManualClock(epoch=EPOCH)
    observer = Observer(clock)
    for n in range(100):
        observer.finished(record(n, clock, ttft_ms=100 if n < 90 else 2000), clock.now())
    window = observer.window(everything)
    assert window.ttft_percentile(0.5) == pytest.approx(100, rel=0.1)
    assert window.ttft_percentile(0.95) == pytest.approx(2000, rel=0.1)
    assert observer.window(lambda key: False).ttft_percentile(0.5) is None


def test_windows_are_summed_only_over_the_keys_a_viewer_sees() -> None:
    clock = ManualClock(epoch=EPOCH)
    observer = Observer(clock)
    observer.finished(record(1, clock, agent_id="agt_a", model="m"), clock.now())
    observer.finished(record(2, clock, agent_id="agt_b", model="m"), clock.now())
    observer.finished(record(3, clock, agent_id="agt_b", model="n"), clock.now())

    assert observer.window(lambda key: key[0] == "agt_a").total_requests == 1
    by_model = observer.by_model(lambda key: key[0] == "agt_b")
    assert {m: w.total_requests for m, w in by_model.items()} == {"m": 1, "n": 1}


def test_spent_and_earned_cover_the_last_24_hours() -> None:
    clock = ManualClock(epoch=EPOCH)
    observer = Observer(clock)
    observer.seed_day([(EPOCH - timedelta(hours=30), "alice", "olga", 1, 1), (EPOCH, "alice", "olga", 5, 4)])
    observer.finished(record(1, clock, charged=700, earned=630), clock.now())
    assert observer.spent_24h("alice") == 705  # the record of 30 hours ago is out
    assert observer.earned_24h("olga") == 634
    assert observer.spent_24h("olga") == 0

    clock.advance(24 * 3600)
    assert observer.spent_24h("alice") == 0


def test_endless_model_names_cannot_grow_the_windows() -> None:
    clock = ManualClock(epoch=EPOCH)
    observer = Observer(clock)
    for n in range(MAX_KEYS + 100):
        observer.finished(record(n, clock, agent_id=None, model=f"no-such-{n}"), clock.now())
    assert len(list(observer.keys())) == MAX_KEYS + 1  # and one catch-all for the rest
    assert observer.window(everything).total_requests == MAX_KEYS + 100


def gpu(util: float) -> HostMetrics:
    card = GpuMetrics(
        index=0,
        name="<script>alert(1)</script>",
        vendor="nvidia",
        utilization_pct=util,
        memory_used_bytes=1,
        memory_total_bytes=2,
    )
    return HostMetrics(cpu_pct=1.0, ram_used_bytes=1, ram_total_bytes=2, gpus=[card], source="nvml")


def test_the_fleet_watch_turns_changes_into_events_and_badges() -> None:
    core = HubCore()
    watch = FleetWatch(core.registry, core.clock)
    session, _ = core.attach("a", models=("m",))
    events, changed = watch.scan()
    assert [e.kind for e in events] == [EventKind.AGENT_ONLINE]
    assert changed == ["a"]
    assert watch.scan() == ([], [])  # nothing changed: nothing to say

    core.registry.on_state(session, StateMessage(in_flight=0, draining=True, max_concurrency=1))
    core.registry.on_models(session, ModelsMessage([ModelInfo("m", hot=False), ModelInfo("n")], []))
    core.registry.on_load(session, LoadMessage(in_flight=0, host=gpu(50.0), backends=[]))
    events, changed = watch.scan()
    assert {(e.kind, e.model) for e in events} == {
        (EventKind.AGENT_DRAINING, None),
        (EventKind.MODEL_UNLOADED, "m"),
        (EventKind.MODEL_LOADED, "n"),
    }
    assert changed == ["a"]
    track = watch.tracks["a"]
    assert track.load_at == core.clock.wall()
    assert track.hot == {"n"}

    core.registry.on_models(session, ModelsMessage([ModelInfo("n", hot=False)], []))
    events, _ = watch.scan()
    assert [(e.kind, e.model) for e in events] == [(EventKind.MODEL_UNLOADED, "n")]  # m is gone, not unloaded

    core.registry.detach(session)
    core.clock.advance(5)
    events, changed = watch.scan()
    assert [e.kind for e in events] == [EventKind.AGENT_OFFLINE]
    assert track.last_seen == core.clock.wall()

    core.attach("a", models=("m",))
    events, _ = watch.scan()
    assert [e.kind for e in events] == [EventKind.AGENT_ONLINE]
    assert track.reconnects == 1
    assert [e.id for e in watch.feed] == sorted(e.id for e in watch.feed)


def test_a_connection_replaced_between_scans_is_a_reconnect() -> None:
    core = HubCore()
    watch = FleetWatch(core.registry, core.clock)
    core.attach("a")
    watch.scan()
    core.attach("a")  # the registry closes the old connection and keeps the new one
    events, changed = watch.scan()
    assert [e.kind for e in events] == [EventKind.AGENT_RECONNECTED]
    assert changed == ["a"]
    assert dataclasses.replace(watch.tracks["a"]).reconnects == 1


def test_agents_serving_the_same_models_share_their_tracks_sets() -> None:
    """A fleet of thousands of like agents keeps a few sets, not four new ones per agent (about 1 KB each)."""
    core = HubCore()
    watch = FleetWatch(core.registry, core.clock)
    for agent_id in ("a", "b"):
        core.attach(agent_id, models=("m", "n"))
    watch.scan()
    a, b = watch.tracks["a"], watch.tracks["b"]
    assert a.models == {"m", "n"}
    assert (a.models is b.models, a.hot is b.hot, a.loading is b.loading, a.ejected is b.ejected) == (
        True,
        True,
        True,
        True,
    )


def test_a_user_nobody_looks_at_keeps_only_a_days_hours() -> None:
    clock = ManualClock(epoch=EPOCH)
    observer = Observer(clock)
    for n in range(24 * 10):
        observer.finished(record(n, clock, charged=1, earned=1), clock.now())
        clock.advance(3600)
    assert len(observer._spent["alice"]) <= 24
    assert observer.spent_24h("alice") == 23  # the current hour (none yet) and the 23 before it


def test_keys_with_nothing_in_the_window_make_room_for_new_ones() -> None:
    clock = ManualClock(epoch=EPOCH)
    observer = Observer(clock)
    for n in range(MAX_KEYS):
        observer.finished(record(n, clock, agent_id=None, model=f"no-such-{n}"), clock.now())
    clock.advance(60 * BUCKETS)
    observer.finished(record(0, clock, agent_id="agt_new", model="m"), clock.now())
    assert list(observer.keys()) == [("agt_new", "grp_1", "m")]
