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


def test_a_pinned_request_takes_a_slot_of_its_agent_only() -> None:
    """Another replica placed it on "busy" (cluster mode): it waits for that agent even with "idle" free."""
    s, _ = make()
    s.upsert_agent("busy", ["m"], 1)
    s.upsert_agent("idle", ["m"], 4)
    assert s.acquire("m", exclude=frozenset({"idle"})) == "busy"
    pinned = Want(("m",), requester="replica:a", pinned="busy")
    assert s.place(pinned) is None
    assert s.routable("m", pinned="busy")
    ticket = s.enqueue(pinned)
    assert s.release("idle") == []  # a slot elsewhere is not for it
    [grant] = s.release("busy")
    assert (grant.ticket, grant.placement.agent_id) == (ticket, "busy")


def test_a_pinned_request_leaves_access_to_the_replica_that_placed_it() -> None:
    """That replica checked the request's groups and the owner's rules; this one only counts the slots."""
    s, _ = make()
    s.upsert_agent("x", ["m"], 1, groups=frozenset({"g"}), owner_rules=(True, "owner", True, False))
    assert s.place(Want(("m",), groups=frozenset({"other"}), requester="someone")) is None
    placement = s.place(Want(("m",), requester="replica:a", pinned="x"))
    assert placement is not None
    assert placement.agent_id == "x"


def test_a_pinned_request_for_a_draining_agent_is_not_routable() -> None:
    s, _ = make()
    s.upsert_agent("x", ["m"], 1, draining=True)
    s.upsert_agent("y", ["m"], 1)
    assert s.routable("m")
    assert not s.routable("m", pinned="x")  # it would only wait out its queue timeout


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


# -- waiting for a hot slot -----------------------------------------------------------------------

GB = 1_000_000_000


def hot_and_cold(service_s: float, *, hot_models: tuple[str, ...] = ("m",)) -> tuple[Scheduler, ManualClock]:
    """'hot' has m loaded and one slot, busy; 'cold' would need 20 s to load m (20 GB at the default 1 GB/s)."""
    s, clock = make(queue_timeout=60.0)
    s.upsert_agent("hot", ["m"], 1, hot=hot_models)
    s.upsert_agent("cold", ["m"], 1, hot=[], sizes={"m": 20 * GB})
    s.report("hot", "m", ok=True, duration=service_s)
    if hot_models:
        assert s.acquire("m") == "hot"
    return s, clock


def test_a_request_waits_for_a_hot_slot_expected_sooner_than_a_cold_load() -> None:
    s, _ = hot_and_cold(service_s=2.0)
    assert s.place(Want(("m",))) is None  # a hot slot in ~2 s beats a 20 s load
    assert slots(s, "cold").in_flight == 0
    ticket = s.enqueue(Want(("m",)))
    (grant,) = s.release("hot")
    assert grant.ticket is ticket
    assert (grant.agent_id, grant.placement.hot) == ("hot", True)


def test_a_request_loads_cold_at_once_when_the_hot_slot_is_expected_later() -> None:
    s, _ = hot_and_cold(service_s=60.0)
    placement = s.place(Want(("m",)))
    assert placement is not None
    assert (placement.agent_id, placement.hot) == ("cold", False)


def test_a_request_loads_cold_at_once_when_no_agent_has_the_model_hot() -> None:
    s, _ = hot_and_cold(service_s=2.0, hot_models=())
    assert s.acquire("m") is not None


def test_a_queued_request_may_take_a_cold_slot_once_it_has_waited_as_long_as_the_load_takes() -> None:
    s, clock = hot_and_cold(service_s=2.0)
    ticket = s.enqueue(Want(("m",)))
    assert ticket.cold_after == ticket.enqueued_at + 20.0
    assert s.next_wakeup() == ticket.cold_after
    clock.advance(19.5)
    assert s.poll() == []  # the idle cold agent is not offered it yet
    clock.advance(0.5)
    (grant,) = s.poll()
    assert grant.ticket is ticket
    assert (grant.agent_id, grant.placement.hot) == ("cold", False)
    assert s.next_wakeup() is None


def test_a_request_hot_nowhere_may_take_a_cold_slot_at_once() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m1", "m2"], 1, hot=["m1"])
    assert s.acquire("m1") == "a"
    ticket = s.enqueue(Want(("m2",)))
    assert ticket.cold_after == ticket.enqueued_at
    (grant,) = s.release("a")
    assert grant.ticket is ticket
    assert grant.placement.hot is False


def test_a_freed_slot_goes_to_a_request_hot_there_before_an_older_one_that_would_load_cold() -> None:
    s, clock = make(queue_timeout=60.0)
    s.upsert_agent("a", ["m1", "m2"], 1, hot=["m1"], sizes={"m2": 20 * GB})
    s.upsert_agent("b", ["m2"], 1, hot=["m2"])
    assert s.acquire("m1") == "a"
    assert s.acquire("m2") == "b"
    older = s.enqueue(Want(("m2",)))  # hot on b: it waits for b rather than load on a
    clock.advance(1)
    younger = s.enqueue(Want(("m1",)))
    assert [g.ticket for g in s.release("a")] == [younger]
    assert not older.done
    clock.advance(20)  # older has now waited as long as loading m2 on a takes: it may go cold...
    also_hot = s.enqueue(Want(("m1",)))
    assert [g.ticket for g in s.release("a")] == [also_hot]  # ...but a request hot on a still goes first
    (grant,) = s.release("a")
    assert (grant.ticket, grant.agent_id, grant.placement.hot) == (older, "a", False)


def test_users_take_turns_among_the_requests_an_agent_has_hot() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m1", "m2"], 1, hot=["m1"], sizes={"m2": 20 * GB})
    s.upsert_agent("b", ["m2"], 1, hot=["m2"])
    s.acquire("m1")
    s.acquire("m2")
    s.enqueue(Want(("m2",), requester="carol"))  # oldest, but hot only on b
    for _ in range(3):
        s.enqueue(Want(("m1",), requester="noisy"))
    s.enqueue(Want(("m1",), requester="alice"))
    order = [(grant := s.release("a")[0]).ticket.want.requester for _ in range(3)]
    assert order == ["noisy", "alice", "noisy"]
    del grant


def test_poll_lets_users_take_turns_for_free_cold_slots() -> None:
    s, clock = make(queue_timeout=60.0)
    s.upsert_agent("hot", ["m"], 1, hot=["m"])
    s.upsert_agent("cold", ["m"], 2, hot=[], sizes={"m": 20 * GB})
    s.report("hot", "m", ok=True, duration=1.0)
    s.acquire("m")
    noisy = [s.enqueue(Want(("m",), requester="noisy")) for _ in range(3)]
    clock.advance(1)
    alice = s.enqueue(Want(("m",), requester="alice"))
    clock.advance(30)
    assert [g.ticket for g in s.poll()] == [noisy[0], alice]


def test_round_robin_and_least_loaded_never_hold_a_request_back() -> None:
    for policy in ("round_robin", "least_loaded"):
        s = Scheduler(ManualClock(), policy=policy)
        s.upsert_agent("hot", ["m"], 1, hot=["m"])
        s.upsert_agent("cold", ["m"], 1, hot=[], sizes={"m": 20 * GB})
        s.report("hot", "m", ok=True, duration=1.0)
        assert {s.acquire("m"), s.acquire("m")} == {"hot", "cold"}
        ticket = s.enqueue(Want(("m",)))
        assert ticket.cold_after == ticket.enqueued_at
        assert s.poll() == []
        assert s.next_wakeup() is None


def test_explain_says_when_a_request_would_wait_for_a_hot_slot() -> None:
    s, _ = hot_and_cold(service_s=2.0)
    data = s.explain(Want(("m",))).as_dict()
    assert data["choice"] is None
    assert "hot slot" in data["wait"]
    assert [c["agent_id"] for c in data["candidates"] if c["eligible"]] == ["cold"]


# -- loads in progress ----------------------------------------------------------------------------


def test_a_request_joins_a_load_under_way_rather_than_starting_another() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 4, hot=[], sizes={"m": 20 * GB})
    s.upsert_agent("b", ["m"], 4, hot=[], sizes={"m": 20 * GB})
    assert s.acquire("m") == "a"
    assert s.acquire("m") == "a"  # b is idle, but a is already loading m
    assert set(slots(s, "a").loading) == {"m"}
    assert slots(s, "b").loading == {}


def test_the_agent_reporting_the_model_hot_ends_the_load_and_teaches_its_load_rate() -> None:
    s, clock = make()
    s.upsert_agent("a", ["m"], 4, hot=[], sizes={"m": 20 * GB})
    s.acquire("m")
    clock.advance(10)
    s.upsert_agent("a", ["m"], 4, hot=["m"])
    assert slots(s, "a").loading == {}
    assert slots(s, "a").load_rate == 2 * GB  # 20 GB in 10 s


def test_a_load_never_reported_hot_is_forgotten_after_twice_its_expected_time() -> None:
    s, clock = make()
    s.upsert_agent("a", ["m"], 4, hot=[], sizes={"m": 20 * GB})
    s.acquire("m")
    s.release("a")
    clock.advance(49)  # expected 20 s: kept until 2 x 20 + 10 s
    s.poll()
    assert set(slots(s, "a").loading) == {"m"}
    clock.advance(1)
    s.poll()
    assert slots(s, "a").loading == {}
    assert slots(s, "a").load_rate is None


def test_a_request_takes_a_cold_slot_before_its_wait_would_time_out() -> None:
    s, clock = make(queue_timeout=10.0)
    s.upsert_agent("hot", ["m"], 1, hot=["m"])
    s.upsert_agent("cold", ["m"], 1, hot=[], sizes={"m": 20 * GB})
    s.report("hot", "m", ok=True, duration=2.0)
    s.acquire("m")
    ticket = s.enqueue(Want(("m",)))
    assert ticket.cold_after == ticket.deadline - 2.0  # not after 20 s: it would have timed out by then
    clock.advance(8)
    assert [g.ticket for g in s.poll()] == [ticket]


def test_a_long_queue_for_the_hot_slots_makes_a_request_load_cold_at_once() -> None:
    s, _ = make(max_queue=16, queue_timeout=60.0)
    s.upsert_agent("hot", ["m"], 1, hot=["m"])
    s.upsert_agent("cold", ["m"], 1, hot=[], sizes={"m": 20 * GB})
    s.report("hot", "m", ok=True, duration=2.0)
    s.acquire("m")
    assert s.place(Want(("m",))) is None  # 2 s for a hot slot, against 20 s to load
    for _ in range(10):
        s.enqueue(Want(("m",)))
    placement = s.place(Want(("m",)))  # 11 x 2 s for a hot slot, against 20 s to load
    assert placement is not None
    assert (placement.agent_id, placement.hot) == ("cold", False)


def test_a_request_that_may_go_cold_is_left_to_the_agent_the_scores_prefer() -> None:
    s, clock = make(queue_timeout=60.0)
    s.upsert_agent("b", ["m2"], 1, hot=["m2"])
    s.upsert_agent("crowded", ["m1", "m2"], 2, hot=["m1"], sizes={"m2": 20 * GB})
    s.upsert_agent("roomy", ["m2"], 1, hot=[], sizes={"m2": 20 * GB})
    s.set_hardware("crowded", free_vram=1 * GB, gpu_util=0.0)  # loading m2 there evicts m1, in use
    s.report("b", "m2", ok=True, duration=2.0)
    assert s.acquire("m2") == "b"
    assert s.acquire("m1") == "crowded"
    assert s.acquire("m1") == "crowded"
    ticket = s.enqueue(Want(("m2",)))
    clock.advance(20)
    assert s.release("crowded") == []  # it may go cold now, but not where it would evict a busy model
    (grant,) = s.poll()
    assert (grant.ticket, grant.agent_id) == (ticket, "roomy")


def test_agents_with_the_same_models_and_groups_share_one_set_each() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m1", "m2"], 4, hot=["m1"], groups=frozenset({"g"}))
    s.upsert_agent("b", ("m2", "m1"), 4, hot={"m1"}, groups=frozenset({"g"}))
    a, b = slots(s, "a"), slots(s, "b")
    assert a.models == b.models == {"m1", "m2"}
    assert a.models is b.models
    assert a.hot is b.hot
    assert a.groups is b.groups
