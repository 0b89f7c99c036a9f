"""Types that bodies of several areas share."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Timestamp = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]
"""ISO 8601 in UTC with its offset, e.g. ``2026-11-22T04:02:30.225480+00:00``."""

AgentState = Literal["online", "draining", "offline"]
"""Connected and routed to; connected but taking no new work; not connected."""


class Reply(msgspec.Struct):
    """Base of response bodies (the hub builds them; nothing decodes them)."""


class KeyInfo(Reply):
    """An API key as listings show it: never the secret, only its display prefix."""

    id: str
    """The key's id (``key_…``)."""
    name: str
    """Its name, for people."""
    prefix: str
    """The first characters of the secret, to recognise it."""
    created_at: Timestamp
    """When it was made."""
    revoked_at: Timestamp | None
    """When it was revoked; null while it works."""
    last_used_at: Timestamp | None
    """When a request last used it; null when none has. Written with the hub's batches of usage records,
    so it trails the request by up to about a second."""


class KeyList(Reply):
    """API keys, oldest first."""

    keys: list[KeyInfo]
    """The keys, revoked ones included."""


class RevokedKey(Reply):
    """A revoked API key."""

    id: str
    """The key's id."""
    revoked_at: Timestamp | None
    """When it was revoked (the first time, when it was revoked before)."""


class Revoked(Reply):
    """A revoked token or invite."""

    id: str
    """Its id."""
    revoked: Literal[True] = True
    """Always true."""


class Named(msgspec.Struct):
    """A body with only a name."""

    name: str
    """The name, for people (surrounding whitespace is trimmed)."""
