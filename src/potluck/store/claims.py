"""Model claims: each group's serving policy, approved (agent, model) pairs, holds (an agent out of
routing for a model in a group: flagged by spot checks or parked below a throughput floor) and
per-model rules (a minimum tokens/s, a pinned reference prompt and answer)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, Table, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from potluck.protocol.accounts import ClaimPolicy, HoldKind
from potluck.store.engine import uncut_write
from potluck.store.tables import claim_approvals, claim_events, claim_holds, claim_policies, claim_rules

ALL_MODELS = "*"
"""The model name of a rule that applies to every model of the group (a throughput floor)."""


@dataclass(frozen=True, slots=True)
class Approval:
    group_id: str
    agent_id: str
    model: str
    approved_by: str
    """The user who approved it."""
    approved_at: datetime


@dataclass(frozen=True, slots=True)
class Hold:
    group_id: str
    agent_id: str
    model: str
    kind: HoldKind
    reason: str
    """Why, in words its owner reads."""
    since: datetime


class Change(StrEnum):
    """What happened to an agent's standing for a model in a group."""

    HELD = "held"
    """Taken out of routing (flagged or parked)."""
    LIFTED = "lifted"
    """Back in routing (a group admin lifted it, or a park's cool-down ended)."""


@dataclass(frozen=True, slots=True)
class ClaimEvent:
    """An agent taken out of routing for a model in a group, or put back: what its owner is told."""

    at: datetime
    change: Change
    group_id: str
    agent_id: str
    model: str
    kind: HoldKind
    reason: str


@dataclass(frozen=True, slots=True)
class ModelRule:
    group_id: str
    model: str
    """A model name, or `ALL_MODELS`."""
    min_tokens_per_s: float | None = None
    """The group's throughput floor for the model (None: none)."""
    reference_prompt: str | None = None
    """A prompt whose greedy answer the group pinned; spot checks then compare against it."""
    reference_answer: str | None = None
    """The pinned answer to ``reference_prompt``."""


class ClaimRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def policies(self) -> dict[str, ClaimPolicy]:
        """Group -> policy, for groups that set one (the others are open)."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(claim_policies.c.group_id, claim_policies.c.policy))).all()
        return {str(r[0]): ClaimPolicy(r[1]) for r in rows}

    @uncut_write
    async def set_policy(self, group_id: str, policy: ClaimPolicy) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(claim_policies).where(claim_policies.c.group_id == group_id))
            await conn.execute(
                insert(claim_policies).values(group_id=group_id, policy=policy, updated_at=datetime.now(UTC))
            )

    async def approvals(self, group_id: str | None = None) -> list[Approval]:
        query = select(claim_approvals).order_by(claim_approvals.c.approved_at)
        if group_id is not None:
            query = query.where(claim_approvals.c.group_id == group_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [Approval(r["group_id"], r["agent_id"], r["model"], r["approved_by"], r["approved_at"]) for r in rows]

    @uncut_write
    async def approve(self, group_id: str, agent_id: str, model: str, by: str) -> Approval:
        """Approve (again) the pair; the approval row."""
        approval = Approval(group_id, agent_id, model, by, datetime.now(UTC))
        async with self._engine.begin() as conn:
            await conn.execute(delete(claim_approvals).where(*_pair(claim_approvals, group_id, agent_id, model)))
            await conn.execute(
                insert(claim_approvals).values(
                    group_id=group_id, agent_id=agent_id, model=model, approved_by=by, approved_at=approval.approved_at
                )
            )
        return approval

    @uncut_write
    async def revoke(self, group_id: str, agent_id: str, model: str) -> bool:
        """Withdraw an approval; False when there was none."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(claim_approvals).where(*_pair(claim_approvals, group_id, agent_id, model))
            )
        return bool(result.rowcount)

    async def holds(self) -> list[Hold]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(claim_holds).order_by(claim_holds.c.since))).mappings().all()
        return [
            Hold(r["group_id"], r["agent_id"], r["model"], HoldKind(r["kind"]), r["reason"], r["since"]) for r in rows
        ]

    @uncut_write
    async def put_hold(self, hold: Hold, events: Sequence[ClaimEvent] = ()) -> None:
        """Store a hold, and the events that tell its owner, in one transaction."""
        where = (*_pair(claim_holds, hold.group_id, hold.agent_id, hold.model), claim_holds.c.kind == hold.kind)
        async with self._engine.begin() as conn:
            await _add_events(conn, events)
            await conn.execute(delete(claim_holds).where(*where))
            await conn.execute(
                insert(claim_holds).values(
                    group_id=hold.group_id,
                    agent_id=hold.agent_id,
                    model=hold.model,
                    kind=hold.kind,
                    reason=hold.reason,
                    since=hold.since,
                )
            )

    @uncut_write
    async def clear_hold(
        self, group_id: str, agent_id: str, model: str, kind: HoldKind | None = None, events: Sequence[ClaimEvent] = ()
    ) -> int:
        """Lift the holds of the pair (of one kind, or all), storing ``events`` in the same transaction; how many
        were lifted."""
        where = [*_pair(claim_holds, group_id, agent_id, model)]
        if kind is not None:
            where.append(claim_holds.c.kind == kind)
        async with self._engine.begin() as conn:
            await _add_events(conn, events)
            result = await conn.execute(delete(claim_holds).where(*where))
        return int(result.rowcount or 0)

    async def events(self, agent_ids: Collection[str], limit: int) -> list[ClaimEvent]:
        """The latest ``limit`` events of these agents, newest first (every replica's: they share the database)."""
        if not agent_ids:
            return []
        c = claim_events.c
        query = select(claim_events).where(c.agent_id.in_(sorted(agent_ids))).order_by(c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            ClaimEvent(
                r["at"], Change(r["change"]), r["group_id"], r["agent_id"], r["model"], HoldKind(r["kind"]), r["reason"]
            )
            for r in rows
        ]

    async def rules(self, group_id: str | None = None) -> list[ModelRule]:
        query = select(claim_rules).order_by(claim_rules.c.group_id, claim_rules.c.model)
        if group_id is not None:
            query = query.where(claim_rules.c.group_id == group_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            ModelRule(r["group_id"], r["model"], r["min_tokens_per_s"], r["reference_prompt"], r["reference_answer"])
            for r in rows
        ]

    @uncut_write
    async def put_rule(self, rule: ModelRule) -> None:
        """Set the rule of a (group, model); a rule with nothing in it is removed."""
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(claim_rules).where(claim_rules.c.group_id == rule.group_id, claim_rules.c.model == rule.model)
            )
            if rule.min_tokens_per_s is None and rule.reference_prompt is None:
                return
            await conn.execute(
                insert(claim_rules).values(
                    group_id=rule.group_id,
                    model=rule.model,
                    min_tokens_per_s=rule.min_tokens_per_s,
                    reference_prompt=rule.reference_prompt,
                    reference_answer=rule.reference_answer,
                    updated_at=datetime.now(UTC),
                )
            )


async def _add_events(conn: AsyncConnection, events: Sequence[ClaimEvent]) -> None:
    if events:
        rows = [
            {
                "at": e.at,
                "change": e.change.value,
                "group_id": e.group_id,
                "agent_id": e.agent_id,
                "model": e.model,
                "kind": e.kind.value,
                "reason": e.reason,
            }
            for e in events
        ]
        await conn.execute(insert(claim_events), rows)


def _pair(table: Table, group_id: str, agent_id: str, model: str) -> tuple[ColumnElement[bool], ...]:
    columns = table.c
    return (columns.group_id == group_id, columns.agent_id == agent_id, columns.model == model)
