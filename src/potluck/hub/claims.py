"""Model claims a consumer can trust: who may serve which model name in a group, and who is held out.

A group's policy is ``open`` (any agent shared into it serves every name it lists: the default) or
``approved`` (an agent serves a name there only once an owner or admin of the group approved that
(agent, model) pair). Besides, an agent can be held out of routing for one model in one group:
*flagged* when its spot-check answers disagree with the other agents' (`potluck.hub.spotcheck`), or
*parked* when it served below the group's throughput floor repeatedly (`potluck.hub.throughput`).

`ClaimView` is the in-memory picture the scheduler reads on every request (no database round trip);
`Claims` changes it and the store together, so routing follows from the next request on. A request
reaches an agent through the groups both share; the agent may serve it if *one* of those groups
allows the claim (approved where required, and not held there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta

import msgspec

from potluck._shared.clock import Clock
from potluck._shared.waiting import uncut
from potluck.hub.access import AccessMap
from potluck.hub.errors import InvalidRequestError, NotFoundError
from potluck.hub.groups import MANAGERS, OWNER_ONLY, Groups
from potluck.hub.registry import Registry
from potluck.protocol.accounts import ClaimPolicy, HoldKind
from potluck.store.claims import ALL_MODELS, Approval, Change, ClaimEvent, Hold, ModelRule
from potluck.store.database import Store
from potluck.store.errors import is_database_unavailable
from potluck.store.users import User

__all__ = ["ALL_MODELS", "Approval", "Change", "ClaimEvent", "ClaimView", "Claims", "Hold", "ModelRule"]

log = logging.getLogger(__name__)

NOT_APPROVED = "not approved for this model in the request's groups"
EVENTS_SHOWN = 1000
"""Hold events an owner reads at most (the newest; the database keeps them all)."""


Lift = tuple[str, str, str, HoldKind | None]
"""(group, agent, model, the kind lifted or None: every kind)."""


@dataclass(slots=True)
class ClaimView:
    """Policies, approvals, holds and rules of every group, in memory (see the module docstring)."""

    policies: dict[str, ClaimPolicy] = field(default_factory=dict)
    """Group -> policy, for groups not ``open``."""
    approved: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    """Group -> approved (agent, model) pairs."""
    holds: dict[tuple[str, str, str], dict[HoldKind, Hold]] = field(default_factory=dict)
    """(group, agent, model) -> its holds by kind."""
    rules: dict[tuple[str, str], ModelRule] = field(default_factory=dict)
    """(group, model or `ALL_MODELS`) -> the group's rule."""
    unsaved: list[Hold | Lift] = field(default_factory=list)
    """Holds taken and lifted here that the store has not written yet, oldest first."""

    def refusal(
        self, agent_id: str, agent_groups: frozenset[str] | None, model: str, groups: frozenset[str] | None
    ) -> str:
        """Why the agent may not serve ``model`` to a request reaching it through ``groups`` ('' when it may)."""
        if not self.policies and not self.holds:
            return ""  # every group open and nobody held: the common case costs one check
        if agent_groups is None or groups is None:
            return ""  # no isolation (single-tenant tests and simulators)
        why = ""
        few, many = (groups, agent_groups) if len(groups) <= len(agent_groups) else (agent_groups, groups)
        for group_id in few:  # no set built: this runs for every candidate of every request
            if group_id not in many:
                continue
            if self.policies.get(group_id) is ClaimPolicy.APPROVED and (agent_id, model) not in self.approved.get(
                group_id, ()
            ):
                why = NOT_APPROVED
                continue
            held = self.holds.get((group_id, agent_id, model)) if self.holds else None
            if held:
                why = next(iter(held.values())).reason
                continue
            return ""
        return why

    def policy(self, group_id: str) -> ClaimPolicy:
        return self.policies.get(group_id, ClaimPolicy.OPEN)

    def rule(self, group_id: str, model: str) -> ModelRule | None:
        """The group's rule for the model, else its rule for every model."""
        return self.rules.get((group_id, model)) or self.rules.get((group_id, ALL_MODELS))

    def holds_of(self, agent_id: str) -> list[Hold]:
        return [h for (_, a, _), held in self.holds.items() if a == agent_id for h in held.values()]

    def load(
        self,
        policies: dict[str, ClaimPolicy],
        approvals: Iterable[Approval],
        holds: Iterable[Hold],
        rules: Iterable[ModelRule],
    ) -> None:
        self.policies = {g: p for g, p in policies.items() if p is not ClaimPolicy.OPEN}
        for approval in approvals:
            self.approved.setdefault(approval.group_id, set()).add((approval.agent_id, approval.model))
        for hold in holds:
            self.holds.setdefault((hold.group_id, hold.agent_id, hold.model), {})[hold.kind] = hold
        self.rules = {(r.group_id, r.model): r for r in rules}

    def adopt(self, fresh: ClaimView) -> None:
        """Take the store's picture (cluster mode: another replica changed claims), with this hub's holds and
        lifts that are not written yet on top, so a reload never forgets them."""
        self.policies, self.approved, self.holds, self.rules = fresh.policies, fresh.approved, fresh.holds, fresh.rules
        for change in self.unsaved:
            if isinstance(change, Hold):
                self.put(change)
            else:
                self.lift(*change)

    def put(self, hold: Hold) -> None:
        self.holds.setdefault((hold.group_id, hold.agent_id, hold.model), {})[hold.kind] = hold

    def lift(self, group_id: str, agent_id: str, model: str, kind: HoldKind | None) -> list[Hold]:
        """Drop the pair's holds of ``kind`` (None: all); those dropped."""
        held = self.holds.get((group_id, agent_id, model), {})
        lifted = [held.pop(k) for k in [k for k in held if kind is None or k is kind]]
        if not held:
            self.holds.pop((group_id, agent_id, model), None)
        return lifted


class Sample(msgspec.Struct, frozen=True, gc=False):
    """A request an agent served in full, for the throughput floor and the spot checks' budget."""

    agent_id: str
    model: str
    key_groups: frozenset[str] | None
    """The groups the request's key reaches agents through (None: no isolation)."""
    completion_tokens: int
    """Tokens generated over ``seconds`` (a stream's first token excluded: it measures the prompt's prefill)."""
    seconds: float
    """Decode time: from the first byte to the end for a stream, the whole answer otherwise."""

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else float("inf")

    @classmethod
    def of(
        cls,
        agent_id: str,
        model: str,
        key_groups: frozenset[str] | None,
        *,
        completion_tokens: int,
        stream: bool,
        started_at: float,
        first_byte_at: float | None,
        now: float,
    ) -> Sample:
        if stream and first_byte_at is not None:
            return cls(agent_id, model, key_groups, max(0, completion_tokens - 1), now - first_byte_at)
        return cls(agent_id, model, key_groups, completion_tokens, now - started_at)


@dataclass(frozen=True, slots=True)
class GroupClaims:
    """A group's claims, as its members see them."""

    policy: ClaimPolicy
    approvals: list[Approval]
    holds: list[Hold]
    rules: list[ModelRule]


class Claims:
    """Changes a group's claims in the store and in `ClaimView` together; routing follows at once."""

    def __init__(
        self,
        store: Store,
        view: ClaimView,
        access: AccessMap,
        registry: Registry,
        groups: Groups,
        clock: Clock,
        *,
        retry_interval: float = 1.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self.view = view
        self._access = access
        self._registry = registry
        self._groups = groups
        self._retry_interval = retry_interval
        self._unsaved: deque[tuple[Hold | Lift, list[ClaimEvent]]] = deque()
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()
        self.on_saved: Callable[[], None] = lambda: None
        """Called once a hold or lift is in the store (cluster mode: the other replicas reload their caches)."""
        self.changing: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
        """Brackets each write (cluster mode: `Cluster.changing`, so a cache reload overlapping it is read again
        rather than put back the view before the write)."""

    @property
    def unsaved(self) -> int:
        """Holds taken or lifted that are not in the store yet."""
        return len(self._unsaved)

    def _save(self, change: Hold | Lift, events: list[ClaimEvent]) -> None:
        self.view.unsaved.append(change)
        self._unsaved.append((change, events))
        self._wake.set()

    async def run(self) -> None:
        """Write holds taken on the hot path (`hold`) to the store, in order (a lifecycle loop). While the database
        cannot be reached they wait, and are retried every ``retry_interval`` seconds: a loop that crashed would
        stop the hub."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await uncut(self.flush())  # a shutdown waits for the write under way
            except Exception as exc:
                if not is_database_unavailable(exc):
                    raise
                log.warning("writing %d claim holds failed, retrying: %s", len(self._unsaved), exc)
                retry = asyncio.Event()
                self._clock.call_later(self._retry_interval, retry.set)
                await retry.wait()
                self._wake.set()

    async def flush(self) -> None:
        """Write what `run` has not written yet, in order (shutdown, and a lift that must be stored before it
        answers). On a failure the change stays first in line and this raises."""
        async with self._writing:
            while self._unsaved:
                await self._write(*self._unsaved[0])
                self._unsaved.popleft()

    async def _write(self, change: Hold | Lift, events: list[ClaimEvent]) -> None:
        with self.changing():
            if isinstance(change, Hold):
                await self._store.claims.put_hold(change, events)
            else:
                await self._store.claims.clear_hold(*change, events=events)
            self.view.unsaved.remove(change)
        self.on_saved()

    def groups_for(self, agent_id: str, key_groups: frozenset[str] | None) -> frozenset[str]:
        """The groups a request of a key with ``key_groups`` reached the agent through."""
        shared = self._access.groups_of_agent(agent_id)
        return shared if key_groups is None else shared & key_groups

    @staticmethod
    async def load(store: Store) -> ClaimView:
        view = ClaimView()
        view.load(
            await store.claims.policies(),
            await store.claims.approvals(),
            await store.claims.holds(),
            await store.claims.rules(),
        )
        return view

    async def require_manager(self, user: User, group_id: str) -> None:
        """`NotFoundError` for a non-member, `PermissionDeniedError` unless the group's owner or an admin."""
        await self._groups.require_role(user, group_id, MANAGERS)

    async def of_group(self, user: User, group_id: str) -> GroupClaims:
        """Members read the group's policy, approvals, holds and rules."""
        await self._groups.require_role(user, group_id)
        view = self.view
        return GroupClaims(
            policy=view.policy(group_id),
            approvals=await self._store.claims.approvals(group_id),
            holds=[h for (g, _, _), held in view.holds.items() if g == group_id for h in held.values()],
            rules=[r for (g, _), r in view.rules.items() if g == group_id],
        )

    async def set_policy(self, user: User, group_id: str, policy: ClaimPolicy) -> ClaimPolicy:
        """The owner chooses who may serve which name: anyone (``open``) or approved pairs only."""
        await self._groups.require_role(user, group_id, OWNER_ONLY)
        await self._store.claims.set_policy(group_id, policy)
        if policy is ClaimPolicy.OPEN:
            self.view.policies.pop(group_id, None)
        else:
            self.view.policies[group_id] = policy
        self._registry.resync(self._agents_in(group_id))
        return policy

    async def approve(self, user: User, group_id: str, agent_id: str, model: str) -> Approval:
        """An owner or admin lets this agent serve this name in the group."""
        await self._groups.require_role(user, group_id, MANAGERS)
        self._require_shared(group_id, agent_id)
        model = _model_name(model)
        approval = await self._store.claims.approve(group_id, agent_id, model, user.id)
        self.view.approved.setdefault(group_id, set()).add((agent_id, model))
        self._registry.resync([agent_id])  # queued requests it may now take start at once
        return approval

    async def revoke(self, user: User, group_id: str, agent_id: str, model: str) -> None:
        await self._groups.require_role(user, group_id, MANAGERS)
        if not await self._store.claims.revoke(group_id, agent_id, model):
            raise NotFoundError(f"Agent {agent_id} is not approved for {model} in this group")
        self.view.approved.get(group_id, set()).discard((agent_id, model))

    async def set_rule(
        self,
        user: User,
        group_id: str,
        model: str,
        *,
        min_tokens_per_s: float | None,
        reference: tuple[str, str] | None,
    ) -> ModelRule:
        """An owner or admin sets the model's throughput floor and pinned reference (None: none)."""
        await self._groups.require_role(user, group_id, MANAGERS)
        model = model.strip() or ALL_MODELS
        if min_tokens_per_s is not None and not 0 < min_tokens_per_s < 1e6:
            raise InvalidRequestError("`min_tokens_per_s` must be above 0", param="min_tokens_per_s")
        if reference is not None and model == ALL_MODELS:
            raise InvalidRequestError("A reference answer is pinned for one model, not all", param="reference")
        prompt, answer = reference if reference is not None else (None, None)
        rule = ModelRule(group_id, model, min_tokens_per_s, prompt, answer)
        await self._store.claims.put_rule(rule)
        if min_tokens_per_s is None and reference is None:
            self.view.rules.pop((group_id, model), None)
        else:
            self.view.rules[(group_id, model)] = rule
        return rule

    async def lift(self, user: User, group_id: str, agent_id: str, model: str) -> int:
        """An owner or admin puts a flagged or parked agent back in routing for the model; how many holds."""
        await self._groups.require_role(user, group_id, MANAGERS)
        lifted = self.release(group_id, agent_id, model, None)
        if not lifted:
            raise NotFoundError(f"Agent {agent_id} is not held for {model} in this group")
        await self.flush()
        return lifted

    # -- the hub's own holds (spot checks, throughput floor) ----------------------------------------

    def hold(self, group_id: str, agent_id: str, model: str, kind: HoldKind, reason: str) -> Hold:
        """Take the agent out of routing for ``model`` in the group from now on; its owner sees ``reason``
        (in their agent listing, and in the hub's log). `run` writes it to the store."""
        hold = Hold(group_id, agent_id, model, kind, reason, self._clock.wall())
        self.view.put(hold)
        self._save(hold, [ClaimEvent(hold.since, Change.HELD, group_id, agent_id, model, kind, reason)])
        owner = self._access.agent_owner.get(agent_id)
        log.warning(
            "agent %s (owner %s) %s for %s in group %s: %s",
            agent_id,
            self._access.usernames.get(owner or "", owner),
            kind,
            model,
            group_id,
            reason,
        )
        return hold

    def release(self, group_id: str, agent_id: str, model: str, kind: HoldKind | None) -> int:
        """Lift the pair's holds (of one kind, or all) from now on; how many were lifted."""
        lifted = self.view.lift(group_id, agent_id, model, kind)
        now = self._clock.wall()
        for gone in lifted:
            log.info("agent %s back in routing for %s in group %s (%s lifted)", agent_id, model, group_id, gone.kind)
        if lifted:
            events = [ClaimEvent(now, Change.LIFTED, group_id, agent_id, model, h.kind, h.reason) for h in lifted]
            self._save((group_id, agent_id, model, kind), events)
            self._registry.resync([agent_id])
        return len(lifted)

    async def events_of(self, user: User) -> list[ClaimEvent]:
        """The latest hold events of the user's agents, newest first: those in the database (every replica's, and
        from before a restart) after those not written yet."""
        mine = {agent_id for agent_id, owner in self._access.agent_owner.items() if owner == user.id}
        unsaved = [e for _change, events in reversed(self._unsaved) for e in reversed(events) if e.agent_id in mine]
        stored = await self._store.claims.events(mine, EVENTS_SHOWN)
        # One written while the query ran may be in both.
        return (unsaved + [e for e in stored if e not in unsaved])[:EVENTS_SHOWN]

    def held(self, group_id: str, agent_id: str, model: str, kind: HoldKind) -> Hold | None:
        return self.view.holds.get((group_id, agent_id, model), {}).get(kind)

    def expire(self, kind: HoldKind, older_than_s: float) -> int:
        """Lift holds of ``kind`` older than ``older_than_s`` (a parked agent's cool-down); how many."""
        cutoff = self._clock.wall() - timedelta(seconds=older_than_s)
        due = [h for held in self.view.holds.values() for h in held.values() if h.kind is kind and h.since <= cutoff]
        for hold in due:
            self.release(hold.group_id, hold.agent_id, hold.model, kind)
        return len(due)

    # -- helpers --------------------------------------------------------------------------------------

    def _agents_in(self, group_id: str) -> list[str]:
        return [a for a, groups in self._access.agent_groups.items() if group_id in groups]

    def _require_shared(self, group_id: str, agent_id: str) -> None:
        if group_id not in self._access.agent_groups.get(agent_id, ()):
            raise NotFoundError(f"Agent {agent_id} is not shared into this group")


def _model_name(model: str) -> str:
    model = model.strip()
    if not 1 <= len(model) <= 200 or model == ALL_MODELS:
        raise InvalidRequestError("`model` must be a model name of 1 to 200 characters", param="model")
    return model
