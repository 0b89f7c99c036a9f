"""The pure scheduler: which agent gets a request, and who waits in what order."""

from __future__ import annotations

import pytest

from potluck._shared.clock import ManualClock
from potluck.hub.scheduler import AgentSlots, QueueFullError, Scheduler, Want


def slots(s: Scheduler, agent_id: str) -> AgentSlots:
    agent = s.agent(agent_id)
    assert agent is not None
    return agent


def make(max_queue: int = 8, queue_timeout: float = 10.0) -> tuple[Scheduler, ManualClock]:
    clock = ManualClock(100.0)
    return Scheduler(clock, max_queue=max_queue, queue_timeout=queue_timeout, user_share=1.0), clock


# -- picking an agent -----------------------------------------------------------------------------


def test_acquire_only_picks_agents_serving_the_model() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m1"], 4)
    s.upsert_agent("b", ["m2"], 4)
    assert {s.acquire("m2") for _ in range(4)} == {"b"}
    assert s.acquire("m2") is None
    assert s.acquire("other") is None


def test_acquire_skips_draining_agents() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 4, draining=True)
    s.upsert_agent("b", ["m"], 4)
    assert [s.acquire("m") for _ in range(4)] == ["b"] * 4
    assert s.acquire("m") is None
    assert slots(s, "a").in_flight == 0


def test_draining_only_agent_still_counts_as_serving_the_model() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 4, draining=True)
    assert s.serves("m")
    assert s.acquire("m") is None


def test_model_is_routable_only_while_some_agent_is_not_draining() -> None:
    s, _ = make()
    assert not s.routable("m")
    s.upsert_agent("a", ["m"], 1, draining=True)
    assert not s.routable("m")
    s.upsert_agent("b", ["m"], 1)
    s.acquire("m")
    assert s.routable("m")  # busy is still routable
    s.set_draining("b", True)
    assert not s.routable("m")


def test_acquire_picks_least_loaded_agent_by_ratio() -> None:
    s, _ = make()
    s.upsert_agent("small", ["m"], 2)
    s.upsert_agent("big", ["m"], 10)
    # small: 1/2 after one; big takes requests until its ratio reaches 0.5.
    picks = [s.acquire("m") for _ in range(12)]
    assert picks.count("small") == 2
    assert picks.count("big") == 10
    assert s.acquire("m") is None


def test_acquire_prefers_the_idle_agent_over_a_busy_one() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 4)
    s.upsert_agent("b", ["m"], 4)
    assert s.acquire("m") == "a"
    assert s.acquire("m") == "b"
    s.release("b")
    assert s.acquire("m") == "b"


def test_ties_are_broken_round_robin() -> None:
    s, _ = make()
    for name in ("a", "b", "c"):
        s.upsert_agent(name, ["m"], 1)
    picks = []
    for _ in range(6):
        agent = s.acquire("m")
        assert agent is not None
        picks.append(agent)
        s.release(agent)
    assert picks == ["a", "b", "c", "a", "b", "c"]


def test_capacity_is_never_exceeded() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 2)
    s.upsert_agent("b", ["m"], 3)
    picks = [s.acquire("m") for _ in range(10)]
    assert picks.count("a") == 2
    assert picks.count("b") == 3
    assert picks.count(None) == 5
    assert slots(s, "a").in_flight == 2
    assert slots(s, "b").in_flight == 3


def test_max_concurrency_below_one_is_treated_as_one() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 0)
    assert s.acquire("m") == "a"
    assert s.acquire("m") is None


def test_excluded_agents_are_not_picked() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 4)
    s.upsert_agent("b", ["m"], 4)
    assert {s.acquire("m", frozenset({"a"})) for _ in range(4)} == {"b"}
    assert s.acquire("m", frozenset({"a"})) is None
    assert s.acquire("m", frozenset({"a", "b"})) is None
    assert slots(s, "a").in_flight == 0


# -- the queue ------------------------------------------------------------------------------------


def test_queue_is_bounded() -> None:
    s, _ = make(max_queue=2)
    s.upsert_agent("a", ["m"], 1)
    s.enqueue(Want(("m",)))
    s.enqueue(Want(("m",)))
    with pytest.raises(QueueFullError):
        s.enqueue(Want(("m",)))
    assert s.queue_depth == 2


def test_ticket_deadline_is_enqueue_time_plus_queue_timeout() -> None:
    s, clock = make(queue_timeout=7.5)
    ticket = s.enqueue(Want(("m",)))
    assert ticket.enqueued_at == clock.now()
    assert ticket.deadline == clock.now() + 7.5
    assert not ticket.done
    assert ticket.agent_id is None


def test_release_grants_oldest_waiting_ticket() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 1)
    assert s.acquire("m") == "a"
    first, second, third = s.enqueue(Want(("m",))), s.enqueue(Want(("m",))), s.enqueue(Want(("m",)))

    grants = s.release("a")

    assert [g.ticket for g in grants] == [first]
    assert grants[0].agent_id == "a"
    assert first.done
    assert first.agent_id == "a"
    assert slots(s, "a").in_flight == 1
    assert s.queue_depth == 2
    assert [g.ticket for g in s.release("a")] == [second]
    assert [g.ticket for g in s.release("a")] == [third]
    assert s.release("a") == []
    assert slots(s, "a").in_flight == 0


def test_release_skips_tickets_the_agent_cannot_serve() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m1"], 1)
    s.upsert_agent("b", ["m2"], 1)
    s.acquire("m1")
    s.acquire("m2")
    wants_m2 = s.enqueue(Want(("m2",)))
    excludes_a = s.enqueue(Want(("m1",), frozenset({"a"})))
    wants_m1 = s.enqueue(Want(("m1",)))

    grants = s.release("a")

    assert [g.ticket for g in grants] == [wants_m1]
    assert not wants_m2.done
    assert not excludes_a.done
    assert s.queue_depth == 2


def test_release_grants_as_many_tickets_as_freed_capacity() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 2)
    s.acquire("m")
    s.acquire("m")
    t1, t2 = s.enqueue(Want(("m",))), s.enqueue(Want(("m",)))
    s.upsert_agent("a", ["m"], 4)  # capacity grows: both waiters fit now
    assert t1.done
    assert t2.done
    assert slots(s, "a").in_flight == 4


def test_release_of_unknown_agent_is_a_no_op() -> None:
    s, _ = make()
    assert s.release("ghost") == []


def test_release_never_drives_in_flight_negative() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 1)
    s.release("a")
    s.release("a")
    assert slots(s, "a").in_flight == 0
    assert s.acquire("m") == "a"
    assert s.acquire("m") is None


def test_new_agent_grants_queued_tickets_in_fifo_order() -> None:
    s, _ = make()
    t1, t2, t3 = s.enqueue(Want(("m",))), s.enqueue(Want(("other",))), s.enqueue(Want(("m",)))

    grants = s.upsert_agent("a", ["m"], 1)

    assert [g.ticket for g in grants] == [t1]
    grants = s.upsert_agent("b", ["m", "other"], 5)
    assert [g.ticket for g in grants] == [t2, t3]
    assert {g.agent_id for g in grants} == {"b"}
    assert s.queue_depth == 0


def test_agent_gaining_a_model_grants_its_waiters() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m1"], 2)
    ticket = s.enqueue(Want(("m2",)))
    assert s.upsert_agent("a", ["m1", "m2"], 2)[0].ticket is ticket
    assert s.serves("m2")


def test_agent_losing_a_model_is_no_longer_picked_for_it() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m1", "m2"], 2)
    s.upsert_agent("a", ["m1"], 2)
    assert not s.serves("m2")
    assert s.acquire("m2") is None
    assert s.models() == {"m1": 1}


def test_draining_agent_receives_no_queued_work() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 1)
    s.acquire("m")
    ticket = s.enqueue(Want(("m",)))
    assert s.set_draining("a", True) == []
    assert s.release("a") == []
    assert not ticket.done
    assert slots(s, "a").in_flight == 0
    grants = s.set_draining("a", False)
    assert [g.ticket for g in grants] == [ticket]


def test_new_draining_agent_receives_no_queued_work() -> None:
    s, _ = make()
    ticket = s.enqueue(Want(("m",)))
    assert s.upsert_agent("a", ["m"], 4, draining=True) == []
    assert not ticket.done
    assert s.upsert_agent("a", ["m"], 4, draining=False)[0].ticket is ticket


def test_upsert_without_draining_keeps_the_draining_flag() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 4, draining=True)
    s.upsert_agent("a", ["m"], 8)
    assert slots(s, "a").draining
    assert s.acquire("m") is None


def test_expire_removes_only_tickets_past_their_deadline() -> None:
    s, clock = make(queue_timeout=10.0)
    old = s.enqueue(Want(("m",)))
    clock.advance(5)
    young = s.enqueue(Want(("m",)))
    clock.advance(4.9)
    assert s.expire() == []
    clock.advance(0.1)

    assert s.expire() == [old]

    assert old.done
    assert not young.done
    assert s.queue_depth == 1


def test_expired_ticket_is_not_granted_a_slot() -> None:
    s, clock = make(queue_timeout=10.0)
    s.upsert_agent("a", ["m"], 1)
    s.acquire("m")
    stale = s.enqueue(Want(("m",)))
    clock.advance(10)
    assert s.release("a") == []
    assert not stale.done
    assert slots(s, "a").in_flight == 0


def test_cancel_withdraws_a_waiting_ticket() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 1)
    s.acquire("m")
    gone, waiting = s.enqueue(Want(("m",))), s.enqueue(Want(("m",)))

    s.cancel(gone)

    assert gone.done
    assert s.queue_depth == 1
    assert [g.ticket for g in s.release("a")] == [waiting]


def test_cancel_of_a_granted_ticket_changes_nothing() -> None:
    s, _ = make()
    ticket = s.enqueue(Want(("m",)))
    s.upsert_agent("a", ["m"], 1)
    assert ticket.done
    s.cancel(ticket)
    s.cancel(ticket)
    assert slots(s, "a").in_flight == 1
    assert s.queue_depth == 0


def test_remove_agent_forgets_it_and_its_models() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m", "n"], 2)
    s.upsert_agent("b", ["m"], 2)
    s.remove_agent("a")
    assert s.agent("a") is None
    assert not s.serves("n")
    assert s.models() == {"m": 1}
    assert [s.acquire("m") for _ in range(2)] == ["b", "b"]
    assert s.release("a") == []
    s.remove_agent("a")  # twice is harmless


def test_expected_wait_grows_with_queue_and_is_at_least_one_second() -> None:
    s, _ = make(max_queue=4, queue_timeout=40.0)
    assert s.expected_wait() == 1.0
    s.enqueue(Want(("m",)))
    s.enqueue(Want(("m",)))
    assert s.expected_wait() == 20.0


def test_an_agent_with_the_model_hot_is_chosen_over_less_loaded_cold_ones() -> None:
    scheduler = Scheduler(ManualClock())
    scheduler.upsert_agent("cold-idle", ["m"], 4, hot=[])
    scheduler.upsert_agent("hot-busy", ["m"], 4, hot=["m"])
    assert scheduler.acquire("m") == "hot-busy"
    assert scheduler.acquire("m") == "hot-busy"  # 2 of 4 busy still beats an idle cold agent
    scheduler.upsert_agent("hot-busy", ["m"], 4, hot=[])  # unloaded: now both cold, least loaded wins
    assert scheduler.acquire("m") == "cold-idle"


def test_requests_reach_only_agents_sharing_a_group_with_them() -> None:
    scheduler = Scheduler(ManualClock())
    scheduler.upsert_agent("a", ["m"], 1, groups=frozenset({"g1"}))
    scheduler.upsert_agent("b", ["m"], 1, groups=frozenset({"g2"}))
    assert scheduler.serves("m", frozenset({"g3"})) is False
    assert scheduler.acquire("m", groups=frozenset({"g2"})) == "b"
    assert scheduler.acquire("m", groups=frozenset({"g2"})) is None  # b is full; a is not reachable
    ticket = scheduler.enqueue(Want(("m",), groups=frozenset({"g2"})))
    assert scheduler.acquire("m", groups=frozenset({"g1"})) == "a"
    assert scheduler.release("a") == []  # a's free slot is not for g2's queued request
    grants = scheduler.release("b")
    assert [(g.ticket, g.agent_id) for g in grants] == [(ticket, "b")]
    assert scheduler.routable("m", groups=frozenset({"g1", "g9"})) is True
