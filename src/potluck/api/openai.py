"""The OpenAI-compatible client API: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``.

The relay itself (api/relay.py) is shared with the other dialects.
"""

from __future__ import annotations

from aiohttp import web

from potluck.api.context import HUB
from potluck.api.payloads import json_response
from potluck.api.relay import authenticate, relay_handler
from potluck.api.schemas.service import Model, ModelList
from potluck.hub.errors import ModelNotFoundError
from potluck.hub.keys import ApiKey


async def list_models(request: web.Request) -> web.Response:
    """The models this key reaches, with how many agents serve each, whether any has it hot, and whose they are.

    An agent counts only where its groups' claims let it serve the name (approved where a group requires
    it, not flagged by spot checks nor parked); the others are counted apart (``withheld``), and a model
    only they list is not listed: a request for it would find no agent."""
    return json_response(ModelList(data=_models_of(request)))


async def retrieve_model(request: web.Request) -> web.Response:
    """One model this key reaches (``client.models.retrieve``); 404 ``model_not_found`` otherwise."""
    model_id = request.match_info["model"]
    for entry in _models_of(request):
        if entry.id == model_id:
            return json_response(entry)
    raise ModelNotFoundError(model_id)


def _models_of(request: web.Request) -> list[Model]:
    key = authenticate(request)
    hub = request.app[HUB]
    access = hub.access
    groups = access.groups_for_key(key)
    requester = access.owner_of_key(key)
    hot: dict[str, bool] = {}
    agents: dict[str, int] = {}
    owners: dict[str, set[str]] = {}
    withheld: dict[str, int] = {}
    claims = hub.claims.view
    for session in hub.registry.sessions.values():
        agent_id = session.agent_id
        shared = access.groups_of_agent(agent_id)
        if shared.isdisjoint(groups):
            continue  # another group's agent: its models do not exist for this key
        owner = access.agent_owner.get(agent_id)
        if access.controls_of(agent_id).own_requests_only and owner != requester:
            continue
        for model in session.models:
            if key.models is not None and model.id not in key.models:
                continue
            if claims.refusal(agent_id, shared, model.id, groups):
                withheld[model.id] = withheld.get(model.id, 0) + 1
                continue
            agents[model.id] = agents.get(model.id, 0) + 1
            hot[model.id] = hot.get(model.id, False) or model.hot
            if owner is not None:
                owners.setdefault(model.id, set()).add(access.usernames.get(owner, owner))
    data = [
        Model(
            id=model,
            agents=count,
            hot=hot[model],
            owners=sorted(owners.get(model, ())),
            withheld=withheld.get(model, 0),
        )
        for model, count in sorted(agents.items())
    ]
    data.extend(_aliases(key, access.aliases_for(groups), agents, hot, owners, withheld))
    return data


def _aliases(
    key: ApiKey,
    aliases: dict[str, tuple[str, ...]],
    agents: dict[str, int],
    hot: dict[str, bool],
    owners: dict[str, set[str]],
    withheld: dict[str, int],
) -> list[Model]:
    """The aliases the key reaches, as models: those standing for at least one served model."""
    data: list[Model] = []
    for alias, targets in aliases.items():
        if key.models is not None and alias not in key.models:
            continue
        served = [m for m in targets if m in agents]
        if not served:
            continue  # like a model served nowhere: not listed
        data.append(
            Model(
                id=alias,
                alias_of=list(targets),
                agents=sum(agents[m] for m in served),
                hot=any(hot[m] for m in served),
                owners=sorted({o for m in served for o in owners.get(m, ())}),
                withheld=sum(withheld.get(m, 0) for m in served),
            )
        )
    return data


def add_routes(app: web.Application) -> None:
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        app.router.add_post(path, relay_handler(path))
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)
