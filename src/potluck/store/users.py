"""Users and their bearer tokens (login sessions and personal access tokens), stored hashed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from potluck._shared.ids import hash_secret, new_id, new_secret
from potluck.protocol.accounts import UserRole
from potluck.store.engine import uncut_write
from potluck.store.errors import ConflictError
from potluck.store.tables import user_tokens, users

SESSION_PREFIX = "pst-"
PAT_PREFIX = "ppat-"


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    role: UserRole
    password_hash: str | None
    created_at: datetime
    rpm: int | None = None
    """Requests per minute over all the user's keys (None: no limit)."""
    tpm: int | None = None
    """Tokens per minute over all the user's keys (None: no limit)."""


@dataclass(frozen=True, slots=True)
class UserToken:
    id: str
    user_id: str
    kind: str
    """``session`` (from login, expires) or ``pat`` (personal access token)."""
    name: str
    created_at: datetime
    expires_at: datetime | None


class UserRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @uncut_write
    async def create(
        self,
        username: str,
        password_hash: str | None,
        role: UserRole,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
    ) -> User:
        user = User(new_id("usr"), username, role, password_hash, datetime.now(UTC), rpm, tpm)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(users).values(
                        id=user.id,
                        username=username,
                        password_hash=password_hash,
                        role=role,
                        created_at=user.created_at,
                        rpm=rpm,
                        tpm=tpm,
                    )
                )
        except IntegrityError as exc:
            raise ConflictError(f"the username {username!r} is taken") from exc
        return user

    async def by_username(self, username: str) -> User | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.username == username))).mappings().first()
        return _user(row) if row else None

    async def all(self) -> list[User]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(users))).mappings().all()
        return [_user(row) for row in rows]

    async def get(self, user_id: str) -> User | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id))).mappings().first()
        return _user(row) if row else None

    @uncut_write
    async def create_token(self, user_id: str, kind: str, name: str, ttl: timedelta | None) -> tuple[UserToken, str]:
        """A new bearer token; the secret is returned once and only its hash is kept."""
        secret = new_secret(SESSION_PREFIX if kind == "session" else PAT_PREFIX)
        now = datetime.now(UTC)
        token = UserToken(new_id("utk"), user_id, kind, name, now, now + ttl if ttl else None)
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(user_tokens).values(
                    id=token.id,
                    user_id=user_id,
                    kind=kind,
                    name=name,
                    secret_hash=hash_secret(secret),
                    created_at=now,
                    expires_at=token.expires_at,
                )
            )
        return token, secret

    async def user_for_token(self, secret: str) -> User | None:
        """The user a live (unexpired, unrevoked) token belongs to."""
        now = datetime.now(UTC)
        query = (
            select(users)
            .join(user_tokens, user_tokens.c.user_id == users.c.id)
            .where(
                user_tokens.c.secret_hash == hash_secret(secret),
                user_tokens.c.revoked_at.is_(None),
                (user_tokens.c.expires_at.is_(None)) | (user_tokens.c.expires_at > now),
            )
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _user(row) if row else None

    @uncut_write
    async def revoke_secret(self, secret: str) -> bool:
        """Revoke the token with this secret (logout)."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(user_tokens)
                .where(user_tokens.c.secret_hash == hash_secret(secret), user_tokens.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        return bool(result.rowcount)

    @uncut_write
    async def revoke_token(self, user_id: str, token_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(user_tokens)
                .where(
                    user_tokens.c.id == token_id, user_tokens.c.user_id == user_id, user_tokens.c.revoked_at.is_(None)
                )
                .values(revoked_at=datetime.now(UTC))
            )
        return bool(result.rowcount)

    @uncut_write
    async def set_password(self, user_id: str, password_hash: str) -> None:
        """Replace a user's password hash."""
        async with self._engine.begin() as conn:
            await conn.execute(update(users).where(users.c.id == user_id).values(password_hash=password_hash))

    @uncut_write
    async def revoke_sessions(self, user_id: str, keep_secret: str | None = None) -> int:
        """Revoke a user's login sessions (not their personal tokens), but the one with ``keep_secret``; how many."""
        query = update(user_tokens).where(
            user_tokens.c.user_id == user_id, user_tokens.c.kind == "session", user_tokens.c.revoked_at.is_(None)
        )
        if keep_secret is not None:
            query = query.where(user_tokens.c.secret_hash != hash_secret(keep_secret))
        async with self._engine.begin() as conn:
            result = await conn.execute(query.values(revoked_at=datetime.now(UTC)))
        return int(result.rowcount)


def _user(row: Mapping[Any, Any]) -> User:
    return User(**{**row, "role": UserRole(row["role"])})
