"""Users, logins, personal tokens, groups and invites: the rules, over the store.

Passwords are hashed with argon2id (OWASP's minimum parameters, hashed off the event loop).
A failed login costs the same whether or not the user exists, and says the same thing. Group
rules: the creator owns a group; owners and admins invite and remove members; only the owner
deletes it and the owner cannot leave it. To anyone outside a group it does not exist (404).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from potluck.hub.access import AccessMap
from potluck.hub.accounting import Accounting, GroupBilling
from potluck.hub.controls import OwnerControls, validate_schedule
from potluck.hub.errors import (
    AuthError,
    ConflictError,
    InvalidInviteError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from potluck.hub.limits import Limits
from potluck.hub.pricing import MICRO, validate_prices
from potluck.hub.registry import Registry
from potluck.protocol.accounts import GroupRole, UserRole
from potluck.store import errors as store_errors
from potluck.store.aliases import ModelAlias
from potluck.store.billing import Price
from potluck.store.database import Store
from potluck.store.groups import Group, Invite, Member
from potluck.store.groups import InvalidInviteError as StoreInvalidInvite
from potluck.store.keys import ApiKey, NewApiKey
from potluck.store.users import User

USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,64}$")
SESSION_TTL = timedelta(days=7)
MANAGERS = frozenset(role for role in GroupRole if role.manages)
OWNER_ONLY = frozenset({GroupRole.OWNER})
_BAD_LOGIN = "Wrong username or password"


def password_hasher() -> PasswordHasher:
    # argon2id, m=19 MiB, t=2, p=1: OWASP's minimum; about 20 ms here.
    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


class Accounts:
    def __init__(
        self,
        store: Store,
        access: AccessMap,
        registry: Registry,
        accounting: Accounting,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._store = store
        self._access = access
        self._registry = registry
        self._accounting = accounting
        self._hasher = hasher or password_hasher()
        self._dummy_hash: str | None = None

    async def _refresh_memberships(self, user_id: str) -> None:
        """Keys follow their owner's memberships from the next request on."""
        groups = (await self._store.groups.memberships(user_id)).get(user_id, set())
        self._access.set_user_groups(user_id, groups)

    # -- users and tokens ---------------------------------------------------------------------------

    async def create_user(
        self, username: str, password: str, role: UserRole, *, rpm: int | None = None, tpm: int | None = None
    ) -> User:
        if not USERNAME.match(username):
            raise InvalidRequestError("`username` must be 3 to 64 of A-Z a-z 0-9 _ . -", param="username")
        if not 8 <= len(password) <= 1024:
            raise InvalidRequestError("`password` must be 8 to 1024 characters", param="password")
        _positive(rpm=rpm, tpm=tpm)
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

    async def login(self, username: str, password: str) -> tuple[str, datetime]:
        """A session token and its expiry."""
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
        token, secret = await self._store.users.create_token(user.id, "session", "login", SESSION_TTL)
        return secret, token.expires_at or datetime.now(UTC) + SESSION_TTL

    async def authenticate(self, bearer: str | None) -> User:
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
        token, secret = await self._store.users.create_token(user.id, "pat", name, None)
        return token.id, secret

    async def revoke_token(self, user: User, token_id: str) -> None:
        if not await self._store.users.revoke_token(user.id, token_id):
            raise NotFoundError(f"No token {token_id}")

    # -- groups ---------------------------------------------------------------------------------------

    async def create_group(self, user: User, name: str) -> Group:
        group = await self._store.groups.create(_group_name(name), user.id)
        await self._refresh_memberships(user.id)
        return group

    async def groups_of(self, user: User) -> list[tuple[Group, GroupRole]]:
        return await self._store.groups.for_user(user.id)

    async def _role(self, user: User, group_id: str, allowed: frozenset[GroupRole] | None = None) -> GroupRole:
        role = await self._store.groups.role_of(group_id, user.id)
        if role is None:
            raise NotFoundError(f"No group {group_id}")
        if allowed is not None and role not in allowed:
            raise PermissionDeniedError(f"Your role in this group ({role}) does not allow this")
        return role

    async def members(self, user: User, group_id: str) -> list[Member]:
        await self._role(user, group_id)
        return await self._store.groups.members(group_id)

    async def leave(self, user: User, group_id: str) -> None:
        if await self._role(user, group_id) == GroupRole.OWNER:
            raise InvalidRequestError("The owner cannot leave the group; delete it instead")
        await self._store.groups.remove_member(group_id, user.id)
        await self._refresh_memberships(user.id)

    async def remove_member(self, user: User, group_id: str, member_id: str) -> None:
        await self._role(user, group_id, MANAGERS)
        target = await self._store.groups.role_of(group_id, member_id)
        if target is None:
            raise NotFoundError(f"No member {member_id} in this group")
        if target == GroupRole.OWNER:
            raise InvalidRequestError("The owner cannot be removed from the group")
        await self._store.groups.remove_member(group_id, member_id)
        await self._refresh_memberships(member_id)

    async def set_member_role(self, user: User, group_id: str, member_id: str, role: GroupRole) -> None:
        """The owner makes a member an admin (who may invite and remove members) or a member again."""
        await self._role(user, group_id, OWNER_ONLY)
        if role == GroupRole.OWNER:
            raise InvalidRequestError("`role` must be admin or member", param="role")
        target = await self._store.groups.role_of(group_id, member_id)
        if target is None:
            raise NotFoundError(f"No member {member_id} in this group")
        if target == GroupRole.OWNER:
            raise InvalidRequestError("The owner's role cannot change")
        await self._store.groups.set_role(group_id, member_id, role)

    async def delete_group(self, user: User, group_id: str) -> None:
        await self._role(user, group_id, OWNER_ONLY)
        await self._store.groups.delete(group_id)
        # Its keys stop reaching anything through it, and its agents stop being routed for it.
        self._registry.resync(self._access.forget_group(group_id))
        self._accounting.set_billing(group_id, None)

    # -- invites --------------------------------------------------------------------------------------

    async def create_invite(self, user: User, group_id: str, max_uses: int, expires_in_s: int) -> tuple[Invite, str]:
        await self._role(user, group_id, MANAGERS)
        if not 1 <= max_uses <= 10_000:
            raise InvalidRequestError("`max_uses` must be 1 to 10000", param="max_uses")
        if not 1 <= expires_in_s <= 366 * 86400:
            raise InvalidRequestError("`expires_in_s` must be 1 s to a year", param="expires_in_s")
        expires_at = datetime.now(UTC) + timedelta(seconds=expires_in_s)
        return await self._store.groups.create_invite(group_id, user.id, max_uses, expires_at)

    async def invites(self, user: User, group_id: str) -> list[Invite]:
        await self._role(user, group_id, MANAGERS)
        return await self._store.groups.invites(group_id)

    async def revoke_invite(self, user: User, group_id: str, invite_id: str) -> None:
        await self._role(user, group_id, MANAGERS)
        try:
            await self._store.groups.revoke_invite(group_id, invite_id)
        except store_errors.NotFoundError:
            raise NotFoundError(f"No invite {invite_id}") from None

    async def redeem(self, user: User, code: str) -> str:
        try:
            group_id = await self._store.groups.redeem(code, user.id)
        except StoreInvalidInvite:
            raise InvalidInviteError("This invite code is not valid (unknown, expired, revoked or used up)") from None
        except store_errors.ConflictError as exc:
            raise ConflictError(str(exc)) from None
        await self._refresh_memberships(user.id)
        return group_id

    # -- keys and agents ----------------------------------------------------------------------------

    async def create_key(self, user: User, name: str, groups: list[str] | None, options: KeyOptions) -> NewApiKey:
        """A key for ``groups`` (each one the user is in), or for all the user's groups when None."""
        name = name.strip()
        if not 1 <= len(name) <= 200:
            raise InvalidRequestError("`name` must be 1 to 200 characters", param="name")
        if groups is not None:
            mine = self._access.user_groups.get(user.id, set())
            if not groups or any(g not in mine for g in groups):
                raise InvalidRequestError("`groups` must name groups you are in", param="groups")
        _positive(
            rpm=options.rpm, tpm=options.tpm, max_concurrency=options.max_concurrency, expires_in_s=options.expires_in_s
        )
        if not 1 <= options.priority <= MAX_PRIORITY:
            raise InvalidRequestError(f"`priority` must be 1 to {MAX_PRIORITY}", param="priority")
        if options.models is not None and (not options.models or any(not m for m in options.models)):
            raise InvalidRequestError("`models` must list model names", param="models")
        expires_at = (
            None if options.expires_in_s is None else datetime.now(UTC) + timedelta(seconds=options.expires_in_s)
        )
        return await self._store.keys.create(
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

    async def own_key(self, user: User, key_id: str) -> ApiKey:
        for key in await self._store.keys.list(user_id=user.id):
            if key.id == key_id:
                return key
        raise NotFoundError(f"No key {key_id}")

    async def agent_enrolled(self, agent_id: str, owner_id: str | None) -> None:
        """Bookkeeping for a new agent: its owner, and the admin's agents join the default group."""
        owner = owner_id or self._access.admin_user_id
        self._access.agent_owner[agent_id] = owner
        if owner == self._access.admin_user_id:
            await self._store.agents.share(agent_id, self._access.default_group_id)
            self._access.agent_groups.setdefault(agent_id, set()).add(self._access.default_group_id)

    def own_agent(self, user: User, agent_id: str) -> None:
        if self._access.agent_owner.get(agent_id) != user.id:
            raise NotFoundError(f"No agent {agent_id}")

    async def share_agent(self, user: User, agent_id: str, group_id: str) -> None:
        """Share one of your agents into a group you own or administer (or any you are in, if it allows)."""
        self.own_agent(user, agent_id)
        role = await self._role(user, group_id)
        if not role.manages:
            group = await self._store.groups.get(group_id)
            if group is None or not group.members_can_share:
                raise PermissionDeniedError("Only the group's owner and admins may share agents into it")
        await self._store.agents.share(agent_id, group_id)
        self._access.agent_groups.setdefault(agent_id, set()).add(group_id)
        self._registry.resync([agent_id])

    async def update_agent_controls(self, user: User, agent_id: str, changes: dict[str, Any]) -> OwnerControls:
        """Pause/resume, availability windows, own requests only/first; routing follows at once."""
        self.own_agent(user, agent_id)
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

    async def group_of(self, user: User, group_id: str) -> tuple[Group, GroupRole]:
        role = await self._role(user, group_id)
        group = await self._store.groups.get(group_id)
        if group is None:
            raise NotFoundError(f"No group {group_id}")
        return group, role

    async def update_group(self, user: User, group_id: str, changes: dict[str, Any]) -> Group:
        """Group settings (owner): who may share agents, and billing (mode, prices, bounds, hold cap)."""
        await self._role(user, group_id, OWNER_ONLY)
        sharing = changes.pop("members_can_share", None)
        current = await self._store.groups.get(group_id)
        if current is None:
            raise NotFoundError(f"No group {group_id}")
        low = changes.get("min_price_per_mtok", current.min_price_per_mtok)
        high = changes.get("max_price_per_mtok", current.max_price_per_mtok)
        try:
            validate_prices({}, low, high)
            group = await self._store.groups.update_billing(group_id, **changes)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
        if sharing is not None:
            await self._store.groups.set_members_can_share(group_id, sharing)
            group = dataclasses.replace(group, members_can_share=sharing)
        self._accounting.set_billing(group_id, GroupBilling.of(group))
        return group

    async def set_prices(self, user: User, agent_id: str, prices: dict[str, Price]) -> dict[str, Price]:
        """The owner's prices for an agent's models, checked against the bounds of every group it is shared into."""
        self.own_agent(user, agent_id)
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
        self.own_agent(user, agent_id)
        return dict(self._accounting.prices.get(agent_id, {}))

    def grant_credits(self, user_id: str, credits: float, reason: str) -> str:
        """Admin: add credits to a user's balance (from the mint, so the books still sum to zero)."""
        if user_id not in self._access.usernames:
            raise NotFoundError(f"No user {user_id}")
        amount = round(credits * MICRO)
        if not math.isfinite(credits) or amount <= 0:
            raise InvalidRequestError("`amount` must be a positive number of credits", param="amount")
        if not reason.strip():
            raise InvalidRequestError("say why in `reason`", param="reason")
        return self._accounting.ledger.grant(user_id, amount, reason.strip()[:500])

    async def require_group_role(
        self, user: User, group_id: str, roles: frozenset[GroupRole] | None = None
    ) -> GroupRole:
        return await self._role(user, group_id, roles)

    async def aliases(self, user: User, group_id: str) -> list[ModelAlias]:
        await self._role(user, group_id)
        return await self._store.aliases.list(group_id)

    async def set_alias(self, user: User, group_id: str, alias: str, models: list[str]) -> ModelAlias:
        """Map ``alias`` to concrete models, most preferred first (group owner and admins)."""
        await self._role(user, group_id, MANAGERS)
        alias = alias.strip()
        if not 1 <= len(alias) <= 200:
            raise InvalidRequestError("an alias is 1 to 200 characters", param="alias")
        if not models or len(models) > MAX_ALIAS_MODELS or any(not m.strip() or m == alias for m in models):
            raise InvalidRequestError(
                f"`models` must list 1 to {MAX_ALIAS_MODELS} model names other than the alias", param="models"
            )
        if len(set(models)) != len(models):
            raise InvalidRequestError("`models` lists a model twice", param="models")
        saved = await self._store.aliases.put(group_id, alias, models)
        self._access.set_alias(group_id, alias, saved.models)
        return saved

    async def delete_alias(self, user: User, group_id: str, alias: str) -> None:
        await self._role(user, group_id, MANAGERS)
        try:
            await self._store.aliases.delete(group_id, alias)
        except store_errors.NotFoundError:
            raise NotFoundError(f"No alias {alias} in this group") from None
        self._access.set_alias(group_id, alias, None)

    async def unshare_agent(self, user: User, agent_id: str, group_id: str) -> None:
        self.own_agent(user, agent_id)
        if not await self._store.agents.unshare(agent_id, group_id):
            raise NotFoundError(f"Agent {agent_id} is not shared into {group_id}")
        self._access.agent_groups.get(agent_id, set()).discard(group_id)
        self._registry.resync([agent_id])


@dataclass(frozen=True, slots=True)
class KeyOptions:
    models: list[str] | None = None
    expires_in_s: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    priority: int = 1
    prefer_own: bool = False


MAX_PRIORITY = 100
MAX_ALIAS_MODELS = 16


def _positive(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise InvalidRequestError(f"`{name}` must be at least 1", param=name)


def _group_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise InvalidRequestError("`name` must be 1 to 200 characters", param="name")
    return name
