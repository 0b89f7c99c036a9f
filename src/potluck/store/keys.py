"""API keys: shown once at creation, stored as SHA-256 with a display prefix."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from potluck._shared.ids import hash_secret, new_id, new_secret
from potluck.store.errors import NotFoundError
from potluck.store.tables import api_keys

KEY_PREFIX = "pk-"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    secret_hash: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewApiKey:
    key: ApiKey
    secret: str
    """The plaintext key; returned once, never stored."""


class KeyRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, name: str) -> NewApiKey:
        secret = new_secret(KEY_PREFIX)
        key = ApiKey(
            id=new_id("key"),
            name=name,
            prefix=secret[:10],
            secret_hash=hash_secret(secret),
            created_at=datetime.now(UTC),
            revoked_at=None,
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(api_keys).values(
                    id=key.id, name=key.name, prefix=key.prefix, secret_hash=key.secret_hash, created_at=key.created_at
                )
            )
        return NewApiKey(key=key, secret=secret)

    async def list(self, *, include_revoked: bool = True) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.created_at)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [ApiKey(**row) for row in rows]

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
        return ApiKey(**row)
