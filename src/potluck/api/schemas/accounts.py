"""Bodies of accounts, sessions, personal tokens and user API keys (``/api/...``, ``POST /admin/users``)."""

from __future__ import annotations

from typing import Literal

import msgspec

from potluck.api.schemas.common import KeyInfo, Reply, Timestamp
from potluck.hub.bounds import Concurrency, KeyLifetime, Priority, Rate
from potluck.protocol.accounts import UserRole

# -- requests -----------------------------------------------------------------------------------------


class NewUser(msgspec.Struct):
    """A new account (admin only)."""

    username: str
    """3 to 64 of ``A-Z a-z 0-9 _ . -``."""
    password: str
    """8 to 1024 characters; stored as an argon2id hash."""
    role: UserRole = UserRole.USER
    """``user`` or ``admin`` (may use the admin API)."""
    rpm: Rate | None = None
    """Requests per minute over all the user's keys; null: no limit."""
    tpm: Rate | None = None
    """Tokens per minute over all the user's keys; null: no limit."""


class Login(msgspec.Struct):
    """A username and its password."""

    username: str
    """The account's username."""
    password: str
    """Its password."""


class NewKey(msgspec.Struct):
    """A new API key you own, and its limits."""

    name: str
    """Its name, for people."""
    groups: list[str] | None = None
    """Groups it reaches (each one you are in); null: every group you are in, now and later."""
    models: list[str] | None = None
    """Models it may use; null: all."""
    expires_in_s: KeyLifetime | None = None
    """Seconds until it expires; null: never."""
    rpm: Rate | None = None
    """Requests per minute; null: no limit."""
    tpm: Rate | None = None
    """Tokens per minute; null: no limit."""
    max_concurrency: Concurrency | None = None
    """Requests in flight at once; null: no limit."""
    priority: Priority = 1
    """Weight in the fair queue, 1 to 100."""
    prefer_own: bool = False
    """Route to your own agents first when they can take the request."""


# -- answers ------------------------------------------------------------------------------------------


class Account(Reply):
    """A user account."""

    id: str
    """The user's id (``usr_…``)."""
    username: str
    """Their username."""
    role: str
    """``admin`` (may use the admin API) or ``user``."""


class Session(Reply):
    """A session token from a login."""

    token: str
    """Send it as ``Authorization: Bearer`` to ``/api/...``."""
    expires_at: Timestamp
    """When it stops working."""


class LoggedOut(Reply):
    """The token the request carried is revoked."""

    logged_out: Literal[True] = True
    """Always true."""


class PersonalToken(Reply):
    """A personal access token; shown only here."""

    id: str
    """Its id (``utk_…``), to revoke it with."""
    token: str
    """The secret."""


class CreatedUserKey(Reply):
    """A new API key you own; ``key`` is shown only here."""

    id: str
    """The key's id (``key_…``)."""
    name: str
    """Its name."""
    key: str
    """The secret (``pk-…``)."""
    groups: tuple[str, ...] | None
    """Groups it reaches; null: every group you are in, now and later."""
    models: tuple[str, ...] | None
    """Models it may use; null: all."""
    expires_at: Timestamp | None
    """When it expires; null: never."""
    rpm: int | None
    """Requests per minute; null: no limit."""
    tpm: int | None
    """Tokens per minute; null: no limit."""
    max_concurrency: int | None
    """Requests in flight at once; null: no limit."""
    priority: int
    """Weight in the fair queue."""
    prefer_own: bool
    """Routed to your own agents first."""
    created_at: Timestamp
    """When it was made."""


class UserKeyInfo(KeyInfo):
    """One of your API keys: never the secret."""

    groups: tuple[str, ...] | None
    """Groups it reaches; null: every group you are in."""


class UserKeyList(Reply):
    """Your API keys, oldest first."""

    keys: list[UserKeyInfo]
    """The keys, revoked ones included."""
