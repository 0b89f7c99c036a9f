"""The admin API (``/admin/...``), authenticated by the admin token as ``Authorization: Bearer``."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from aiohttp import web

from potluck.api.browser import credential
from potluck.api.context import HUB
from potluck.api.payloads import body_as, iso, json_response, key_view, query_as
from potluck.api.schemas.admin import (
    AdminAgent,
    AgentList,
    AgentModel,
    AgentStateChange,
    CreatedAgentToken,
    CreatedKey,
    ListedUser,
    UsageList,
    UsageQuery,
    UsageRecord,
    UserList,
)
from potluck.api.schemas.common import KeyList, Named, RevokedKey
from potluck.hub.errors import AdminAuthError
from potluck.hub.pricing import MICRO
from potluck.hub.services import HubServices
from potluck.protocol.agent import ModelInfo


async def require_admin(request: web.Request) -> HubServices:
    """The admin token, or the token (or browser session) of a user whose role is ``admin``; 401 otherwise."""
    hub = request.app[HUB]
    token = credential(request)
    try:
        hub.admin.check(token)
    except AdminAuthError:
        if token is None or not await hub.accounts.is_admin(token):
            raise
    return hub


async def _name(request: web.Request) -> str:
    return (await body_as(request, Named, param="name")).name


async def create_key(request: web.Request) -> web.Response:
    hub = await require_admin(request)
    created = await hub.keys.create_for_admin(await _name(request))
    key = created.key
    return json_response(CreatedKey(id=key.id, name=key.name, key=created.secret, created_at=iso(key.created_at)), 201)


async def list_keys(request: web.Request) -> web.Response:
    hub = await require_admin(request)
    keys = await hub.keys.all()
    return json_response(KeyList(keys=[key_view(k) for k in keys]))


async def revoke_key(request: web.Request) -> web.Response:
    hub = await require_admin(request)
    key = await hub.keys.revoke(request.match_info["key_id"])
    return json_response(RevokedKey(id=key.id, revoked_at=iso(key.revoked_at)))


async def list_users(request: web.Request) -> web.Response:
    """Every account by username: role, limits over all its keys, and spendable credits."""
    hub = await require_admin(request)
    users = []
    for user in await hub.accounts.all():
        free = (await hub.credits.balance(user.id)).free
        users.append(
            ListedUser(
                id=user.id,
                username=user.username,
                role=user.role,
                rpm=user.rpm,
                tpm=user.tpm,
                balance=free / MICRO,
                balance_micro=free,
            )
        )
    return json_response(UserList(users=users))


async def create_agent_token(request: web.Request) -> web.Response:
    hub = await require_admin(request)
    token = await hub.agents.create_token(await _name(request))
    return json_response(
        CreatedAgentToken(id=token.id, name=token.name, token=token.token, created_at=iso(token.created_at)), 201
    )


async def list_agents(request: web.Request) -> web.Response:
    hub = await require_admin(request)
    registry = hub.registry
    now = datetime.now(UTC)
    agents = []
    for agent in await hub.agents.all():
        session = registry.sessions.get(agent.id)
        if session is None:
            agents.append(
                AdminAgent(
                    id=agent.id,
                    name=agent.name,
                    state="offline",
                    models=[],
                    in_flight=0,
                    max_concurrency=0,
                    last_seen=iso(agent.last_seen_at),
                    drained_by_admin=agent.id in registry.admin_drained,
                )
            )
            continue
        slots = registry.scheduler.agent(agent.id)
        rep = hub.accounting.reputation.get(agent.id)
        agents.append(
            AdminAgent(
                id=agent.id,
                name=session.name,
                state="draining" if slots is not None and slots.draining else "online",
                models=[_model_view(m) for m in session.models],
                backends=list(session.backends),
                host=session.host,
                agent_in_flight=session.agent_in_flight,
                in_flight=slots.in_flight if slots is not None else 0,
                max_concurrency=session.max_concurrency,
                last_seen=iso(now),
                rtt_ms=None if session.rtt_s is None else round(session.rtt_s * 1000, 3),
                version=session.version,
                drained_by_admin=agent.id in registry.admin_drained,
                # How often the agent reported token counts that could not be true (the hub billed its estimate).
                implausible_usage=0 if rep is None else rep.implausible,
                implausible_reason=msgspec.UNSET if rep is None else rep.last_reason,
            )
        )
    return json_response(AgentList(agents=agents))


def _model_view(m: ModelInfo) -> AgentModel:
    return AgentModel(
        id=m.id,
        hot=m.hot,
        context_length=m.context_length,
        size_bytes=m.size_bytes,
        vram_bytes=m.vram_bytes,
        kind=m.kind,
    )


async def _set_drained(request: web.Request, drained: bool) -> str:
    hub = await require_admin(request)
    agent_id = request.match_info["agent_id"]
    await hub.agents.set_drained(agent_id, drained)
    return agent_id


async def drain_agent(request: web.Request) -> web.Response:
    """No new work for this agent (kept across hub restarts); what it is running finishes."""
    agent_id = await _set_drained(request, True)
    return json_response(AgentStateChange(id=agent_id, state="draining"), 202)


async def resume_agent(request: web.Request) -> web.Response:
    agent_id = await _set_drained(request, False)
    connected = agent_id in request.app[HUB].registry.sessions
    return json_response(AgentStateChange(id=agent_id, state="online" if connected else "offline"))


async def recent_usage(request: web.Request) -> web.Response:
    hub = await require_admin(request)
    limit = min(1000, max(1, query_as(request, UsageQuery).limit))
    records = await hub.reports.recent(limit)
    return json_response(UsageList(usage=[msgspec.convert(r, UsageRecord, from_attributes=True) for r in records]))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/admin/keys", create_key)
    app.router.add_get("/admin/keys", list_keys)
    app.router.add_delete("/admin/keys/{key_id}", revoke_key)
    app.router.add_get("/admin/users", list_users)
    app.router.add_post("/admin/agent-tokens", create_agent_token)
    app.router.add_get("/admin/agents", list_agents)
    app.router.add_post("/admin/agents/{agent_id}/drain", drain_agent)
    app.router.add_post("/admin/agents/{agent_id}/resume", resume_agent)
    app.router.add_get("/admin/usage", recent_usage)
