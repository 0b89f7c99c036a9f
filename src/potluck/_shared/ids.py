"""Identifiers and secrets: random, URL-safe, prefixed by what they name."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets


def new_id(prefix: str) -> str:
    """A random identifier such as ``key_3f9a...``; 96 bits of entropy."""
    return f"{prefix}_{secrets.token_hex(12)}"


_REQUEST_IDS_AT_ONCE = 256
_request_ids: list[str] = []
"""Request ids made ahead, from one read of the system's random source (one per request cost a system call and a
few Python frames on the hub's hot path). A list, so that ``pop`` stays safe from any thread."""
os.register_at_fork(after_in_child=_request_ids.clear)  # a child never hands out its parent's ids


def new_request_id() -> str:
    """A request's id, ``req_`` and 96 random bits in hex, as `new_id` makes them."""
    try:
        return _request_ids.pop()
    except IndexError:
        drawn = secrets.token_hex(12 * _REQUEST_IDS_AT_ONCE)
        _request_ids.extend(["req_" + drawn[i : i + 24] for i in range(24, len(drawn), 24)])
        return "req_" + drawn[:24]


def new_secret(prefix: str) -> str:
    """A bearer secret: 32 random bytes, URL-safe, with a recognisable prefix (``pk-``...)."""
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a high-entropy secret. Such secrets need no salt or slow hash."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, expected_hash: str) -> bool:
    """Constant-time check of a secret against its stored hash."""
    return hmac.compare_digest(hash_secret(secret), expected_hash)
