"""API keys: shown once at creation, stored as SHA-256 with a display prefix."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from potluck._shared.ids import hash_secret, new_id, new_secret
from potluck.store.engine import uncut_write
from potluck.store.errors import NotFoundError
from potluck.store.tables import api_keys, key_groups

KEY_PREFIX = "pk-"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    secret_hash: str
    created_at: datetime
    revoked_at: datetime | None
    user_id: str | None = None
    """Owner; None for keys made before accounts existed (they belong to the admin user)."""
    groups: tuple[str, ...] | None = None
    """The groups the key may use; None: every group its owner is in, now and later."""
    models: tuple[str, ...] | None = None
    """Models the key may use; None: any."""
    expires_at: datetime | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    priority: int = 1
    """Weight in fair queueing: a key of priority 2 gets twice the queue turns of one of priority 1."""
    prefer_own: bool = False
    """Route to the owner's own agents first when they can take the request."""
    last_used_at: datetime | None = None
    """When a request last used it, as of the last usage batch written (None: never)."""


@dataclass(frozen=True, slots=True)
class NewApiKey:
    key: ApiKey
    secret: str
    """The plaintext key; returned once, never stored."""


class KeyRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @uncut_write
    async def create(
        self,
        name: str,
        *,
        user_id: str | None = None,
        groups: Sequence[str] | None = None,
        models: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        max_concurrency: int | None = None,
        priority: int = 1,
        prefer_own: bool = False,
    ) -> NewApiKey:
        secret = new_secret(KEY_PREFIX)
        key = ApiKey(
            id=new_id("key"),
            name=name,
            prefix=secret[:10],
            secret_hash=hash_secret(secret),
            created_at=datetime.now(UTC),
            revoked_at=None,
            user_id=user_id,
            groups=None if groups is None else tuple(groups),
            models=None if models is None else tuple(models),
            expires_at=expires_at,
            rpm=rpm,
            tpm=tpm,
            max_concurrency=max_concurrency,
            priority=priority,
            prefer_own=prefer_own,
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(api_keys).values(
                    id=key.id,
                    name=key.name,
                    prefix=key.prefix,
                    secret_hash=key.secret_hash,
                    created_at=key.created_at,
                    user_id=user_id,
                    all_groups=groups is None,
                    models=None if models is None else json.dumps(list(models)),
                    expires_at=expires_at,
                    rpm=rpm,
                    tpm=tpm,
                    max_concurrency=max_concurrency,
                    priority=priority,
                    prefer_own=prefer_own,
                )
            )
            if groups:
                await conn.execute(insert(key_groups), [{"key_id": key.id, "group_id": g} for g in groups])
        return NewApiKey(key=key, secret=secret)

    async def list(self, *, include_revoked: bool = True, user_id: str | None = None) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.created_at)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        if user_id is not None:
            query = query.where(api_keys.c.user_id == user_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
            scoped: dict[str, list[str]] = {}
            for key_id, group_id in (await conn.execute(select(key_groups.c.key_id, key_groups.c.group_id))).all():
                scoped.setdefault(str(key_id), []).append(str(group_id))
        return [_key(row, scoped) for row in rows]

    @uncut_write
    async def revoke(self, key_id: str) -> ApiKey:
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=now)
            )
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).mappings().first()
        if row is None:
            raise NotFoundError(f"no key {key_id}")
        del result
        return _key(row, {})


def _key(row: Mapping[Any, Any], scoped: dict[str, list[str]]) -> ApiKey:
    fields = dict(row)
    all_groups = fields.pop("all_groups", True)
    models = fields.pop("models", None)
    return ApiKey(
        **fields,
        groups=None if all_groups else tuple(scoped.get(str(fields["id"]), ())),
        models=None if models is None else tuple(json.loads(models)),
    )
