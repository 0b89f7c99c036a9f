"""API keys: made, listed and revoked here, and only here, so the in-memory key cache never drifts.

A key belongs to a user (keys made with the admin token belong to the admin user) and reaches the
groups it was scoped to, or every group its owner is in. A revoked key is refused from the next
request on, because the same call that revokes it in the database drops it from the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from potluck.hub.access import AccessMap
from potluck.hub.auth import KeyCache
from potluck.hub.errors import InvalidRequestError, NotFoundError
from potluck.hub.metering import UsageJournal
from potluck.store import errors as store_errors
from potluck.store.database import Store
from potluck.store.keys import ApiKey, NewApiKey
from potluck.store.users import User

__all__ = ["ApiKey", "KeyOptions", "Keys", "NewApiKey"]


@dataclass(frozen=True, slots=True)
class KeyOptions:
    """A new key's restrictions; the API's request type bounds the numbers (hub/bounds.py)."""

    models: list[str] | None = None
    expires_in_s: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    priority: int = 1
    prefer_own: bool = False


class Keys:
    """Every change to API keys, keeping the database and the hot path's `KeyCache` in step."""

    def __init__(self, store: Store, access: AccessMap, cache: KeyCache, journal: UsageJournal) -> None:
        self._store = store
        self._access = access
        self._cache = cache
        self._journal = journal

    @classmethod
    async def load(cls, store: Store, access: AccessMap, journal: UsageJournal) -> Keys:
        """The service with every live key from the database in its cache.

        ``journal``: the usage records, written with each key's ``last_used_at``; listings write out the
        batch in progress first (as `Reports` does), so a request that just finished counts."""
        cache = KeyCache()
        cache.load(await store.keys.list(include_revoked=False))
        return cls(store, access, cache, journal)

    async def read(self) -> list[ApiKey]:
        """Every live key, as the database holds them (cluster mode: another replica made or revoked one)."""
        return await self._store.keys.list(include_revoked=False)

    def adopt(self, live: list[ApiKey]) -> None:
        """Serve exactly these keys from now on (what `read` returned)."""
        self._cache.replace(live)

    def authenticate(self, secret: str | None) -> ApiKey:
        """The live key for this secret, from memory (the hot path); `AuthError` otherwise."""
        return self._cache.authenticate(secret)

    def live(self, key_id: str) -> ApiKey | None:
        """A key that is not revoked, by id."""
        return self._cache.by_id(key_id)

    async def create(self, user: User, name: str, groups: list[str] | None, options: KeyOptions) -> NewApiKey:
        """A key for ``groups`` (each one the user is in), or for all the user's groups when None."""
        name = _key_name(name)
        if groups is not None:
            mine = self._access.user_groups.get(user.id, set())
            if not groups or any(g not in mine for g in groups):
                raise InvalidRequestError("`groups` must name groups you are in", param="groups")
        if options.models is not None and (not options.models or any(not m for m in options.models)):
            raise InvalidRequestError("`models` must list model names", param="models")
        expires_at = (
            None if options.expires_in_s is None else datetime.now(UTC) + timedelta(seconds=options.expires_in_s)
        )
        created = await self._store.keys.create(
            name,
            user_id=user.id,
            groups=groups,
            models=options.models,
            expires_at=expires_at,
            rpm=options.rpm,
            tpm=options.tpm,
            max_concurrency=options.max_concurrency,
            priority=options.priority,
            prefer_own=options.prefer_own,
        )
        self._cache.add(created.key)
        return created

    async def create_for_admin(self, name: str) -> NewApiKey:
        """A key of the admin user (made with the admin token): every group it is in."""
        created = await self._store.keys.create(_key_name(name), user_id=self._access.admin_user_id)
        self._cache.add(created.key)
        return created

    async def all(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""
        await self._journal.flush()
        return await self._store.keys.list()

    async def of_user(self, user: User) -> list[ApiKey]:
        """The user's keys, revoked ones too, oldest first."""
        await self._journal.flush()
        return await self._store.keys.list(user_id=user.id)

    async def revoke(self, key_id: str) -> ApiKey:
        """Revoke any key (admin); refused from the next request on. `NotFoundError` for an unknown id."""
        try:
            key = await self._store.keys.revoke(key_id)
        except store_errors.NotFoundError:
            raise NotFoundError(f"No key {key_id}") from None
        self._cache.remove(key_id)
        return key

    async def revoke_own(self, user: User, key_id: str) -> ApiKey:
        """Revoke one of the user's keys; anyone else's is 404, as an unknown one is."""
        if not any(key.id == key_id for key in await self.of_user(user)):
            raise NotFoundError(f"No key {key_id}")
        return await self.revoke(key_id)


def _key_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise InvalidRequestError("`name` must be 1 to 200 characters", param="name")
    return name
