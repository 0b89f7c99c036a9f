"""Accounting rules without the network: who pays, what is charged, estimates, implausible counts, dynamic prices."""

from __future__ import annotations

import pytest

from potluck._shared.clock import ManualClock
from potluck.hub.access import AccessMap
from potluck.hub.accounting import Accounting, ClusterLoad, GroupBilling, Served
from potluck.hub.errors import InsufficientQuotaError
from potluck.hub.ledger import Ledger
from potluck.hub.outcome import Outcome
from potluck.hub.receipts import HubSigner, signed_document, verify_receipt
from potluck.hub.scheduler import Scheduler, Want
from potluck.protocol.accounts import BillingMode
from potluck.protocol.agent import Usage
from potluck.store.billing import Price
from potluck.store.ledger import LedgerTxn, StoredReceipt


async def _discard(txns: object, receipts: object) -> None:
    return None


def make(fee: float = 10.0, ledger: Ledger | None = None) -> Accounting:
    access = AccessMap("admin", "default")
    access.agent_owner = {"gpu": "bob", "free-gpu": "carol"}
    access.agent_groups = {"gpu": {"paid"}, "free-gpu": {"mutual"}}
    access.user_groups = {"alice": {"paid", "mutual"}}
    scheduler = Scheduler(ManualClock())
    scheduler.upsert_agent("gpu", ["m"], 4, hot=["m"], groups=frozenset({"paid"}))
    accounting = Accounting(
        ledger or Ledger(_discard), HubSigner.generate(), access, scheduler, fee_percent=fee, clock=ManualClock(10.0)
    )
    accounting.set_billing("paid", GroupBilling(mode=BillingMode.CREDITS, default=Price(10, 20), cap=100))
    accounting.prices = {"gpu": {"m": Price(100, 1000)}}
    return accounting


def alice(groups: frozenset[str]) -> Want:
    return Want(("m",), groups=groups, requester="alice")


def served(**changes: object) -> Served:
    fields: dict[str, object] = {
        "key_id": "k",
        "key_groups": frozenset({"paid"}),
        "agent_id": "gpu",
        "model": "m",
        "usage": Usage(10, 5, 15),
        "request_bytes": 200,
        "response_bytes": 400,
        "delivered_bytes": 400,
        "stream_events": None,
        "outcome": Outcome.OK,
        "status": 200,
    }
    fields.update(changes)
    return Served(**fields)  # type: ignore[arg-type]


async def test_a_paid_request_is_held_then_charged_its_tokens_with_the_fee_split() -> None:
    accounting = make()
    accounting.ledger.grant("alice", 1_000_000, "test")
    want, hold = await accounting.admit("r1", alice(frozenset({"paid"})), b'{"max_tokens": 5}')
    assert hold is not None
    assert want.groups == frozenset({"paid"})
    assert accounting.ledger.held("alice") == hold.amount == (17 + 1024) * 100 + 5 * 1000
    bill = accounting.settle(hold, served())
    assert (bill.charged, bill.earned, bill.group_id, bill.owner_id) == (6000, 5400, "paid", "bob")
    assert accounting.ledger.balance("alice") == 1_000_000 - 6000
    assert accounting.ledger.balance("bob") == 5400
    assert accounting.ledger.account("platform") == 600
    assert accounting.ledger.held("alice") == 0


async def test_without_credit_a_paid_only_route_is_402_and_nothing_is_held() -> None:
    accounting = make()
    with pytest.raises(InsufficientQuotaError) as refused:
        await accounting.admit("r1", alice(frozenset({"paid"})), b"{}")
    assert refused.value.status == 402
    assert accounting.ledger.held("alice") == 0


async def test_without_credit_a_free_route_is_taken_instead() -> None:
    accounting = make()
    accounting.scheduler.upsert_agent("free-gpu", ["m"], 4, groups=frozenset({"mutual"}))
    want, hold = await accounting.admit("r1", alice(frozenset({"paid", "mutual"})), b"{}")
    assert (want.groups, hold) == (frozenset({"mutual"}), None)


async def test_an_agent_reached_through_a_mutual_group_serves_free_even_for_a_held_request() -> None:
    accounting = make()
    accounting.access.agent_groups["gpu"] = {"paid", "mutual"}
    accounting.ledger.grant("alice", 1_000_000, "test")
    _want, hold = await accounting.admit("r1", alice(frozenset({"paid", "mutual"})), b"{}")
    bill = accounting.settle(hold, served(key_groups=frozenset({"paid", "mutual"})))
    assert (bill.charged, bill.group_id) == (0, "mutual")
    assert accounting.ledger.balance("alice") == 1_000_000


def test_missing_usage_is_estimated_from_bytes_and_stream_events() -> None:
    accounting = make()
    bill = accounting.settle(None, served(usage=None, request_bytes=400, response_bytes=8000))
    assert (bill.prompt_tokens, bill.completion_tokens, bill.estimated) == (100, 2000, True)
    bill = accounting.settle(None, served(usage=None, response_bytes=8000, stream_events=12))
    assert bill.completion_tokens == 10  # 12 events less the role chunk and [DONE]


async def test_implausible_counts_are_flagged_and_the_estimate_is_charged() -> None:
    accounting = make()
    accounting.ledger.grant("alice", 10_000_000, "test")
    _want, hold = await accounting.admit("r1", alice(frozenset({"paid"})), b"{}")
    bill = accounting.settle(hold, served(usage=Usage(10, 50_000, 50_010), response_bytes=400))
    assert (bill.flagged, bill.estimated, bill.completion_tokens) == (True, True, 100)
    assert accounting.reputation["gpu"].implausible == 1
    assert "completion" in accounting.reputation["gpu"].last_reason


def test_an_abandoned_stream_pays_only_for_the_events_that_reached_the_client() -> None:
    accounting = make()
    bill = accounting.settle(None, served(usage=Usage(10, 40, 50), stream_events=6, outcome="client_cancelled"))
    assert bill.completion_tokens == 5


async def test_a_request_that_never_reached_an_agent_releases_its_hold() -> None:
    accounting = make()
    accounting.ledger.grant("alice", 1_000_000, "test")
    _want, hold = await accounting.admit("r1", alice(frozenset({"paid"})), b"{}")
    bill = accounting.settle(hold, served(agent_id=None, usage=None, outcome=Outcome.OVERLOADED, status=503))
    assert bill.charged == 0
    assert (accounting.ledger.balance("alice"), accounting.ledger.held("alice")) == (1_000_000, 0)


def test_a_request_that_never_reached_an_agent_records_no_tokens_even_with_usage() -> None:
    bill = make().settle(
        None, served(agent_id=None, usage=Usage(50, 0, 50), outcome=Outcome.MODEL_NOT_FOUND, status=404)
    )
    assert (bill.prompt_tokens, bill.completion_tokens, bill.charged, bill.group_id, bill.owner_id) == (
        0,
        0,
        0,
        None,
        None,
    )


@pytest.mark.parametrize("status", [400, 413, 500, 503])
async def test_an_error_answer_is_charged_nothing_and_releases_its_hold_without_a_receipt(status: int) -> None:
    receipts: list[StoredReceipt] = []

    async def keep(txns: list[LedgerTxn], batch: list[StoredReceipt]) -> None:
        receipts.extend(batch)

    accounting = make(ledger=Ledger(keep))  # type: ignore[arg-type]
    accounting.ledger.grant("alice", 1_000_000, "test")
    _want, hold = await accounting.admit("r1", alice(frozenset({"paid"})), b"{}")
    error = served(usage=Usage(4521, 49, 4570), outcome=Outcome.UPSTREAM_ERROR, status=status, delivered_bytes=120)
    bill = accounting.settle(hold, error)
    assert (bill.charged, bill.earned) == (0, 0)
    assert (bill.prompt_tokens, bill.completion_tokens, bill.estimated) == (4521, 49, False)  # reported, recorded
    assert (accounting.ledger.balance("alice"), accounting.ledger.held("alice")) == (1_000_000, 0)
    assert accounting.ledger.balance("bob") == 0
    await accounting.ledger.flush()
    assert receipts == []


def test_an_error_answer_without_reported_usage_records_no_estimate() -> None:
    bill = make().settle(None, served(usage=None, outcome=Outcome.UPSTREAM_ERROR, status=400, response_bytes=90))
    assert (bill.prompt_tokens, bill.completion_tokens, bill.estimated) == (0, 0, False)


async def test_a_group_that_opts_in_pays_the_reported_tokens_of_an_error_answer() -> None:
    accounting = make()
    accounting.set_billing(
        "paid", GroupBilling(mode=BillingMode.CREDITS, default=Price(10, 20), cap=100, bill_errors=True)
    )
    accounting.ledger.grant("alice", 1_000_000, "test")
    _want, hold = await accounting.admit("r1", alice(frozenset({"paid"})), b"{}")
    bill = accounting.settle(hold, served(outcome=Outcome.UPSTREAM_ERROR, status=400, delivered_bytes=0))
    assert bill.charged > 0
    assert accounting.ledger.balance("alice") == 1_000_000 - bill.charged
    # ...but never on an estimate: no usage reported, nothing charged.
    _want, hold = await accounting.admit("r2", alice(frozenset({"paid"})), b"{}")
    assert accounting.settle(hold, served(usage=None, outcome=Outcome.UPSTREAM_ERROR, status=400)).charged == 0


@pytest.mark.parametrize("outcome", [Outcome.AGENT_FAILED, Outcome.TIMEOUT, Outcome.CLIENT_CANCELLED])
async def test_a_request_that_failed_before_any_byte_reached_the_client_is_free(outcome: Outcome) -> None:
    accounting = make()
    accounting.ledger.grant("alice", 1_000_000, "test")
    _want, hold = await accounting.admit("r1", alice(frozenset({"paid"})), b"{}")
    bill = accounting.settle(hold, served(outcome=outcome, delivered_bytes=0))
    assert bill.charged == 0
    assert (accounting.ledger.balance("alice"), accounting.ledger.held("alice")) == (1_000_000, 0)


def test_the_owners_price_is_clamped_to_the_groups_bounds() -> None:
    accounting = make()
    accounting.set_billing("paid", GroupBilling(mode=BillingMode.CREDITS, min_price=1, max_price=500))
    quote = accounting.quote("paid", "gpu", "m")
    assert quote.price == Price(100, 500)
    assert accounting.quote("paid", "other", "m").price == Price(1, 1)  # no price set: the default, clamped


def test_dynamic_multiplier_rises_with_queue_and_is_shown_with_its_reason() -> None:
    accounting = make()
    accounting.set_billing("paid", GroupBilling(mode=BillingMode.CREDITS, dynamic=True, default=Price(10, 20)))
    accounting.reprice()
    idle = accounting.quote("paid", "gpu", "m")
    assert idle.multiplier < 1.0
    assert idle.reason
    for _ in range(4):
        accounting.scheduler.acquire("m")
    for n in range(4):
        accounting.scheduler.enqueue(Want(("m",), requester=f"u{n}"))
    accounting.reprice()
    busy = accounting.quote("paid", "gpu", "m")
    assert busy.multiplier > 1.0
    assert busy.reason != idle.reason
    # Fixed-price groups ignore it.
    accounting.set_billing("paid", GroupBilling(mode=BillingMode.CREDITS))
    assert accounting.quote("paid", "gpu", "m").multiplier == 1.0


def test_a_replica_prices_by_the_whole_clusters_load_not_only_its_own() -> None:
    """Replicas behind one balancer see different shares of the same agents' load; priced by their own, two
    replicas would quote the same model at different prices at the same moment."""
    here = make()
    here.set_billing("paid", GroupBilling(mode=BillingMode.CREDITS, dynamic=True, default=Price(10, 20)))
    here.reprice()
    assert here.quote("paid", "gpu", "m").multiplier < 1.0  # idle as far as this replica's scheduler knows

    # The agent's four slots are taken by requests placed at other replicas, which also have four waiting.
    here.cluster_load = lambda: ClusterLoad(in_flight={"gpu": 4}, queued_elsewhere={"m": 4})
    here.reprice()
    clustered = here.quote("paid", "gpu", "m")

    # Exactly what a single hub with that load of its own charges.
    single = make()
    single.set_billing("paid", GroupBilling(mode=BillingMode.CREDITS, dynamic=True, default=Price(10, 20)))
    for n in range(4):
        single.scheduler.acquire("m")
        single.scheduler.enqueue(Want(("m",), requester=f"u{n}"))
    single.reprice()
    assert clustered.multiplier == single.quote("paid", "gpu", "m").multiplier > 1.0
    assert clustered.reason == single.quote("paid", "gpu", "m").reason


async def test_settled_requests_carry_a_signed_receipt_in_the_same_ledger_batch() -> None:
    batches: list[tuple[list[LedgerTxn], list[StoredReceipt]]] = []

    async def keep(txns: list[LedgerTxn], receipts: list[StoredReceipt]) -> None:
        batches.append((list(txns), list(receipts)))

    accounting = make(ledger=Ledger(keep))  # type: ignore[arg-type]
    accounting.ledger.grant("alice", 1_000_000, "test")
    _want, hold = await accounting.admit("r1", alice(frozenset({"paid"})), b"{}")
    accounting.settle(hold, served())
    await accounting.ledger.flush()
    ((txns, receipts),) = batches
    assert [t.kind for t in txns] == ["grant", "hold", "settle"]
    (receipt,) = receipts
    assert (receipt.request_id, receipt.consumer_id, receipt.owner_id) == ("r1", "alice", "bob")
    signed = signed_document(receipt.payload.encode(), receipt.signature)
    assert verify_receipt(signed, accounting.signer.public_key).charged == 6000


async def test_the_hold_follows_price_changes_at_once_and_new_agents_within_a_second() -> None:
    accounting = make()
    accounting.ledger.grant("alice", 10**12, "test")
    first = (await accounting.admit("r1", alice(frozenset({"paid"})), b"{}"))[1]
    accounting.set_prices("gpu", {"m": Price(100, 2000)})
    second = (await accounting.admit("r2", alice(frozenset({"paid"})), b"{}"))[1]
    assert first is not None
    assert second is not None
    assert second.amount - first.amount == 100 * 1000  # the cap's 100 completion tokens at +1,000 µcr each
    # A dearer agent joining the group counts once the cached bound expires.
    accounting.access.agent_groups["dear"] = {"paid"}
    accounting.scheduler.upsert_agent("dear", ["m"], 4, groups=frozenset({"paid"}))
    accounting.prices["dear"] = {"m": Price(100, 9000)}
    assert (await accounting.admit("r3", alice(frozenset({"paid"})), b"{}"))[1].amount == second.amount  # type: ignore[union-attr]
    accounting.clock.advance(1.01)  # type: ignore[attr-defined]
    third = (await accounting.admit("r4", alice(frozenset({"paid"})), b"{}"))[1]
    assert third is not None
    assert third.amount - second.amount == 100 * 7000


async def test_a_receipt_keeps_the_cache_and_reasoning_parts_the_backend_reported() -> None:
    receipts: list[StoredReceipt] = []

    async def keep(txns: list[LedgerTxn], batch: list[StoredReceipt]) -> None:
        receipts.extend(batch)

    accounting = make(ledger=Ledger(keep))  # type: ignore[arg-type]
    accounting.ledger.grant("alice", 1_000_000, "test")
    _want, hold = await accounting.admit("r1", alice(frozenset({"paid"})), b"{}")
    usage = Usage(10, 5, 15, cache_read_tokens=8, reasoning_tokens=3)
    bill = accounting.settle(hold, served(usage=usage))
    assert (bill.prompt_tokens, bill.completion_tokens) == (10, 5)  # the parts are inside, not added
    await accounting.ledger.flush()
    (stored,) = receipts
    receipt = verify_receipt(signed_document(stored.payload.encode(), stored.signature), accounting.signer.public_key)
    assert (receipt.prompt_tokens, receipt.cache_read_tokens, receipt.cache_write_tokens) == (10, 8, 0)
    assert (receipt.completion_tokens, receipt.reasoning_tokens) == (5, 3)
