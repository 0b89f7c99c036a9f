"""The admin API (``/admin/...``), authenticated by the admin token as ``Authorization: Bearer``."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

from potluck.api.context import HUB
from potluck.api.payloads import bearer, body_as, iso, json_response, key_view
from potluck.hub.errors import AdminAuthError, InvalidRequestError, NotFoundError
from potluck.hub.pricing import MICRO
from potluck.hub.services import HubServices
from potluck.protocol.agent import ModelInfo
from potluck.store.errors import NotFoundError as StoreNotFoundError


class NameBody(msgspec.Struct):
    name: str


async def require_admin(request: web.Request) -> HubServices:
    """The admin token, or the token of a user whose role is ``admin``; 401 otherwise."""
    hub = request.app[HUB]
    token = bearer(request)
    try:
        hub.admin.check(token)
    except AdminAuthError:
        if token is None or not await hub.accounts.is_admin(token):
            raise
    return hub


async def _name(request: web.Request) -> str:
    name = (await body_as(request, NameBody, param="name")).name.strip()
    if not name or len(name) > 200:
        raise InvalidRequestError("`name` must be 1 to 200 characters", param="name")
    return name


async def create_key(request: web.Request) -> web.Response:
    hub = await require_admin(request)
    created = await hub.store.keys.create(await _name(request), user_id=hub.access.admin_user_id)
    hub.keys.add(created.key)
    key = created.key
    return json_response(
        {"id": key.id, "name": key.name, "key": created.secret, "created_at": iso(key.created_at)}, 201
    )


async def list_keys(request: web.Request) -> web.Response:
    hub = await require_admin(request)
    keys = await hub.store.keys.list()
    return json_response({"keys": [key_view(k) for k in keys]})


async def revoke_key(request: web.Request) -> web.Response:
    hub = await require_admin(request)
    key_id = request.match_info["key_id"]
    try:
        key = await hub.store.keys.revoke(key_id)
    except StoreNotFoundError:
        raise NotFoundError(f"No key {key_id}") from None
    hub.keys.remove(key_id)
    return json_response({"id": key.id, "revoked_at": iso(key.revoked_at)})


async def list_users(request: web.Request) -> web.Response:
    """Every account by username: role, limits and spendable credits (the hub's in-memory view)."""
    hub = await require_admin(request)
    access, ledger = hub.access, hub.accounting.ledger
    users = []
    for user_id, username in sorted(access.usernames.items(), key=lambda item: item[1]):
        limits = access.user_limits.get(user_id)
        balance = ledger.balance(user_id)
        users.append(
            {
                "id": user_id,
                "username": username,
                "role": "admin" if user_id in access.admins else "user",
                "rpm": None if limits is None else limits.rpm,
                "tpm": None if limits is None else limits.tpm,
                "balance": balance / MICRO,
                "balance_micro": balance,
            }
        )
    return json_response({"users": users})


async def create_agent_token(request: web.Request) -> web.Response:
    hub = await require_admin(request)
    token = await hub.store.agents.create_token(await _name(request), owner_id=hub.access.admin_user_id)
    return json_response(
        {"id": token.id, "name": token.name, "token": token.token, "created_at": iso(token.created_at)}, 201
    )


async def list_agents(request: web.Request) -> web.Response:
    hub = await require_admin(request)
    registry = hub.registry
    now = datetime.now(UTC)
    agents = []
    for agent in await hub.store.agents.list():
        session = registry.sessions.get(agent.id)
        if session is None:
            agents.append(
                {
                    "id": agent.id,
                    "name": agent.name,
                    "state": "offline",
                    "models": [],
                    "in_flight": 0,
                    "max_concurrency": 0,
                    "last_seen": iso(agent.last_seen_at),
                    "drained_by_admin": agent.id in registry.admin_drained,
                }
            )
            continue
        slots = registry.scheduler.agent(agent.id)
        agents.append(
            {
                "id": agent.id,
                "name": session.name,
                "state": "draining" if slots is not None and slots.draining else "online",
                "models": [{"id": m.id, "hot": m.hot, **_model_details(m)} for m in session.models],
                "backends": [msgspec.to_builtins(b) for b in session.backends],
                "host": None if session.host is None else msgspec.to_builtins(session.host),
                "agent_in_flight": session.agent_in_flight,
                "in_flight": slots.in_flight if slots is not None else 0,
                "max_concurrency": session.max_concurrency,
                "last_seen": iso(now),
                "rtt_ms": None if session.rtt_s is None else round(session.rtt_s * 1000, 3),
                "version": session.version,
                "drained_by_admin": agent.id in registry.admin_drained,
                **_suspicion(hub, agent.id),
            }
        )
    return json_response({"agents": agents})


def _suspicion(hub: HubServices, agent_id: str) -> dict[str, Any]:
    """How often the agent reported token counts that could not be true (the hub billed its estimate)."""
    rep = hub.accounting.reputation.get(agent_id)
    if rep is None:
        return {"implausible_usage": 0}
    return {"implausible_usage": rep.implausible, "implausible_reason": rep.last_reason}


def _model_details(model: ModelInfo) -> dict[str, Any]:
    details: dict[str, Any] = msgspec.to_builtins(model)
    details.pop("id", None)
    details.pop("hot", None)
    details.pop("backend", None)
    return details


async def _set_drained(request: web.Request, drained: bool) -> str:
    hub = await require_admin(request)
    agent_id = request.match_info["agent_id"]
    if not await hub.store.agents.set_drained(agent_id, drained):
        raise NotFoundError(f"No agent {agent_id}")
    hub.registry.set_admin_drain(agent_id, drained)
    return agent_id


async def drain_agent(request: web.Request) -> web.Response:
    """No new work for this agent (kept across hub restarts); what it is running finishes."""
    agent_id = await _set_drained(request, True)
    return json_response({"id": agent_id, "state": "draining"}, 202)


async def resume_agent(request: web.Request) -> web.Response:
    agent_id = await _set_drained(request, False)
    state = "online" if agent_id in request.app[HUB].registry.sessions else "offline"
    return json_response({"id": agent_id, "state": state})


async def recent_usage(request: web.Request) -> web.Response:
    hub = await require_admin(request)
    try:
        limit = min(1000, max(1, int(request.query.get("limit", "100"))))
    except ValueError:
        raise InvalidRequestError("`limit` must be an integer", param="limit") from None
    await hub.journal.flush()
    records = await hub.store.usage.recent(limit)
    return json_response({"usage": [dataclasses.asdict(r) for r in records]})


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
