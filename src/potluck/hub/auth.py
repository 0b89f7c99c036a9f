"""Authentication on the hot path, from memory: no database round trip per request.

The key cache is loaded at start-up and changed only by `hub.keys.Keys`, the service that makes and
revokes keys, in the same call that writes the database; so a revoked key is refused from the next
request on. (In cluster mode a pub/sub invalidation feeds `remove`.)
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from potluck._shared.ids import hash_secret, secret_matches
from potluck.hub.errors import AdminAuthError, AuthError
from potluck.store.keys import ApiKey as ApiKey  # re-exported: the adapters name keys without importing the store


class KeyCache:
    def __init__(self) -> None:
        self._by_hash: dict[str, ApiKey] = {}
        self._hash_by_id: dict[str, str] = {}

    def load(self, keys: list[ApiKey]) -> None:
        for key in keys:
            if key.revoked_at is None:
                self.add(key)

    def add(self, key: ApiKey) -> None:
        self._by_hash[key.secret_hash] = key
        self._hash_by_id[key.id] = key.secret_hash

    def replace(self, keys: list[ApiKey]) -> None:
        """Exactly these live keys from now on (cluster mode: another replica made or revoked one)."""
        by_hash = {k.secret_hash: k for k in keys if k.revoked_at is None}
        self._by_hash = by_hash
        self._hash_by_id = {k.id: h for h, k in by_hash.items()}

    def remove(self, key_id: str) -> None:
        secret_hash = self._hash_by_id.pop(key_id, None)
        if secret_hash is not None:
            self._by_hash.pop(secret_hash, None)

    def by_id(self, key_id: str) -> ApiKey | None:
        secret_hash = self._hash_by_id.get(key_id)
        return None if secret_hash is None else self._by_hash.get(secret_hash)

    def authenticate(self, secret: str | None) -> ApiKey:
        """The live key for this secret. The lookup is by SHA-256, so timing reveals nothing of the key."""
        if not secret:
            raise AuthError("Missing API key: send it as `Authorization: Bearer <key>` or `x-api-key`")
        key = self._by_hash.get(hashlib.sha256(secret.encode()).hexdigest())
        if key is None:
            raise AuthError("Invalid or revoked API key")
        if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
            raise AuthError("This API key has expired")
        return key

    def __len__(self) -> int:
        return len(self._by_hash)


class AdminAuth:
    """The admin token, known only by its hash."""

    def __init__(self, token_hash: str) -> None:
        self._token_hash = token_hash

    def check(self, token: str | None) -> None:
        if not token or not secret_matches(token, self._token_hash):
            raise AdminAuthError("Missing or wrong admin token")

    @staticmethod
    def hash_token(token: str) -> str:
        return hash_secret(token)
