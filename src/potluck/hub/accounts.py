"""User accounts: creating users, logging in and out, and personal access tokens.

Passwords are hashed with argon2id (OWASP's minimum parameters, hashed off the event loop). A
failed login costs the same whether or not the user exists, and says the same thing. Groups,
invites, keys, agents, aliases and credits each have their own service beside this one.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from potluck.hub.access import AccessMap
from potluck.hub.errors import AuthError, ConflictError, InvalidRequestError, NotFoundError
from potluck.hub.limits import Limits
from potluck.hub.throttle import LoginThrottle
from potluck.protocol.accounts import UserRole
from potluck.store import errors as store_errors
from potluck.store.database import Store
from potluck.store.users import User

__all__ = ["Accounts", "User", "password_hasher"]

USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,64}$")
SESSION_TTL = timedelta(days=7)
_BAD_LOGIN = "Wrong username or password"


def password_hasher() -> PasswordHasher:
    # argon2id, m=19 MiB, t=2, p=1: OWASP's minimum; about 20 ms here.
    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


class Accounts:
    """Users and their bearer tokens (login sessions and personal access tokens)."""

    def __init__(
        self,
        store: Store,
        access: AccessMap,
        throttle: LoginThrottle,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._store = store
        self._access = access
        self._throttle = throttle
        self._hasher = hasher or password_hasher()
        self._dummy_hash: str | None = None

    async def create_user(
        self, username: str, password: str, role: UserRole, *, rpm: int | None = None, tpm: int | None = None
    ) -> User:
        """A new user; its limits and role apply from its first request on. `ConflictError` if the name is taken."""
        if not USERNAME.match(username):
            raise InvalidRequestError("`username` must be 3 to 64 of A-Z a-z 0-9 _ . -", param="username")
        if not 8 <= len(password) <= 1024:
            raise InvalidRequestError("`password` must be 8 to 1024 characters", param="password")
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        try:
            user = await self._store.users.create(username, password_hash, role, rpm=rpm, tpm=tpm)
        except store_errors.ConflictError as exc:
            raise ConflictError(str(exc)) from None
        self._access.user_limits[user.id] = Limits(rpm=rpm, tpm=tpm)
        self._access.usernames[user.id] = user.username
        if user.role == UserRole.ADMIN:
            self._access.admins.add(user.id)
        return user

    async def all(self) -> list[User]:
        """Every account, by username (the admin's listing)."""
        return sorted(await self._store.users.all(), key=lambda user: user.username)

    async def login(self, username: str, password: str, *, address: str | None = None) -> tuple[str, datetime]:
        """A session token and its expiry. ``address``: the client's, counted against password guessing."""
        self._throttle.check(username, address)
        try:
            user = await self._verified(username, password)
        except AuthError:
            self._throttle.failed(username, address)
            raise
        self._throttle.succeeded(username)
        return await self.start_session(user)

    async def _verified(self, username: str, password: str) -> User:
        user = await self._store.users.by_username(username)
        stored = user.password_hash if user is not None else None
        if stored is None:
            # Verify against a throwaway hash anyway, so timing does not tell which usernames exist.
            if self._dummy_hash is None:
                self._dummy_hash = await asyncio.to_thread(self._hasher.hash, "not the password")
            stored = self._dummy_hash
        try:
            await asyncio.to_thread(self._hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            raise AuthError(_BAD_LOGIN) from None
        if user is None or user.password_hash is None:
            raise AuthError(_BAD_LOGIN)
        return user

    async def start_session(self, user: User) -> tuple[str, datetime]:
        """A new login session for a user already proven (by password, or by signing up just now)."""
        token, secret = await self._store.users.create_token(user.id, "session", "login", SESSION_TTL)
        return secret, token.expires_at or datetime.now(UTC) + SESSION_TTL

    async def change_password(self, user: User, old: str, new: str, *, keep_session: str | None) -> None:
        """Set a new password after checking the old one; the user's other login sessions end."""
        if user.password_hash is None:
            raise AuthError("This account has no password to change")
        self._throttle.check(user.username, None)
        try:
            await asyncio.to_thread(self._hasher.verify, user.password_hash, old)
        except (VerificationError, InvalidHashError):
            self._throttle.failed(user.username, None)
            raise AuthError("The current password is wrong") from None
        if not 8 <= len(new) <= 1024:
            raise InvalidRequestError("The new password must be 8 to 1024 characters", param="password")
        await self._store.users.set_password(user.id, await asyncio.to_thread(self._hasher.hash, new))
        await self._store.users.revoke_sessions(user.id, keep_session)

    async def authenticate(self, bearer: str | None) -> User:
        """The user a live session or personal token belongs to; `AuthError` otherwise."""
        if not bearer:
            raise AuthError("Missing token: send `Authorization: Bearer <token>` (from POST /api/login)")
        user = await self._store.users.user_for_token(bearer)
        if user is None:
            raise AuthError("Invalid, expired or revoked token")
        return user

    async def is_admin(self, bearer: str) -> bool:
        """Whether a user token belongs to a user with the admin role (admin endpoints accept it)."""
        user = await self._store.users.user_for_token(bearer)
        return user is not None and user.role == UserRole.ADMIN

    async def logout(self, bearer: str | None) -> None:
        """Revoke the token the request came with."""
        await self.authenticate(bearer)
        if bearer:
            await self._store.users.revoke_secret(bearer)

    async def create_personal_token(self, user: User, name: str) -> tuple[str, str]:
        """A personal access token (no expiry): its id and its secret, shown once."""
        token, secret = await self._store.users.create_token(user.id, "pat", name, None)
        return token.id, secret

    async def revoke_token(self, user: User, token_id: str) -> None:
        if not await self._store.users.revoke_token(user.id, token_id):
            raise NotFoundError(f"No token {token_id}")
