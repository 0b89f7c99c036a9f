"""Per-group model aliases: a name members' keys may ask for, standing for concrete models in order
of preference. Members read them; owners and admins write them; routing follows at once."""

from __future__ import annotations

from potluck.hub.access import AccessMap
from potluck.hub.errors import InvalidRequestError, NotFoundError
from potluck.hub.groups import MANAGERS, Groups
from potluck.store import errors as store_errors
from potluck.store.aliases import ModelAlias
from potluck.store.database import Store
from potluck.store.users import User

__all__ = ["Aliases", "ModelAlias"]


class Aliases:
    def __init__(self, store: Store, access: AccessMap, groups: Groups) -> None:
        self._store = store
        self._access = access
        self._groups = groups

    async def of_group(self, user: User, group_id: str) -> list[ModelAlias]:
        await self._groups.require_role(user, group_id)
        return await self._store.aliases.list(group_id)

    async def put(self, user: User, group_id: str, alias: str, models: list[str]) -> ModelAlias:
        """Map ``alias`` to concrete models, most preferred first (the API bounds how many: hub/bounds.py)."""
        await self._groups.require_role(user, group_id, MANAGERS)
        alias = alias.strip()
        if not 1 <= len(alias) <= 200:
            raise InvalidRequestError("an alias is 1 to 200 characters", param="alias")
        if not models or any(not m.strip() or m == alias for m in models):
            raise InvalidRequestError("`models` must list model names other than the alias", param="models")
        if len(set(models)) != len(models):
            raise InvalidRequestError("`models` lists a model twice", param="models")
        saved = await self._store.aliases.put(group_id, alias, models)
        self._access.set_alias(group_id, alias, saved.models)
        return saved

    async def delete(self, user: User, group_id: str, alias: str) -> None:
        await self._groups.require_role(user, group_id, MANAGERS)
        try:
            await self._store.aliases.delete(group_id, alias)
        except store_errors.NotFoundError:
            raise NotFoundError(f"No alias {alias} in this group") from None
        self._access.set_alias(group_id, alias, None)
