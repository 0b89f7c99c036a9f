"""Routing, seen from outside: per-group model aliases, and why the scheduler would pick an agent.

- ``GET|PUT|DELETE /api/groups/{group_id}/aliases[/{alias}]``: members read, owners and admins write.
- ``GET /admin/route-explain?model=M&key_id=K``: every agent listing the model (or the alias's
  models), why layer 1 dropped it or its score terms, and the choice, as a request with that key
  would see it now. Without ``key_id``: as an admin key would (no group restriction).
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from potluck.api.admin import require_admin
from potluck.api.context import HUB
from potluck.api.payloads import body_as, iso, json_response, query_as
from potluck.api.schemas.scheduling import Alias, AliasBody, AliasDeleted, AliasList, ExplainQuery, RouteExplanation
from potluck.api.users import current_user
from potluck.hub.aliases import ModelAlias
from potluck.hub.errors import InvalidRequestError, NotFoundError
from potluck.hub.scheduler import Want


def _alias_view(alias: ModelAlias) -> Alias:
    return Alias(
        alias=alias.alias, group_id=alias.group_id, models=list(alias.models), updated_at=iso(alias.updated_at)
    )


async def list_aliases(request: web.Request) -> web.Response:
    user = await current_user(request)
    aliases = await request.app[HUB].aliases.of_group(user, request.match_info["group_id"])
    return json_response(AliasList(data=[_alias_view(a) for a in aliases]))


async def put_alias(request: web.Request) -> web.Response:
    user = await current_user(request)
    body = await body_as(request, AliasBody, param="models")
    alias = await request.app[HUB].aliases.put(
        user, request.match_info["group_id"], request.match_info["alias"], body.models
    )
    return json_response(_alias_view(alias))


async def delete_alias(request: web.Request) -> web.Response:
    user = await current_user(request)
    alias = request.match_info["alias"]
    await request.app[HUB].aliases.delete(user, request.match_info["group_id"], alias)
    return json_response(AliasDeleted(alias=alias))


async def route_explain(request: web.Request) -> web.Response:
    hub = await require_admin(request)
    query = query_as(request, ExplainQuery)
    model, key_id = query.model.strip(), query.key_id
    if not model:
        raise InvalidRequestError("Give the model to explain as `?model=`", param="model")
    if key_id is None:
        want = Want((model,))
    else:
        key = hub.keys.live(key_id)
        if key is None:
            raise NotFoundError(f"No live key {key_id}")
        want = hub.access.want(key, model)
    explanation = hub.registry.explain(want).as_dict()
    return json_response(msgspec.convert({"model": model, "key_id": key_id, **explanation}, RouteExplanation))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/groups/{group_id}/aliases", list_aliases)
    app.router.add_put("/api/groups/{group_id}/aliases/{alias}", put_alias)
    app.router.add_delete("/api/groups/{group_id}/aliases/{alias}", delete_alias)
    app.router.add_get("/admin/route-explain", route_explain)
