"""Agents as their owners and the admin manage them: enrolment tokens, sharing into groups, owner
controls, prices and the admin's drain.

Every change reaches routing at once: the access map and the registry are updated by the same call
that writes the database. An agent that is not yours answers 404, as an unknown one does.
"""

from __future__ import annotations

from typing import Any

import msgspec

from potluck.hub.access import AccessMap
from potluck.hub.accounting import Accounting
from potluck.hub.controls import OwnerControls, validate_schedule
from potluck.hub.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from potluck.hub.groups import Groups
from potluck.hub.pricing import validate_prices
from potluck.hub.registry import Registry
from potluck.store.agents import Agent, NewAgentToken
from potluck.store.billing import Price
from potluck.store.database import Store
from potluck.store.users import User

__all__ = ["Agent", "Agents", "NewAgentToken", "Price"]


class Agents:
    def __init__(
        self, store: Store, access: AccessMap, registry: Registry, accounting: Accounting, groups: Groups
    ) -> None:
        self._store = store
        self._access = access
        self._registry = registry
        self._accounting = accounting
        self._groups = groups

    async def create_token(self, name: str, owner_id: str | None = None) -> NewAgentToken:
        """A one-time enrolment token; the agent that uses it belongs to ``owner_id`` (None: the admin user)."""
        name = name.strip()
        if not 1 <= len(name) <= 200:
            raise InvalidRequestError("`name` must be 1 to 200 characters", param="name")
        return await self._store.agents.create_token(name, owner_id=owner_id or self._access.admin_user_id)

    async def all(self) -> list[Agent]:
        """Every enrolled agent, oldest first."""
        return await self._store.agents.list()

    async def owned_by(self, user: User) -> list[Agent]:
        return [a for a in await self._store.agents.list() if self._access.agent_owner.get(a.id) == user.id]

    async def enrolled(self, agent_id: str, owner_id: str | None) -> None:
        """Bookkeeping for a new agent: its owner, and the admin's agents join the default group."""
        owner = owner_id or self._access.admin_user_id
        self._access.agent_owner[agent_id] = owner
        if owner == self._access.admin_user_id:
            await self._store.agents.share(agent_id, self._access.default_group_id)
            self._access.agent_groups.setdefault(agent_id, set()).add(self._access.default_group_id)

    def require_owner(self, user: User, agent_id: str) -> None:
        """`NotFoundError` unless ``user`` owns the agent."""
        if self._access.agent_owner.get(agent_id) != user.id:
            raise NotFoundError(f"No agent {agent_id}")

    async def set_drained(self, agent_id: str, drained: bool) -> None:
        """Admin: no new work for the agent (kept across restarts), or back in rotation."""
        if not await self._store.agents.set_drained(agent_id, drained):
            raise NotFoundError(f"No agent {agent_id}")
        self._registry.set_admin_drain(agent_id, drained)

    async def share(self, user: User, agent_id: str, group_id: str) -> None:
        """Share one of your agents into a group you own or administer (or any you are in, if it allows)."""
        self.require_owner(user, agent_id)
        role = await self._groups.require_role(user, group_id)
        if not role.manages:
            group = await self._store.groups.get(group_id)
            if group is None or not group.members_can_share:
                raise PermissionDeniedError("Only the group's owner and admins may share agents into it")
        await self._store.agents.share(agent_id, group_id)
        self._access.agent_groups.setdefault(agent_id, set()).add(group_id)
        self._registry.resync([agent_id])

    async def unshare(self, user: User, agent_id: str, group_id: str) -> None:
        self.require_owner(user, agent_id)
        if not await self._store.agents.unshare(agent_id, group_id):
            raise NotFoundError(f"Agent {agent_id} is not shared into {group_id}")
        self._access.agent_groups.get(agent_id, set()).discard(group_id)
        self._registry.resync([agent_id])

    async def update_controls(self, user: User, agent_id: str, changes: dict[str, Any]) -> OwnerControls:
        """Pause/resume, availability windows, own requests only/first; routing follows at once."""
        self.require_owner(user, agent_id)
        current = msgspec.structs.asdict(self._access.controls_of(agent_id))
        current.update(changes)
        try:
            controls = msgspec.convert(current, OwnerControls)
        except msgspec.ValidationError as exc:
            raise InvalidRequestError(f"Invalid controls: {exc}") from None
        if controls.schedule is not None:
            validate_schedule(controls.schedule)
        await self._store.agents.set_controls(agent_id, msgspec.json.encode(controls).decode())
        self._access.agent_controls[agent_id] = controls
        self._registry.resync([agent_id])
        return controls

    async def set_prices(self, user: User, agent_id: str, prices: dict[str, Price]) -> dict[str, Price]:
        """The owner's prices for an agent's models, checked against the bounds of every group it is shared into."""
        self.require_owner(user, agent_id)
        for group_id in self._access.groups_of_agent(agent_id):
            billing = self._accounting.billing.get(group_id)
            if billing is None:
                continue
            try:
                validate_prices(prices, billing.min_price, billing.max_price)
            except ValueError as exc:
                raise InvalidRequestError(f"{exc} (group {group_id})", param="prices") from None
        try:
            await self._store.billing.set_prices(
                agent_id, {m: (p.input_per_mtok, p.output_per_mtok) for m, p in prices.items()}
            )
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param="prices") from None
        self._accounting.set_prices(agent_id, prices)
        return prices

    def prices_of(self, user: User, agent_id: str) -> dict[str, Price]:
        self.require_owner(user, agent_id)
        return dict(self._accounting.prices.get(agent_id, {}))
