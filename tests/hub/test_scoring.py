"""Layer 2 of the scheduler: hot models first, then alias order, owner affinity, cold-load cost, load,
latency, reliability and GPU; and route-explain, which shows the same terms."""

from __future__ import annotations

import pytest

from potluck._shared.clock import ManualClock
from potluck.hub.scheduler import Policy, Scheduler, ScoreWeights, Want
from potluck.hub.scoring import AgentSlots, Load, cold_wait_s

GB = 1_000_000_000


def make(policy: Policy = Policy.POTLUCK, **kwargs: object) -> tuple[Scheduler, ManualClock]:
    clock = ManualClock(100.0)
    return Scheduler(clock, policy=policy, **kwargs), clock  # type: ignore[arg-type]


def test_hot_agent_wins_over_an_idle_cold_one_even_when_busier() -> None:
    s, _ = make()
    s.upsert_agent("cold", ["m"], 8, hot=[])
    s.upsert_agent("hot", ["m"], 8, hot=["m"])
    picks = [s.acquire("m") for _ in range(8)]
    assert picks == ["hot"] * 8  # even at 7/8 load the hot agent beats an idle cold one
    s.report("hot", "m", ok=True, duration=240.0)  # a hot slot frees up only every 240 / 8 s
    assert s.acquire("m") == "cold"  # only when the hot one is full, and loading is quicker than waiting


def test_least_loaded_policy_ignores_hot_models() -> None:
    s, _ = make(Policy.LEAST_LOADED)
    s.upsert_agent("cold", ["m"], 4, hot=[])
    s.upsert_agent("hot", ["m"], 4, hot=["m"])
    assert sorted(s.acquire("m") or "" for _ in range(2)) == ["cold", "hot"]


def test_round_robin_policy_rotates_regardless_of_load() -> None:
    s, _ = make(Policy.ROUND_ROBIN)
    s.upsert_agent("a", ["m"], 4)
    s.upsert_agent("b", ["m"], 4)
    s.acquire("m")
    s.release(s.acquire("m") or "")  # one agent busy, the other idle again
    assert [s.acquire("m") for _ in range(2)] == ["a", "b"]


def test_among_cold_agents_the_faster_expected_load_wins() -> None:
    s, clock = make()
    s.upsert_agent("slow-disk", ["m"], 4, hot=[], sizes={"m": 8 * GB})
    s.upsert_agent("fast-disk", ["m"], 4, hot=[], sizes={"m": 8 * GB})
    # Each learns its load rate from a load the scheduler started: 8 GB in 40 s vs in 4 s.
    for agent, seconds in (("slow-disk", 40.0), ("fast-disk", 4.0)):
        assert s.acquire("m", exclude=frozenset({"slow-disk", "fast-disk"} - {agent})) == agent
        clock.advance(seconds)
        s.upsert_agent(agent, ["m"], 4, hot=["m"])
        s.release(agent)
        s.upsert_agent(agent, ["m"], 4, hot=[])
    assert s.acquire("m") == "fast-disk"


def test_cold_agent_that_must_evict_loses_to_one_with_room() -> None:
    s, _ = make()
    s.upsert_agent("full", ["m"], 4, hot=["other"], sizes={"m": 8 * GB})
    s.upsert_agent("room", ["m"], 4, hot=["other"], sizes={"m": 8 * GB})
    s.set_hardware("full", free_vram=2 * GB, gpu_util=0.0)
    s.set_hardware("room", free_vram=40 * GB, gpu_util=0.0)
    explanation = s.explain(Want(("m",)))
    assert explanation.choice is not None
    assert explanation.choice.agent_id == "room"
    terms = {c.agent_id: c.terms for c in explanation.candidates}
    assert terms["full"]["cold"] < terms["room"]["cold"] < 0


def test_alias_prefers_first_model_but_a_hot_second_beats_a_cold_first() -> None:
    s, _ = make()
    s.upsert_agent("a", ["big"], 4, hot=["big"])
    s.upsert_agent("b", ["small"], 4, hot=["small"])
    placement = s.place(Want(("big", "small")))
    assert placement is not None
    assert (placement.agent_id, placement.model) == ("a", "big")
    s.upsert_agent("a", ["big"], 4, hot=[])  # big unloaded: the hot second choice now wins
    placement = s.place(Want(("big", "small")))
    assert placement is not None
    assert (placement.agent_id, placement.model, placement.hot) == ("b", "small", True)


def test_owner_affinity_applies_when_the_key_asks_for_it() -> None:
    s, _ = make()
    s.upsert_agent("alices", ["m"], 4, owner_rules=(True, "alice", False, False))
    s.upsert_agent("other", ["m"], 4)
    s.acquire("m")  # alices now busier than other (round robin put the first on alices)
    assert s.place(Want(("m",), requester="alice")) is not None
    busy = {a: s.agent(a).in_flight for a in ("alices", "other")}  # type: ignore[union-attr]
    assert busy == {"alices": 1, "other": 1}
    placement = s.place(Want(("m",), requester="alice", prefer_own=True))
    assert placement is not None
    assert placement.agent_id == "alices"
    placement = s.place(Want(("m",), requester="bob", prefer_own=True))
    assert placement is not None
    assert placement.agent_id == "other"  # bob owns nothing: plain load decides


def test_slow_agent_loses_to_fast_one_at_equal_load() -> None:
    s, _ = make()
    s.upsert_agent("slow", ["m"], 4, hot=["m"])
    s.upsert_agent("fast", ["m"], 4, hot=["m"])
    for _ in range(3):
        s.report("slow", "m", ok=True, ttft=2.0, decode_rate=10.0)
        s.report("fast", "m", ok=True, ttft=0.2, decode_rate=80.0)
    assert [s.acquire("m") for _ in range(2)] == ["fast", "fast"]
    terms = {c.agent_id: c.terms for c in s.explain(Want(("m",))).candidates}
    assert "latency" not in terms["fast"]
    assert terms["slow"]["latency"] < -3  # close to the full weight of 4


def test_unreliable_agent_loses_to_reliable_one() -> None:
    s, _ = make()
    s.upsert_agent("flaky", ["m"], 4, hot=["m"])
    s.upsert_agent("solid", ["m"], 4, hot=["m"])
    s.report("flaky", "m", ok=False)
    s.report("flaky", "m", ok=True)
    assert s.acquire("m") == "solid"


def test_busy_gpu_loses_at_equal_load() -> None:
    s, _ = make()
    s.upsert_agent("busy", ["m"], 4, hot=["m"])
    s.upsert_agent("idle", ["m"], 4, hot=["m"])
    s.set_hardware("busy", free_vram=None, gpu_util=0.9)
    assert s.acquire("m") == "idle"


def test_weights_are_configurable_and_validated() -> None:
    weights = ScoreWeights.parse("hot=0,load=50")
    assert (weights.hot, weights.load, weights.latency) == (0.0, 50.0, 4.0)
    s, _ = make(weights=weights)
    s.upsert_agent("cold", ["m"], 4, hot=[])
    s.upsert_agent("hot", ["m"], 4, hot=["m"])
    s.acquire("m")
    s.acquire("m")
    # With hot worth nothing, load decides: one request on each agent.
    assert s.agent("cold").in_flight == 1  # type: ignore[union-attr]
    assert s.agent("hot").in_flight == 1  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unknown score weight"):
        ScoreWeights.parse("warmth=3")
    with pytest.raises(ValueError, match="must be a number"):
        ScoreWeights.parse("hot=lots")
    with pytest.raises(ValueError, match=">= 0"):
        ScoreWeights.parse(["hot=-1"])


def test_explain_lists_filtered_agents_with_reasons_and_the_choice() -> None:
    s, _ = make()
    s.upsert_agent("full", ["m"], 1, hot=["m"])
    s.upsert_agent("draining", ["m"], 4, draining=True)
    s.upsert_agent("elsewhere", ["m"], 4, groups=frozenset({"g2"}))
    s.upsert_agent("ok", ["m"], 4, groups=frozenset({"g1"}))
    s.acquire("m", groups=frozenset({"g1"}))  # goes to full (hot)
    data = s.explain(Want(("m",), groups=frozenset({"g1"}))).as_dict()
    reasons = {c["agent_id"]: c.get("reason") for c in data["candidates"]}
    assert reasons == {
        "ok": None,
        "full": "no free slot",
        "draining": "draining",
        "elsewhere": "not shared with the request's groups",
    }
    assert data["choice"] == {"agent_id": "ok", "model": "m", "hot": True}  # an agent that does not say is hot
    assert data["candidates"][0]["eligible"] is True
    assert data["policy"] == "potluck"
    assert data["weights"]["hot"] == 100.0


def test_explain_with_no_candidate_has_no_choice() -> None:
    s, _ = make()
    assert s.explain(Want(("m",))).as_dict()["choice"] is None


def test_the_eviction_penalty_grows_with_the_requests_in_flight_on_the_agent() -> None:
    s, _ = make()
    for name in ("busy", "idle", "room"):
        s.upsert_agent(name, ["m", "other"], 4, hot=["other"], sizes={"m": 8 * GB})
        s.set_hardware(name, free_vram=(40 if name == "room" else 2) * GB, gpu_util=0.0)
    for _ in range(3):
        s.acquire("other", exclude=frozenset({"idle", "room"}))
    terms = {c.agent_id: c.terms for c in s.explain(Want(("m",))).candidates}
    # All three load m in the same time; evicting costs 0.5 more, and 0.5 per request in flight.
    assert terms["room"]["cold"] == -10.0
    assert terms["idle"]["cold"] == -15.0
    assert terms["busy"]["cold"] == -30.0


def test_a_cold_load_waits_behind_loads_already_under_way_on_the_same_agent() -> None:
    agent = AgentSlots("a", frozenset({"m1", "m2"}), 4, sizes={"m1": 20 * GB, "m2": 20 * GB})
    agent.loading["m1"] = Load(started=100.0, expected_s=20.0)
    assert cold_wait_s(agent, "m1", 105.0) == 15.0  # joining it: what is left of it
    assert cold_wait_s(agent, "m2", 105.0) == 35.0  # after it, on the same disk
    agent.hot = frozenset({"m1"})
    assert cold_wait_s(agent, "m1", 105.0) == 0.0


def test_a_model_loading_on_an_agent_counts_half_hot_there() -> None:
    s, _ = make()
    s.upsert_agent("loading", ["m"], 4, hot=[], sizes={"m": 8 * GB})
    s.upsert_agent("cold", ["m"], 4, hot=[], sizes={"m": 8 * GB})
    s.upsert_agent("hot", ["m"], 4, hot=["m"])
    assert s.acquire("m", exclude=frozenset({"cold", "hot"})) == "loading"
    terms = {c.agent_id: c.terms for c in s.explain(Want(("m",))).candidates}
    assert terms["loading"]["hot"] == 50.0
    assert "hot" not in terms["cold"]
    assert s.acquire("m") == "hot"
    assert s.acquire("m") == "hot"


def test_prefill_speed_per_prompt_token_decides_where_prompt_sizes_are_known() -> None:
    s, _ = make()
    s.upsert_agent("fast", ["m"], 4, hot=["m"])
    s.upsert_agent("slow", ["m"], 4, hot=["m"])
    for _ in range(3):
        # Raw TTFT says "slow" is quicker, but it only ever got short prompts.
        s.report("fast", "m", ok=True, ttft=1.0, prompt_tokens=4000)  # 0.25 s per 1k tokens
        s.report("slow", "m", ok=True, ttft=0.5, prompt_tokens=500)  # 1 s per 1k tokens
    assert s.acquire("m") == "fast"
    terms = {c.agent_id: c.terms for c in s.explain(Want(("m",))).candidates}
    assert terms["slow"]["latency"] == pytest.approx(-4 * 0.75 / 2)


def test_very_short_prompts_count_as_128_tokens_for_prefill_speed() -> None:
    s, _ = make()
    s.upsert_agent("a", ["m"], 4, hot=["m"])
    s.report("a", "m", ok=True, ttft=0.064, prompt_tokens=10)
    stats = s.stats("a", "m")
    assert stats is not None
    assert stats.prefill == pytest.approx(0.5)  # 0.064 s / 128 tokens, per 1,000
