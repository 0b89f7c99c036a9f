"""The dashboards' fan-out: who sees which finished request, feed event and badge; one rendering per item
whatever the number of pages; and a page that never reads costs a bounded queue, never more."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import pytest

from potluck._shared.clock import ManualClock
from potluck.hub.access import AccessMap
from potluck.hub.observe import Observer
from potluck.hub.observe_fleet import FleetEvent, FleetWatch
from potluck.hub.observe_stream import (
    MAX_ROWS_PER_TICK,
    QUIET_TICKS,
    SCAN_EVERY,
    SLOTS,
    Dashboards,
    RowView,
    Scope,
    Subscriber,
    Viewer,
    scope_of,
)
from potluck.hub.scoring import Want
from potluck.store.usage import UsageRecord
from testing.memory_channel import HubCore
from tests.hub.test_observe import record

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class Recorder:
    """A renderer that says what it rendered, and counts how often."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.now_text = "0"
        self.taken = 0

    def now(self, scope: Scope) -> tuple[bytes, bytes]:
        self.calls["now"] += 1
        self.taken += 1  # the time a snapshot was taken is not one of its figures
        return self.now_text.encode(), f"now {scope.viewer.user_id} {self.now_text} at {self.taken}".encode()

    def request(self, record: UsageRecord, view: RowView) -> bytes:
        self.calls["request"] += 1
        return f"request {record.request_id} {view.value}".encode()

    def event(self, event: FleetEvent) -> bytes:
        self.calls["event"] += 1
        return f"event {event.kind.value} {event.agent_id}".encode()

    def agent(self, agent_id: str) -> bytes:
        self.calls["agent"] += 1
        return f"agent {agent_id}".encode()


def access() -> AccessMap:
    access = AccessMap("root", "grp_default")
    access.admins = {"root"}
    access.user_groups = {"alice": {"grp_1"}, "olga": {"grp_1"}, "mallory": {"grp_2"}, "root": {"grp_default"}}
    access.agent_owner = {"a": "olga", "b": "mallory"}
    access.agent_groups = {"a": {"grp_1"}, "b": {"grp_2"}}
    return access


def setup() -> tuple[HubCore, Observer, Dashboards, Recorder]:
    core = HubCore()
    observer = Observer(core.clock)
    dashboards = Dashboards(observer, FleetWatch(core.registry, core.clock), access(), admin=lambda u: u == "root")
    recorder = Recorder()
    dashboards.renderer = recorder
    return core, observer, dashboards, recorder


def tick_all(dashboards: Dashboards, ticks: int = SLOTS) -> None:
    """A second: every page has had its tick."""
    for _ in range(ticks):
        dashboards.tick()


def items(subscriber: Subscriber) -> list[str]:
    return [i.decode() for i in subscriber.take()[2]]


def test_each_viewer_gets_only_the_requests_it_may_see() -> None:
    _core, observer, dashboards, _recorder = setup()
    clock = ManualClock(epoch=EPOCH)
    alice, olga, mallory, root = (dashboards.subscribe(u) for u in ("alice", "olga", "mallory", "root"))
    observer.finished(record(1, clock, user_id="alice", owner_id="olga", agent_id="a"), 0.0)
    observer.finished(record(2, clock, user_id="mallory", owner_id="mallory", agent_id="b"), 0.0)

    tick_all(dashboards)

    assert items(alice) == ["request req_1 mine"]
    assert items(olga) == ["request req_1 served"]
    assert items(mallory) == ["request req_2 mine"]
    assert items(root) == ["request req_1 any", "request req_2 any"]


def test_agents_and_events_reach_only_those_who_see_the_agent() -> None:
    core, _observer, dashboards, _recorder = setup()
    alice, mallory = dashboards.subscribe("alice"), dashboards.subscribe("mallory")
    alice.take(), mallory.take()
    core.attach("a")

    tick_all(dashboards, SCAN_EVERY)  # a fleet scan

    _now, agents, events, _dropped = alice.take()
    assert [a.decode() for a in agents] == ["agent a"]
    assert [e.decode() for e in events] == ["event agent_online a"]
    assert mallory.take()[:3] == (None, [], [])


def test_a_hundred_pages_cost_one_rendering_per_item() -> None:
    core, observer, dashboards, recorder = setup()
    pages = [dashboards.subscribe("alice") for _ in range(100)]
    core.attach("a")
    observer.finished(record(1, ManualClock(epoch=EPOCH), user_id="alice", agent_id="a"), 0.0)
    recorder.calls.clear()

    tick_all(dashboards)

    assert recorder.calls == Counter(request=1, event=1, agent=1, now=1)
    assert all(len(page.take()[2]) == 2 for page in pages)


def test_now_is_sent_only_when_it_changed() -> None:
    _core, _observer, dashboards, recorder = setup()
    page = dashboards.subscribe("alice")
    assert page.take()[0] == b"now alice 0 at 1"  # the first one right away
    tick_all(dashboards)
    assert page.take()[0] is None  # taken again, but the same figures
    recorder.now_text = "1"
    tick_all(dashboards)
    assert page.take()[0] == b"now alice 1 at 3"


def test_a_page_that_never_reads_holds_a_bounded_queue() -> None:
    _core, observer, dashboards, _recorder = setup()
    clock = ManualClock(epoch=EPOCH)
    page = dashboards.subscribe("alice", max_items=10)
    for n in range(30):
        observer.finished(record(n, clock, user_id="alice"), 0.0)
        dashboards.tick()

    assert len(page.items) == 10
    assert page.dropped == 20
    _now, _agents, kept, dropped = page.take()
    assert [k.decode() for k in kept][-1] == "request req_29 mine"  # the newest are kept
    assert dropped == 20
    assert page.take()[3] == 0  # counted once


def test_more_rows_in_one_tick_than_a_page_takes_are_counted_as_dropped() -> None:
    _core, observer, dashboards, _recorder = setup()
    clock = ManualClock(epoch=EPOCH)
    page = dashboards.subscribe("alice")
    for n in range(MAX_ROWS_PER_TICK + 7):
        observer.finished(record(n, clock, user_id="alice"), 0.0)

    tick_all(dashboards)

    _now, _agents, kept, dropped = page.take()
    assert len(kept) == MAX_ROWS_PER_TICK
    assert dropped == 7


def test_a_closed_page_is_forgotten() -> None:
    _core, observer, dashboards, recorder = setup()
    page = dashboards.subscribe("alice")
    dashboards.unsubscribe(page)
    observer.finished(record(1, ManualClock(epoch=EPOCH), user_id="alice"), 0.0)
    recorder.calls.clear()
    tick_all(dashboards)
    assert recorder.calls == Counter()


def test_traffic_of_another_group_on_a_shared_agent_is_not_a_members_to_see() -> None:
    shared = access()
    shared.agent_groups["a"] = {"grp_1", "grp_2"}  # Olga's agent serves Mallory's group too
    scope = scope_of(Viewer("alice", admin=False), shared)
    assert scope.sees_agent("a")
    assert scope.sees_key(("a", "grp_1", "m"))
    assert not scope.sees_key(("a", "grp_2", "m"))
    assert not scope.sees_key(("b", "grp_2", "m"))
    assert scope.sees_key((None, "grp_1", "m"))  # refused before reaching an agent, through her group
    owner = scope_of(Viewer("olga", admin=False), shared)
    assert owner.sees_key(("a", "grp_2", "m"))  # all the traffic on her own machine


class Failing(Recorder):
    """Fails to render its first request."""

    def request(self, record: UsageRecord, view: RowView) -> bytes:
        if not self.calls["request"]:
            self.calls["request"] += 1
            raise ValueError("a bug")
        return super().request(record, view)


async def test_a_failing_tick_is_logged_and_the_hub_keeps_ticking(caplog: pytest.LogCaptureFixture) -> None:
    core = HubCore()
    observer = Observer(core.clock)
    dashboards = Dashboards(observer, FleetWatch(core.registry, core.clock), access(), admin=bool, tick_s=0.001)
    dashboards.renderer = Failing()
    page = dashboards.subscribe("alice")
    page.take()
    clock = ManualClock(epoch=EPOCH)
    observer.finished(record(1, clock, user_id="alice"), 0.0)
    runner = asyncio.create_task(dashboards.run())
    try:
        async with asyncio.timeout(2):
            while "a dashboard tick failed" not in caplog.text:
                await asyncio.sleep(0.001)
            observer.finished(record(2, clock, user_id="alice"), 0.0)
            while not page.items:
                await page.wait()
                if not page.items:
                    page.take()  # woken with nothing new (a keep-alive): wait again
    finally:
        runner.cancel()
    assert page.take()[2] == [b"request req_2 mine"]


def test_a_member_sees_the_waiting_requests_of_their_groups_and_their_own() -> None:
    scope = scope_of(Viewer("alice", admin=False), access())
    assert scope.sees_want(Want(("m",), groups=frozenset({"grp_1"}), requester="olga"))
    assert scope.sees_want(Want(("m",), groups=frozenset(), requester="alice"))
    assert not scope.sees_want(Want(("m",), groups=frozenset({"grp_2"}), requester="mallory"))
    assert scope_of(Viewer("root", admin=True), access()).sees_want(Want(("m",), requester="mallory"))


async def test_a_quiet_page_is_woken_for_a_keep_alive_and_a_busy_one_is_not() -> None:
    _core, observer, dashboards, _recorder = setup()
    quiet, busy = dashboards.subscribe("mallory"), dashboards.subscribe("alice")
    quiet.take(), busy.take()
    clock = ManualClock(epoch=EPOCH)
    for n in range(QUIET_TICKS - 1):
        observer.finished(record(n, clock, user_id="alice"), 0.0)
        dashboards.tick()
        busy.take()  # the busy page reads what it is given
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await quiet.wait()

    dashboards.tick()  # the quiet page has had nothing for QUIET_TICKS ticks: woken anyway

    async with asyncio.timeout(0.1):
        await quiet.wait()
    assert quiet.take() == (None, [], [], 0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await busy.wait()
