"""Cluster mode: re-read the shared data a replica caches in memory when another replica changed it.

The hot path reads keys, group memberships, agents' sharing and owners, limits, aliases, prices, group
billing and model claims from memory (no database round trip per request). On one hub, the service that
changes one of them updates the memory in the same call; in a cluster the other replicas hear "invalidate"
on Redis pub/sub (hub/cluster.py) and call `reload_shared`, so a revoked key or a price change applies
everywhere within about a second.
"""

from __future__ import annotations

from collections.abc import Callable

from potluck.hub.access import AccessMap
from potluck.hub.accounting import Accounting, GroupBilling
from potluck.hub.claims import Claims, ClaimView
from potluck.hub.controls import parse_controls
from potluck.hub.keys import Keys
from potluck.hub.limits import Limits
from potluck.hub.registry import Registry
from potluck.protocol.accounts import UserRole
from potluck.store.database import Store


async def reload_shared(
    store: Store,
    access: AccessMap,
    keys: Keys,
    accounting: Accounting,
    registry: Registry,
    claims: ClaimView,
    fresh: Callable[[], bool],
) -> bool:
    """Replace the in-memory copies with what the database holds now, unless ``fresh()`` says, once all is read,
    that a change made here meanwhile may be missing from what was read (then nothing is replaced: False)."""
    stored_keys = await keys.read()
    user_groups = await store.groups.memberships()
    agent_groups = await store.agents.sharing()
    everyone = await store.users.all()
    aliases = await store.aliases.list()
    agents = await store.agents.list()
    groups = await store.groups.all()
    prices = await store.billing.prices()
    claimed = await Claims.load(store)
    if not fresh():
        return False
    # Swapped in one step, with no await in between: a request sees the old view or the new one.
    keys.adopt(stored_keys)
    access.user_groups = user_groups
    access.user_limits = {u.id: Limits(rpm=u.rpm, tpm=u.tpm) for u in everyone}
    access.usernames = {u.id: u.username for u in everyone}
    access.admins = {u.id for u in everyone if u.role == UserRole.ADMIN}
    access.aliases = {}
    for alias in aliases:
        access.set_alias(alias.group_id, alias.alias, alias.models)
    owners = {a.id: a.owner_id or access.admin_user_id for a in agents}
    controls = {a.id: parse_controls(a.controls) for a in agents}
    for agent_id in registry.sessions:
        # Enrolled here while the snapshot above was read: what enrolment put in memory is newer.
        if agent_id not in owners and agent_id in access.agent_owner:
            owners[agent_id] = access.agent_owner[agent_id]
            if agent_id in access.agent_controls:
                controls[agent_id] = access.agent_controls[agent_id]
            if agent_id not in agent_groups and agent_id in access.agent_groups:
                agent_groups[agent_id] = access.agent_groups[agent_id]
    access.agent_owner = owners
    access.agent_controls = controls
    access.agent_groups = agent_groups
    accounting.prices = prices
    for group in groups:  # each call also drops the cached worst-case prices
        accounting.set_billing(group.id, GroupBilling.of(group))
    for deleted in accounting.billing.keys() - {group.id for group in groups}:
        accounting.set_billing(deleted, None)
    claims.adopt(claimed)
    registry.resync(list(registry.sessions))
    return True
