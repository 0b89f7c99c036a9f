"""Fair queueing: deficit round robin per user within a model's queue, priorities as quanta, a bounded
share per user, positions and expected waits; and outlier ejection."""

from __future__ import annotations

import pytest

from potluck._shared.clock import ManualClock
from potluck.hub.fairqueue import FairQueue
from potluck.hub.scheduler import EjectionSettings, QueueFullError, QueueShareError, Scheduler, Want


def make(**kwargs: object) -> tuple[Scheduler, ManualClock]:
    clock = ManualClock(100.0)
    options: dict[str, object] = {"max_queue": 64, "queue_timeout": 60.0, **kwargs}
    return Scheduler(clock, **options), clock  # type: ignore[arg-type]


def wanted(user: str, weight: int = 1, model: str = "m") -> Want:
    return Want((model,), requester=user, weight=weight)


def drain_order(s: Scheduler, agent: str, count: int) -> list[str]:
    """Free one slot at a time on ``agent`` and say whose request got it."""
    order = []
    for _ in range(count):
        (grant,) = s.release(agent)
        order.append(grant.ticket.want.requester or "")
    return order


def test_a_flooding_user_does_not_starve_the_others() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 1)
    s.acquire("m")
    for _ in range(20):
        s.enqueue(wanted("noisy"))
    s.enqueue(wanted("alice"))
    s.enqueue(wanted("bob"))
    # FIFO would serve 20 noisy requests first; round robin serves alice and bob within 3 turns.
    assert drain_order(s, "a", 4) == ["noisy", "alice", "bob", "noisy"]


def test_priority_is_the_users_quantum() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 1)
    s.acquire("m")
    for _ in range(6):
        s.enqueue(wanted("gold", weight=2))
        s.enqueue(wanted("basic"))
    assert drain_order(s, "a", 6) == ["gold", "gold", "basic", "gold", "gold", "basic"]


def test_a_user_may_hold_only_its_share_of_the_queue() -> None:
    s, _ = make(max_queue=8, user_share=0.5)
    for _ in range(4):
        s.enqueue(wanted("noisy"))
    with pytest.raises(QueueShareError):
        s.enqueue(wanted("noisy"))
    for _ in range(4):
        s.enqueue(wanted("alice"))  # others still have room
    with pytest.raises(QueueFullError):
        s.enqueue(wanted("bob"))


def test_requests_another_replica_placed_here_are_not_held_to_one_users_share() -> None:
    """Another replica bounds them by its own count of the agent's slots; the queue's bound still holds."""
    s, _ = make(max_queue=4, user_share=0.5)
    s.upsert_agent("x", ["m"], 1)
    forwarded = Want(("m",), requester="replica:a", pinned="x")
    for _ in range(4):
        s.enqueue(forwarded)
    with pytest.raises(QueueFullError):
        s.enqueue(forwarded)


def test_agent_takes_work_from_the_queue_with_the_oldest_head_first() -> None:
    s, clock = make()
    s.upsert_agent("a", ["m1", "m2"], 1)
    s.acquire("m1")
    first = s.enqueue(wanted("u", model="m2"))
    clock.advance(1)
    s.enqueue(wanted("v", model="m1"))
    (grant,) = s.release("a")
    assert grant.ticket is first
    assert grant.placement.model == "m2"


def test_users_whose_requests_the_agent_cannot_serve_keep_their_turn() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 1, groups=frozenset({"g1"}))
    s.acquire("m")
    s.enqueue(Want(("m",), groups=frozenset({"g2"}), requester="outsider"))
    s.enqueue(wanted("alice"))
    (grant,) = s.release("a")
    assert grant.ticket.want.requester == "alice"
    assert s.queue_depth == 1  # the outsider waits for an agent of its group


def test_position_and_expected_wait_follow_round_robin_and_service_time() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 2)
    s.acquire("m")
    s.acquire("m")
    s.report("a", "m", ok=True, duration=4.0)
    noisy = [s.enqueue(wanted("noisy")) for _ in range(5)]
    alice = s.enqueue(wanted("alice"))
    assert s.position(noisy[0]) == (1, 2.0)  # next; 1 x 4 s / 2 slots
    assert s.position(alice)[0] == 2  # behind one noisy request, not five
    assert s.position(noisy[4])[0] == 6


def test_cancelled_and_expired_tickets_leave_the_queue() -> None:
    s, clock = make(queue_timeout=5.0)
    s.upsert_agent("a", ["m"], 1)
    s.acquire("m")
    gone = s.enqueue(wanted("u"))
    stale = s.enqueue(wanted("v"))
    s.cancel(gone)
    clock.advance(6)
    assert s.expire() == [stale]
    assert s.queue_depth == 0
    assert s.release("a") == []


# -- outlier ejection -------------------------------------------------------------------------------


def ejection_fleet(agents: int = 2) -> tuple[Scheduler, ManualClock]:
    s, clock = make(ejection=EjectionSettings(failures=5, base_s=30.0, max_s=300.0, max_percent=50.0))
    for i in range(agents):
        s.upsert_agent(f"a{i}", ["m"], 4, hot=["m"])
    return s, clock


def test_five_consecutive_failures_eject_an_agent_for_that_model_with_backoff() -> None:
    s, clock = ejection_fleet()
    for _ in range(4):
        s.report("a0", "m", ok=False)
    assert s.routable("m", exclude=frozenset({"a1"}))
    s.report("a0", "m", ok=False)
    assert not s.routable("m", exclude=frozenset({"a1"}))
    assert s.ejected() == [("a0", "m", 130.0)]
    assert [s.acquire("m") for _ in range(3)] == ["a1"] * 3
    clock.advance(30.1)
    assert s.routable("m", exclude=frozenset({"a1"}))  # back after the base time
    for _ in range(5):
        s.report("a0", "m", ok=False)
    clock.advance(30.1)
    assert not s.routable("m", exclude=frozenset({"a1"}))  # the second ejection lasts 60 s
    clock.advance(30)
    assert s.routable("m", exclude=frozenset({"a1"}))


def test_a_success_resets_the_consecutive_count() -> None:
    s, _ = ejection_fleet()
    for _ in range(4):
        s.report("a0", "m", ok=False)
    s.report("a0", "m", ok=True)
    for _ in range(4):
        s.report("a0", "m", ok=False)
    assert s.routable("m", exclude=frozenset({"a1"}))


def test_client_errors_and_cancellations_never_count() -> None:
    s, _ = ejection_fleet()
    for _ in range(10):
        s.report("a0", "m", ok=None)
    assert s.routable("m", exclude=frozenset({"a1"}))
    assert s.stats("a0", "m") is None


def test_never_more_than_half_of_a_models_agents_are_ejected() -> None:
    s, _ = ejection_fleet(agents=3)
    for agent in ("a0", "a1", "a2"):
        for _ in range(5):
            s.report(agent, "m", ok=False)
    ejected = [a for a in ("a0", "a1", "a2") if not s.routable("m", exclude=frozenset({"a0", "a1", "a2"} - {a}))]
    assert ejected == ["a0"]  # floor(3 x 50 %) = 1


def test_a_lone_agent_is_never_ejected() -> None:
    s, _ = ejection_fleet(agents=1)
    for _ in range(20):
        s.report("a0", "m", ok=False)
    assert s.acquire("m") == "a0"


def test_ejection_is_per_model() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m", "n"], 4)
    s.upsert_agent("b", ["m", "n"], 4)
    for _ in range(5):
        s.report("a", "m", ok=False)
    assert not s.routable("m", exclude=frozenset({"b"}))
    assert s.routable("n", exclude=frozenset({"b"}))


def test_in_turns_lists_each_users_oldest_request_before_anyones_second() -> None:
    s, clock = make()
    noisy = [s.enqueue(wanted("noisy")) for _ in range(3)]
    clock.advance(1)
    alice = [s.enqueue(wanted("alice")) for _ in range(2)]
    queue = FairQueue(64, 1.0)
    for ticket in [*noisy, *alice]:
        queue.push(ticket)
    assert queue.in_turns() == [noisy[0], alice[0], noisy[1], alice[1], noisy[2]]


def test_waiting_requests_are_counted_per_model_that_could_serve_them() -> None:
    s, _ = make()
    s.enqueue(Want(("a",), requester="u1"))
    s.enqueue(Want(("a",), requester="u2"))
    s.enqueue(Want(("a", "b"), requester="u3"), queue="alias")  # a name either model can serve

    assert s.queued_by_model() == {"a": 3, "b": 1}
    assert s.queued_by_model() == {m: s.queued(m) for m in ("a", "b")}
