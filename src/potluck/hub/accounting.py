"""Accounting on the hot path: holds before dispatch, settlement after, prices, receipts. No database round trip.

**Which requests pay.** A group bills as ``mutual`` (usage is recorded, nothing is charged) or
``credits``. A request is held against its user's balance when one of its key's groups bills in
credits. It is charged only if the agent that served it reached it through credits groups alone:
an agent shared with the key through any mutual group serves it free. A user without enough credit
still reaches the agents of its mutual groups; with none that serves the model: 402
``insufficient_quota``, before any work is done.

**The hold** is the worst case: the body's bytes as prompt tokens (a token is at least one byte,
plus the chat template's allowance), ``max_tokens`` (or the group's cap) as completion tokens, at
the highest price among the agents that could serve it, times the dynamic multiplier. The charge
never exceeds it (the ledger caps it), and balances never go below zero.

**Only what was served is charged.** A request that never reached an agent, whose answer was an error
status, or that failed before any byte reached the client is charged nothing and its hold is released
(no receipt). Tokens the backend reported for an error answer are recorded, and charged only in a
group that opts in with ``bill_backend_errors`` (never on an estimate).

**The charge** is the tokens the backend reported at the serving agent's price for the model (the
group's default price where the owner set none), clamped to the group's bounds, times the group's
dynamic multiplier for the model. A cancelled stream pays only for the tokens that reached the
client. When the backend reports no usage the hub estimates it (4 bytes a token); when its counts
cannot be true (more completion tokens than bytes relayed, more prompt tokens than the request had
bytes plus the template allowance), the record is flagged, the hub's estimate is charged instead,
and the agent's implausible count is kept for the admin API. The platform takes
``--platform-fee-percent`` of every charge; the agent's owner earns the rest.

Every settled request yields an Ed25519-signed receipt (hub/receipts.py), written in the same
database batch as its settlement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import msgspec

from potluck._shared.clock import Clock, SystemClock
from potluck.hub.access import AccessMap
from potluck.hub.errors import InsufficientQuotaError
from potluck.hub.holds import HoldBook, LocalHoldBook
from potluck.hub.ledger import Ledger
from potluck.hub.outcome import Outcome
from potluck.hub.pricing import (
    MICRO,
    clamp_price,
    cost,
    dynamic_multiplier,
    estimate_tokens,
    hold_amount,
    implausible,
    max_tokens_of,
    split,
)
from potluck.hub.receipts import HubSigner, Receipt
from potluck.hub.scheduler import AgentSlots, Scheduler, Want
from potluck.protocol.accounts import BillingMode
from potluck.protocol.agent import Usage
from potluck.store.billing import Price
from potluck.store.groups import Group
from potluck.store.ledger import PLATFORM, StoredReceipt, user_account

log = logging.getLogger(__name__)

WORST_CASE_TTL_S = 1.0
FREE = Price(0.0, 0.0)


@dataclass(frozen=True, slots=True)
class GroupBilling:
    mode: BillingMode = BillingMode.MUTUAL
    dynamic: bool = False
    min_price: float | None = None
    max_price: float | None = None
    default: Price = FREE
    cap: int = 4096
    """Completion tokens a hold assumes when the request sets no ``max_tokens``."""
    bill_errors: bool = False
    """Charge the tokens a backend reported for an error answer (by default an error costs nothing)."""

    @classmethod
    def of(cls, group: Group) -> GroupBilling:
        return cls(
            group.billing,
            group.dynamic_pricing,
            group.min_price_per_mtok,
            group.max_price_per_mtok,
            Price(group.default_input_per_mtok, group.default_output_per_mtok),
            group.max_tokens_cap,
            group.bill_backend_errors,
        )


@dataclass(slots=True)
class Hold:
    """A request's claim on its user's credit, carried from admission to settlement."""

    request_id: str
    user_id: str
    amount: int


class Settlement(msgspec.Struct, frozen=True, gc=False):
    """What a request cost, for its usage record."""

    prompt_tokens: int
    completion_tokens: int
    group_id: str | None = None
    owner_id: str | None = None
    estimated: bool = False
    flagged: bool = False
    charged: int = 0
    earned: int = 0


class Served(msgspec.Struct, frozen=True, gc=False):
    """What the hub saw of a finished request (agent, tokens reported, bytes moved)."""

    key_id: str | None
    key_groups: frozenset[str] | None
    agent_id: str | None
    model: str
    usage: Usage | None
    request_bytes: int
    response_bytes: int
    """Body bytes the agent relayed."""
    delivered_bytes: int
    """Body bytes that reached the client."""
    stream_events: int | None
    """SSE data events that reached the client (None: not a stream)."""
    outcome: Outcome
    status: int
    """The answer's HTTP status (the backend's, or the hub's own error)."""

    @property
    def delivered(self) -> bool:
        """Something of a successful answer reached the client: only then is there anything to pay for."""
        return self.agent_id is not None and self.delivered_bytes > 0 and self.status < 400


def usage_parts(usage: Usage | None, estimated: bool) -> dict[str, int]:
    """The cache and reasoning parts of the billed tokens, as the backend reported them (none on an estimate)."""
    if usage is None or estimated:
        return {}
    return {
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


@dataclass(slots=True)
class Quote:
    price: Price
    multiplier: float
    reason: str


@dataclass(frozen=True, slots=True)
class ClusterLoad:
    """Supply and demand beyond this hub's own scheduler (cluster mode), so every replica prices alike."""

    in_flight: Mapping[str, int]
    """Agent id -> requests in flight on it from every replica."""
    queued_elsewhere: Mapping[str, int]
    """Model -> requests waiting for it at the other replicas."""


@dataclass(slots=True)
class _Reputation:
    implausible: int = 0
    last_reason: str = ""


@dataclass(slots=True)
class Accounting:
    ledger: Ledger
    signer: HubSigner
    access: AccessMap
    scheduler: Scheduler
    fee_percent: float = 0.0
    billing: dict[str, GroupBilling] = field(default_factory=dict)
    prices: dict[str, dict[str, Price]] = field(default_factory=dict)
    """Agent -> model -> the owner's price."""
    multipliers: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict)
    """(group, model) -> the dynamic multiplier and why."""
    reputation: dict[str, _Reputation] = field(default_factory=dict)
    """Agents whose reported token counts could not be true."""
    clock: Clock = field(default_factory=SystemClock)
    holds: HoldBook | None = None
    """Where holds are decided and settlements go; None: the in-memory ledger (`LocalHoldBook`). Replicas
    sharing a database pass a `SharedHoldBook`, and then `ledger` is not used."""
    cluster_load: Callable[[], ClusterLoad] | None = None
    """The whole cluster's load (hub/cluster.py), which dynamic prices follow; None: a single hub's own."""
    _credit_groups: frozenset[str] = frozenset()
    _dearest_cache: dict[tuple[str, str], tuple[float, Price, float]] = field(default_factory=dict)
    _book: HoldBook = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._book = self.holds if self.holds is not None else LocalHoldBook(self.ledger)

    @property
    def book(self) -> HoldBook:
        """The hold book in use."""
        return self._book

    def set_billing(self, group_id: str, billing: GroupBilling | None) -> None:
        """A group's billing settings changed (None: the group is gone)."""
        if billing is None:
            self.billing.pop(group_id, None)
        else:
            self.billing[group_id] = billing
        self._credit_groups = frozenset(g for g, b in self.billing.items() if b.mode == BillingMode.CREDITS)
        self._dearest_cache.clear()

    # -- configuration ------------------------------------------------------------------------

    def mode(self, group_id: str) -> BillingMode:
        billing = self.billing.get(group_id)
        return billing.mode if billing is not None else BillingMode.MUTUAL

    def credit_groups(self, groups: Iterable[str]) -> frozenset[str]:
        if not self._credit_groups:
            return frozenset()  # no group bills in credits: the common case costs one check
        return frozenset(g for g in groups if g in self._credit_groups)

    def quote(self, group_id: str, agent_id: str | None, model: str) -> Quote:
        """The price of ``model`` on ``agent_id`` through ``group_id`` now."""
        billing = self.billing.get(group_id, GroupBilling())
        own = self.prices.get(agent_id or "", {}).get(model)
        price = clamp_price(own or billing.default, billing.min_price, billing.max_price)
        multiplier, reason = self.multipliers.get((group_id, model), (1.0, "")) if billing.dynamic else (1.0, "")
        return Quote(price, multiplier, reason or ("fixed price" if not billing.dynamic else "not computed yet"))

    # -- admission ----------------------------------------------------------------------------

    async def admit(self, request_id: str, want: Want, body: bytes) -> tuple[Want, Hold | None]:
        """The request's routing (narrowed to its free groups when it lacks credit) and the hold placed;
        402 when it lacks credit and nothing free serves it."""
        groups = want.groups or frozenset()
        paying = self.credit_groups(groups)
        if not paying:
            return want, None
        user_id = want.requester or self.access.admin_user_id
        amount = self._worst_case(paying, want.models, len(body), max_tokens_of(body))
        if await self._book.hold(request_id, user_id, amount):
            return want, Hold(request_id, user_id, amount)
        free = groups - paying
        if free and self.scheduler.serves(want.models, free, user_id):
            return msgspec.structs.replace(want, groups=free), None
        balance, _held = await self._book.balance(user_id)
        raise InsufficientQuotaError(
            f"This request may cost up to {amount / MICRO:.6f} credits and your balance is {balance / MICRO:.6f}; "
            "lower max_tokens or add credits"
        )

    def _worst_case(
        self, groups: frozenset[str], models: tuple[str, ...], body_bytes: int, max_tokens: int | None
    ) -> int:
        worst = 0
        for group_id in groups:
            cap = self.billing.get(group_id, GroupBilling()).cap
            for model in models:
                price, multiplier = self._dearest(group_id, model)
                worst = max(worst, hold_amount(body_bytes, max_tokens, cap, price, multiplier))
        return worst

    def _dearest(self, group_id: str, model: str) -> tuple[Price, float]:
        """The highest input and output prices (and multiplier) of ``model`` in the group: a bound on any charge.

        Cached for `WORST_CASE_TTL_S`, and dropped at once when prices, billing or multipliers change,
        so the scan over the group's agents is not paid per request. An agent that joins within the
        TTL at a higher price is still charged no more than the hold (the ledger caps it).
        """
        now = self.clock.now()
        cached = self._dearest_cache.get((group_id, model))
        if cached is not None and now - cached[0] < WORST_CASE_TTL_S:
            return cached[1], cached[2]
        top_in = top_out = 0.0
        multiplier = 1.0
        found = False
        for agent_id, slots in self.agents_in(group_id):
            if model not in slots.models:
                continue
            found = True
            q = self.quote(group_id, agent_id, model)
            top_in = max(top_in, q.price.input_per_mtok)
            top_out = max(top_out, q.price.output_per_mtok)
            multiplier = max(multiplier, q.multiplier)
        if not found:
            q = self.quote(group_id, None, model)
            top_in, top_out, multiplier = q.price.input_per_mtok, q.price.output_per_mtok, q.multiplier
        price = Price(top_in, top_out)
        self._dearest_cache[(group_id, model)] = (now, price, multiplier)
        return price, multiplier

    def agents_in(self, group_id: str) -> list[tuple[str, AgentSlots]]:
        """The connected agents shared into the group, by id, with what the scheduler knows of them."""
        found = []
        for agent_id, groups in self.access.agent_groups.items():
            slots = self.scheduler.agent(agent_id) if group_id in groups else None
            if slots is not None:
                found.append((agent_id, slots))
        return sorted(found, key=lambda pair: pair[0])

    def set_prices(self, agent_id: str, prices: dict[str, Price]) -> None:
        """An owner changed an agent's prices."""
        self.prices[agent_id] = dict(prices)
        self._dearest_cache.clear()

    # -- settlement ---------------------------------------------------------------------------

    def settle(self, hold: Hold | None, served: Served) -> Settlement:
        """Charge what the request used (or nothing), release the rest of its hold, sign a receipt."""
        if served.agent_id is None:
            # Never reached an agent: nothing used, nobody to pay, no group it was served through.
            self.release(hold)
            return Settlement(0, 0)
        owner = self.access.agent_owner.get(served.agent_id)
        group_id = self._billing_group(served)
        if served.delivered:
            prompt, completion, estimated, flagged = self._tokens(served)
            billable = True
        else:
            # Nothing of an answer reached the client: record what the backend reported (never an
            # estimate); an error answer is charged only where the group opted in.
            usage = served.usage
            prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage is not None else (0, 0)
            estimated = flagged = False
            billable = (
                usage is not None
                and served.status >= 400
                and group_id is not None
                and self.billing.get(group_id, GroupBilling()).bill_errors
                and implausible(prompt, completion, served.request_bytes, served.response_bytes) is None
            )
        if hold is None:
            return Settlement(prompt, completion, group_id, owner, estimated, flagged)
        if not billable or group_id is None or self.mode(group_id) != BillingMode.CREDITS:
            self._book.release(hold.request_id)
            return Settlement(prompt, completion, group_id, owner, estimated, flagged)
        quote = self.quote(group_id, served.agent_id, served.model)
        charge = min(cost(prompt, completion, quote.price, quote.multiplier), hold.amount)
        if charge <= 0:
            self._book.release(hold.request_id)  # no receipt for a zero charge
            return Settlement(prompt, completion, group_id, owner, estimated, flagged)
        fee, earned = split(charge, self.fee_percent)
        payouts = [(user_account(owner or self.access.admin_user_id), earned), (PLATFORM, fee)]
        receipt = Receipt(
            request_id=hold.request_id,
            issued_at=self.clock.wall().isoformat(),
            hub=self.signer.fingerprint,
            consumer_id=hold.user_id,
            key_id=served.key_id or "",
            group_id=group_id,
            agent_id=served.agent_id,
            owner_id=owner,
            model=served.model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            input_per_mtok=quote.price.input_per_mtok,
            output_per_mtok=quote.price.output_per_mtok,
            multiplier=quote.multiplier,
            charged=charge,
            fee=fee,
            earned=earned,
            outcome=served.outcome,
            tokens_estimated=estimated,
            **usage_parts(served.usage, estimated),
        )
        payload, signature = self.signer.sign_canonical(receipt)
        stored = StoredReceipt(
            request_id=hold.request_id,
            payload=payload.decode(),
            signature=signature,
            consumer_id=hold.user_id,
            owner_id=owner,
            created_at=self.clock.wall(),
        )
        self._book.settle(hold.request_id, charge, [p for p in payouts if p[1]], stored)
        return Settlement(prompt, completion, group_id, owner, estimated, flagged, charge, earned)

    def release(self, hold: Hold | None) -> None:
        if hold is not None:
            self._book.release(hold.request_id)

    def _billing_group(self, served: Served) -> str | None:
        """The group the request reached its agent through: a mutual one if any (free), else the first credits one."""
        if served.agent_id is None:
            return None
        shared = self.access.groups_of_agent(served.agent_id)
        if served.key_groups is not None:
            shared = shared & served.key_groups
        if not shared:
            return None
        mutual = sorted(g for g in shared if self.mode(g) != BillingMode.CREDITS)
        return mutual[0] if mutual else min(shared)

    def _tokens(self, served: Served) -> tuple[int, int, bool, bool]:
        """(prompt, completion, estimated, flagged): the backend's counts when plausible, else the hub's estimate."""
        estimate_prompt = estimate_tokens(served.request_bytes)
        events = served.stream_events
        # A stream carries about a token per event, besides the role chunk and [DONE].
        estimate_completion = estimate_tokens(served.response_bytes) if events is None else max(0, events - 2)
        usage = served.usage
        if usage is None or (usage.prompt_tokens == 0 and usage.completion_tokens == 0):
            prompt, completion, estimated, flagged = estimate_prompt, estimate_completion, True, False
        else:
            reason = implausible(
                usage.prompt_tokens, usage.completion_tokens, served.request_bytes, served.response_bytes
            )
            if reason is None:
                prompt, completion, estimated, flagged = usage.prompt_tokens, usage.completion_tokens, False, False
            else:
                self._flag(served.agent_id, reason)
                prompt, completion, estimated, flagged = estimate_prompt, estimate_completion, True, True
        if events is not None and served.outcome is not Outcome.OK:
            # Cut short (the client hung up, the agent failed): it pays for what reached it (one SSE event
            # is the role, the rest tokens).
            completion = min(completion, max(0, events - 1))
        return prompt, completion, estimated, flagged

    def _flag(self, agent_id: str | None, reason: str) -> None:
        if agent_id is None:
            return
        rep = self.reputation.setdefault(agent_id, _Reputation())
        rep.implausible += 1
        rep.last_reason = reason
        log.warning("agent %s reported implausible token counts (%s); charging the hub's estimate", agent_id, reason)

    # -- dynamic pricing ----------------------------------------------------------------------

    def reprice(self) -> None:
        """Recompute the dynamic multipliers of every opted-in credits group from supply and demand now."""
        fresh: dict[tuple[str, str], tuple[float, str]] = {}
        load = self.cluster_load() if self.cluster_load is not None else ClusterLoad({}, {})
        for group_id, billing in self.billing.items():
            if billing.mode != BillingMode.CREDITS or not billing.dynamic:
                continue
            busy: dict[str, list[int]] = {}
            for agent_id, slots in self.agents_in(group_id):
                if not slots.available or slots.draining:
                    continue
                in_flight = load.in_flight.get(agent_id, slots.in_flight)
                for model in slots.models:
                    pair = busy.setdefault(model, [0, 0])
                    pair[0] += in_flight
                    pair[1] += slots.max_concurrency
            for model, (in_flight, capacity) in busy.items():
                queued = self.scheduler.queued(model) + load.queued_elsewhere.get(model, 0)
                fresh[(group_id, model)] = dynamic_multiplier(queued, in_flight, capacity)
        self.multipliers = fresh
        self._dearest_cache.clear()
