"""Identifiers and secrets: random, URL-safe, prefixed by what they name."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_id(prefix: str) -> str:
    """A random identifier such as ``key_3f9a...``; 96 bits of entropy."""
    return f"{prefix}_{secrets.token_hex(12)}"


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def new_secret(prefix: str) -> str:
    """A bearer secret: 32 random bytes, URL-safe, with a recognisable prefix (``pk-``...)."""
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a high-entropy secret. Such secrets need no salt or slow hash."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, expected_hash: str) -> bool:
    """Constant-time check of a secret against its stored hash."""
    return hmac.compare_digest(hash_secret(secret), expected_hash)
