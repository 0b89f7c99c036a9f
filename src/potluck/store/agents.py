"""Agents and their one-time enrolment tokens."""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from potluck._shared.ids import hash_secret, new_id, new_secret
from potluck.store.engine import uncut_write
from potluck.store.errors import ConflictError, StoreError
from potluck.store.tables import agent_groups, agent_tokens, agents

TOKEN_PREFIX = "pat-"  # noqa: S105 - a prefix, not a secret
NAME_MAX = 200
"""The names column's width; an agent chooses its own name, so a longer one is cut to fit."""


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    name: str
    public_key: bytes
    created_at: datetime
    last_seen_at: datetime | None
    drained: bool = False
    """An admin took it out of rotation (kept across restarts)."""
    owner_id: str | None = None
    """The user whose enrolment token it used; None for agents enrolled before accounts existed."""
    controls: str | None = None
    """The owner's controls as JSON (hub/controls.py reads it): pause, schedule, own requests only/first."""
    served_models: str | None = None
    """JSON list of the models it served while connected; None once it left (kept through a hub restart)."""


@dataclass(frozen=True, slots=True)
class NewAgentToken:
    id: str
    name: str
    token: str
    """The plaintext enrolment token; returned once, never stored."""
    created_at: datetime


class AgentRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @uncut_write
    async def create_token(self, name: str, owner_id: str | None = None) -> NewAgentToken:
        token = new_secret(TOKEN_PREFIX)
        created = NewAgentToken(id=new_id("tok"), name=name, token=token, created_at=datetime.now(UTC))
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(agent_tokens).values(
                    id=created.id,
                    name=name,
                    secret_hash=hash_secret(token),
                    created_at=created.created_at,
                    owner_id=owner_id,
                )
            )
        return created

    @uncut_write
    async def enrol(self, token: str, public_key: bytes, name: str = "") -> Agent:
        """Spend a one-time token on a new agent with this key. Race-safe: one winner per token.

        The agent is named ``name``, or, when that is empty, after the token (its owner named the token
        for the machine it is meant for). Raises ConflictError when the token is unknown or used, or
        the key is already enrolled.
        """
        now = datetime.now(UTC)
        agent = Agent(id=new_id("agt"), name=name, public_key=public_key, created_at=now, last_seen_at=now)
        try:
            async with self._engine.begin() as conn:
                # Conditional UPDATE: whichever transaction flips used_at first wins the token.
                spent = await conn.execute(
                    update(agent_tokens)
                    .where(agent_tokens.c.secret_hash == hash_secret(token), agent_tokens.c.used_at.is_(None))
                    .values(used_at=now)
                )
                if spent.rowcount != 1:
                    raise ConflictError("enrolment token is unknown or already used")
                spent_token = (
                    await conn.execute(
                        select(agent_tokens.c.owner_id, agent_tokens.c.name).where(
                            agent_tokens.c.secret_hash == hash_secret(token)
                        )
                    )
                ).one()
                owner_id = spent_token.owner_id
                agent = replace(agent, owner_id=owner_id, name=(name or spent_token.name or "agent")[:NAME_MAX])
                await conn.execute(
                    insert(agents).values(
                        id=agent.id,
                        name=agent.name,
                        public_key=public_key,
                        created_at=now,
                        last_seen_at=now,
                        owner_id=owner_id,
                    )
                )
                await conn.execute(
                    update(agent_tokens)
                    .where(agent_tokens.c.secret_hash == hash_secret(token))
                    .values(agent_id=agent.id)
                )
        except IntegrityError as exc:
            raise ConflictError("this agent key is already enrolled") from exc
        return agent

    async def by_public_key(self, public_key: bytes) -> Agent | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(agents).where(agents.c.public_key == public_key))).mappings().first()
        return Agent(**row) if row else None

    async def list(self) -> list[Agent]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(agents).order_by(agents.c.created_at))).mappings().all()
        return [Agent(**row) for row in rows]

    @uncut_write
    async def rename(self, agent_id: str, name: str) -> bool:
        """Give an enrolled agent another display name (its ``--name``); False if there is no such agent."""
        async with self._engine.begin() as conn:
            result = await conn.execute(update(agents).where(agents.c.id == agent_id).values(name=name[:NAME_MAX]))
        return bool(result.rowcount)

    @uncut_write
    async def set_drained(self, agent_id: str, drained: bool) -> bool:
        """Take an agent out of rotation, or put it back; False if there is no such agent."""
        async with self._engine.begin() as conn:
            result = await conn.execute(update(agents).where(agents.c.id == agent_id).values(drained=drained))
        return bool(result.rowcount)

    @uncut_write
    async def touch(self, seen: dict[str, datetime]) -> None:
        """Record last-seen times for many agents in one transaction."""
        if not seen:
            return
        try:
            async with self._engine.begin() as conn:
                for agent_id, when in seen.items():
                    await conn.execute(update(agents).where(agents.c.id == agent_id).values(last_seen_at=when))
        except SQLAlchemyError as exc:
            raise StoreError(str(exc)) from exc

    @uncut_write
    async def set_serving(self, agent_id: str, models: builtins.list[str] | None) -> None:
        """The models a connected agent serves (kept through a hub restart); None: it left."""
        value = None if models is None else json.dumps(sorted(models))
        try:
            async with self._engine.begin() as conn:
                await conn.execute(update(agents).where(agents.c.id == agent_id).values(served_models=value))
        except SQLAlchemyError as exc:
            raise StoreError(str(exc)) from exc

    async def serving(self) -> dict[str, builtins.list[str]]:
        """Agent id -> the models it served, for every agent that was connected when the hub last stopped."""
        query = select(agents.c.id, agents.c.served_models).where(agents.c.served_models.is_not(None))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {agent_id: list(json.loads(models)) for agent_id, models in rows}

    @uncut_write
    async def set_controls(self, agent_id: str, controls_json: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(update(agents).where(agents.c.id == agent_id).values(controls=controls_json))

    @uncut_write
    async def share(self, agent_id: str, group_id: str) -> None:
        """Let the group's keys reach this agent (idempotent)."""
        async with self._engine.begin() as conn:
            exists = (
                await conn.execute(
                    select(agent_groups.c.agent_id).where(
                        agent_groups.c.agent_id == agent_id, agent_groups.c.group_id == group_id
                    )
                )
            ).first()
            if exists is None:
                await conn.execute(insert(agent_groups).values(agent_id=agent_id, group_id=group_id))

    @uncut_write
    async def unshare(self, agent_id: str, group_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(agent_groups).where(agent_groups.c.agent_id == agent_id, agent_groups.c.group_id == group_id)
            )
        return bool(result.rowcount)

    async def sharing(self) -> dict[str, set[str]]:
        """Agent id -> the groups it is shared into."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(agent_groups.c.agent_id, agent_groups.c.group_id))).all()
        shared: dict[str, set[str]] = {}
        for agent_id, group_id in rows:
            shared.setdefault(str(agent_id), set()).add(str(group_id))
        return shared
