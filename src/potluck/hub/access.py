"""Who may reach which agents, kept in memory for the hot path.

A key reaches exactly the agents shared into its groups. A key's groups are the ones it was
scoped to, or every group its owner is in; either way only groups the owner is still in count,
so leaving a group (or being removed) takes effect on the next request. Keys and agents from
before accounts existed belong to the admin user, whose default group they use.
"""

from __future__ import annotations

from potluck.hub.controls import OwnerControls
from potluck.hub.limits import Limits
from potluck.hub.scoring import Want
from potluck.store.keys import ApiKey

NO_CONTROLS = OwnerControls()
CLAUDE_FAMILIES = ("opus", "sonnet", "haiku")
"""The families of Claude model names, which an alias can stand for whatever the version and date."""


class AccessMap:
    def __init__(self, admin_user_id: str, default_group_id: str) -> None:
        self.admin_user_id = admin_user_id
        self.default_group_id = default_group_id
        self.user_groups: dict[str, set[str]] = {}
        self.agent_groups: dict[str, set[str]] = {}
        self.agent_owner: dict[str, str] = {}
        self.user_limits: dict[str, Limits] = {}
        self.agent_controls: dict[str, OwnerControls] = {}
        self.usernames: dict[str, str] = {}
        """User id -> username, for saying who serves a model."""
        self.admins: set[str] = set()
        """Users whose role is admin (they may ask for ``x-potluck-explain``)."""
        self.aliases: dict[str, dict[str, tuple[str, ...]]] = {}
        """Group -> alias -> concrete models, most preferred first."""
        self.hub_aliases: dict[str, tuple[str, ...]] = {}
        """The hub's own aliases (``--model-alias``), for every group: after the groups' own."""

    def groups_for_key(self, key: ApiKey) -> frozenset[str]:
        owner = key.user_id or self.admin_user_id
        mine = self.user_groups.get(owner, set())
        if key.groups is None:
            return frozenset(mine)
        return frozenset(g for g in key.groups if g in mine)

    def owner_of_key(self, key: ApiKey) -> str:
        return key.user_id or self.admin_user_id

    def want(self, key: ApiKey, model: str) -> Want:
        """What the scheduler needs to route a request of this key for ``model`` (an alias or a model)."""
        groups = self.groups_for_key(key)
        return Want(
            self.resolve(model, groups),
            groups=groups,
            requester=self.owner_of_key(key),
            weight=key.priority,
            prefer_own=key.prefer_own,
        )

    def controls_of(self, agent_id: str) -> OwnerControls:
        return self.agent_controls.get(agent_id, NO_CONTROLS)

    def groups_of_agent(self, agent_id: str) -> frozenset[str]:
        return frozenset(self.agent_groups.get(agent_id, ()))

    def set_alias(self, group_id: str, alias: str, models: tuple[str, ...] | None) -> None:
        group = self.aliases.setdefault(group_id, {})
        if models is None:
            group.pop(alias, None)
        else:
            group[alias] = models

    def resolve(self, model: str, groups: frozenset[str]) -> tuple[str, ...]:
        """The concrete models a name stands for through these groups: an alias's list (merged, in group
        id order, when several groups define it), or the name itself. An alias wins over a model of the
        same name: the group chose it.

        Claude Code asks for dated names (``claude-sonnet-4-5-20250929``): a ``claude-*`` name no alias
        names exactly is looked up by its family (``opus``, ``sonnet``, ``haiku``), first in the groups'
        aliases, then in the hub's own (``--model-alias``)."""
        found = self._aliased(model, groups)
        if not found and model.startswith("claude"):
            family = next((f for f in CLAUDE_FAMILIES if f in model), None)
            if family is not None:
                found = self._aliased(family, groups) or list(self.hub_aliases.get(family, ()))
        if not found:
            found = list(self.hub_aliases.get(model, ()))
        return tuple(found) if found else (model,)

    def _aliased(self, name: str, groups: frozenset[str]) -> list[str]:
        found: list[str] = []
        if self.aliases:
            for group_id in sorted(groups):
                for model in self.aliases.get(group_id, {}).get(name, ()):
                    if model not in found:
                        found.append(model)
        return found

    def aliases_for(self, groups: frozenset[str]) -> dict[str, tuple[str, ...]]:
        """Every alias these groups define, and the hub's own, resolved."""
        names = {alias for g in groups for alias in self.aliases.get(g, {})} | self.hub_aliases.keys()
        return {name: self.resolve(name, groups) for name in sorted(names)}

    def set_user_groups(self, user_id: str, groups: set[str]) -> None:
        self.user_groups[user_id] = set(groups)

    def forget_group(self, group_id: str) -> list[str]:
        """A group was deleted: drop it everywhere; the agents whose sharing changed."""
        self.aliases.pop(group_id, None)
        for groups in self.user_groups.values():
            groups.discard(group_id)
        changed = []
        for agent_id, groups in self.agent_groups.items():
            if group_id in groups:
                groups.discard(group_id)
                changed.append(agent_id)
        return changed
