"""The claims view the scheduler reads, the spot checks' verdicts and budget, and throughput samples (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from potluck._shared.clock import ManualClock
from potluck.hub.claims import NOT_APPROVED, ClaimView, Hold, Sample
from potluck.hub.scheduler import Scheduler, Want
from potluck.hub.spotcheck import SpotCheckSettings, judge
from potluck.protocol.accounts import ClaimPolicy, HoldKind

G1, G2 = frozenset({"g1"}), frozenset({"g2"})
BOTH = G1 | G2


def _hold(group: str, agent: str, model: str, kind: HoldKind = HoldKind.FLAGGED) -> Hold:
    return Hold(group, agent, model, kind, f"{kind} for {model}", datetime(2026, 12, 4, tzinfo=UTC))


def test_open_groups_let_any_shared_agent_serve_any_name() -> None:
    assert ClaimView().refusal("a", BOTH, "m", G1) == ""


def test_an_approved_group_needs_the_pair_approved() -> None:
    view = ClaimView()
    view.load({"g1": ClaimPolicy.APPROVED}, [], [], [])
    assert view.refusal("a", G1, "m", G1) == NOT_APPROVED
    view.approved["g1"] = {("a", "m")}
    assert view.refusal("a", G1, "m", G1) == ""
    assert view.refusal("a", G1, "other", G1) == NOT_APPROVED
    assert view.refusal("b", G1, "m", G1) == NOT_APPROVED


def test_one_group_that_allows_the_claim_is_enough() -> None:
    view = ClaimView(policies={"g1": ClaimPolicy.APPROVED})
    # Reached through g1 alone it is refused; a key of both groups reaches it through the open g2.
    assert view.refusal("a", BOTH, "m", G1) == NOT_APPROVED
    assert view.refusal("a", BOTH, "m", BOTH) == ""


def test_a_hold_takes_the_agent_out_for_that_model_in_that_group_only() -> None:
    view = ClaimView()
    view.load({}, [], [_hold("g1", "a", "m")], [])
    assert view.refusal("a", BOTH, "m", G1) == "flagged for m"
    assert view.refusal("a", BOTH, "m", G2) == ""
    assert view.refusal("a", BOTH, "other", G1) == ""
    assert view.refusal("b", BOTH, "m", G1) == ""
    assert [h.agent_id for h in view.holds_of("a")] == ["a"]


def test_a_reload_takes_the_stores_claims_and_keeps_what_this_hub_has_not_written_yet() -> None:
    view = ClaimView()
    view.load({"g1": ClaimPolicy.APPROVED}, [], [_hold("g1", "a", "m"), _hold("g2", "b", "m")], [])
    taken = _hold("g2", "c", "m", HoldKind.PARKED)
    view.put(taken)
    view.lift("g2", "b", "m", None)
    view.unsaved.extend([taken, ("g2", "b", "m", None)])
    stored = ClaimView()  # another hub opened g1 and lifted a's flag; b's lift and c's park are not written yet
    stored.load({}, [], [_hold("g2", "b", "m")], [])
    view.adopt(stored)
    assert view.policies == {}
    assert sorted((h.group_id, h.agent_id, h.kind) for held in view.holds.values() for h in held.values()) == [
        ("g2", "c", HoldKind.PARKED)
    ]
    assert view.refusal("b", G2, "m", G2) == ""


def test_the_scheduler_places_only_where_the_claims_allow() -> None:
    view = ClaimView(policies={"g1": ClaimPolicy.APPROVED}, approved={"g1": {("honest", "m")}})
    scheduler = Scheduler(ManualClock(), claims=view)
    for agent in ("honest", "rogue"):
        scheduler.upsert_agent(agent, ["m"], 8, groups=G1)
    want = Want(("m",), groups=G1)
    assert {scheduler.place(want).agent_id for _ in range(6)} == {"honest"}  # type: ignore[union-attr]
    reasons = {c.agent_id: c.reason for c in scheduler.explain(want).candidates}
    assert reasons == {"honest": "", "rogue": NOT_APPROVED}
    view.approved["g1"].clear()
    assert not scheduler.serves("m", G1)
    assert scheduler.place(want) is None


def test_the_majority_decides_and_a_tie_blames_nobody() -> None:
    same = "the quick brown fox jumps"
    assert judge({"a": same, "b": same, "c": "zq xv kk"}, None, 0.8) == {"a": True, "b": True, "c": False}
    assert judge({"a": same, "b": "zq xv kk"}, None, 0.8) is None
    assert judge({"a": same}, None, 0.8) is None
    # A late token flipped on one honest agent is tolerated.
    assert judge({"a": same, "b": same[:-1] + "x", "c": "zq"}, None, 0.8) == {"a": True, "b": True, "c": False}


def test_a_pinned_reference_judges_even_a_lone_agent() -> None:
    assert judge({"a": "yes it is"}, "yes it is", 0.8) == {"a": True}
    assert judge({"a": "no"}, "yes it is", 0.8) == {"a": False}


def test_checks_stay_within_their_share_of_the_traffic() -> None:
    settings = SpotCheckSettings(percent=1.0)
    assert not settings.affordable(served=299, spent=0, needed=3)
    assert settings.affordable(served=300, spent=0, needed=3)
    assert not settings.affordable(served=500, spent=3, needed=3)
    assert not SpotCheckSettings(percent=0).affordable(served=10**9, spent=0, needed=1)


def test_a_stream_is_measured_from_its_first_byte() -> None:
    streamed = Sample.of("a", "m", None, completion_tokens=101, stream=True, started_at=0, first_byte_at=1, now=3)
    assert streamed.tokens_per_s == 50
    whole = Sample.of("a", "m", None, completion_tokens=100, stream=False, started_at=0, first_byte_at=3, now=4)
    assert whole.tokens_per_s == 25
