"""The OpenAI-compatible client API: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``.

Request bodies go to the agent as the client sent them; only the routing fields are decoded.
Responses are written as they arrive, never buffered (error bodies excepted: they are small and
must be checked for OpenAI's shape before the status line is committed).
"""

from __future__ import annotations

import logging

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from potluck.api.context import HUB, request_id
from potluck.api.payloads import json_response
from potluck.api.schemas.service import Model, ModelList
from potluck.hub.auth import ApiKey
from potluck.hub.dispatch import Exchange, normalize_error_body
from potluck.hub.errors import AuthError, HubError, InvalidRequestError, ModelNotFoundError, ShuttingDownError
from potluck.hub.requests import ClientRequest
from potluck.protocol.errors import error_envelope
from potluck.protocol.openai import STREAMABLE_PATHS, RoutingFields
from potluck.protocol.sse import error_event

log = logging.getLogger(__name__)

_decode_routing = msgspec.json.Decoder(RoutingFields).decode
_ERROR_BODY_LIMIT = 1 << 20


def _credential(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise AuthError("Authorization header must be `Bearer <key>`")
    return request.headers.get("x-api-key")


def authenticate(request: web.Request) -> ApiKey:
    return request.app[HUB].keys.authenticate(_credential(request))


def parse_routing(body: bytes) -> RoutingFields:
    try:
        fields = _decode_routing(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        param = text.rsplit("$.", 1)[-1].split(".")[0].split("[")[0].rstrip("`") if "$." in text else None
        raise InvalidRequestError(f"Invalid request body: {text}", param=param) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"Request body is not a JSON object: {exc}") from None
    if not fields.model:
        raise InvalidRequestError("You must provide a model parameter", param="model")
    return fields


async def _relay(request: web.Request, path: str) -> web.StreamResponse:
    hub = request.app[HUB]
    rid = request_id(request)
    key = authenticate(request)
    if hub.requests.closing:
        raise ShuttingDownError("The hub is shutting down; retry shortly")
    body = await request.read()
    fields = parse_routing(body)
    client_request = ClientRequest(
        request_id=rid,
        key=key,
        path=path,
        body=body,
        model=fields.model or "",
        stream=bool(fields.stream) and path in STREAMABLE_PATHS,
        include_usage=bool(fields.stream_options and fields.stream_options.include_usage),
        explain=request.headers.get("x-potluck-explain") == "1",
    )
    serving = hub.requests.serve(client_request)
    async with serving as exchange:
        try:
            return await _respond(request, exchange, rid, _routing_headers(exchange, serving.admission_headers))
        except (ConnectionError, RuntimeError) as exc:
            # The client went away while we wrote (aiohttp raises ConnectionResetError or, on a closing
            # transport, RuntimeError); nothing left to answer.
            exchange.client_gone = True
            log.debug("client of %s gone: %s", rid, exc)
            return web.Response(status=499)


def _routing_headers(exchange: Exchange, headers: dict[str, str]) -> dict[str, str]:
    """Rate-limit headers, plus how long the request queued and, for admins who asked, why this agent."""
    slot = exchange.slot
    if slot.position:
        headers = {
            **headers,
            "x-potluck-queue-position": str(slot.position),
            "x-potluck-queue-wait-ms": str(round(slot.queued_s * 1000)),
        }
    if exchange.explanation is not None:
        route = exchange.explanation.as_dict()
        route["served_by"] = {"agent_id": slot.placement.agent_id, "model": slot.placement.model}
        headers = {**headers, "x-potluck-route": msgspec.json.encode(route).decode()}
    return headers


async def _respond(
    request: web.Request, exchange: Exchange, rid: str, extra_headers: dict[str, str]
) -> web.StreamResponse:
    """Write the exchange to the client."""
    if exchange.status >= 400:
        return await _relay_error(exchange, rid)
    headers, content_length = _response_headers(exchange, rid)
    headers.update(extra_headers)
    is_sse = headers.get("Content-Type", "").startswith("text/event-stream")
    first: bytes | None = None
    if content_length is not None and not is_sse:
        # A whole body usually arrives in one frame: answer it in one write. Nothing is written
        # before it is complete, so an agent failing here still gets a clean error status.
        first = await exchange.read()
        if first is not None and len(first) == content_length:
            exchange.sent(first)
            return web.Response(status=exchange.status, body=first, headers=headers)
    if is_sse:
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
    response = web.StreamResponse(status=exchange.status, headers=headers)
    if content_length is not None:
        response.content_length = content_length
    await response.prepare(request)
    await _stream_body(request, response, exchange, first, is_sse=is_sse)
    return response


async def _relay_error(exchange: Exchange, rid: str) -> web.Response:
    """An upstream error: its status and body (wrapped in OpenAI's shape if it was not), and its Retry-After."""
    body = normalize_error_body(exchange.status, await exchange.read_all(_ERROR_BODY_LIMIT))
    headers = {"x-request-id": rid}
    headers.update((name, value) for name, value in exchange.head.headers if name.lower() == "retry-after")
    return web.Response(status=exchange.status, body=body, content_type="application/json", headers=headers)


def _response_headers(exchange: Exchange, rid: str) -> tuple[CIMultiDict[str], int | None]:
    headers: CIMultiDict[str] = CIMultiDict()
    content_length: int | None = None
    for name, value in exchange.head.headers:
        if name.lower() == "content-length":
            content_length = int(value)
        else:
            headers.add(name, value)
    headers["x-request-id"] = rid
    return headers, content_length


async def _stream_body(
    request: web.Request, response: web.StreamResponse, exchange: Exchange, first: bytes | None, *, is_sse: bool
) -> None:
    """Copy the body to the client as it arrives (a failure mid-way is the exchange's to remember)."""
    try:
        if first is not None:
            await response.write(first)
            exchange.sent(first)
        while (chunk := await exchange.read()) is not None:
            await response.write(chunk)
            exchange.sent(chunk)
    except HubError as exc:
        # Bytes already reached the client: no status to change. A stream gets a terminal error
        # event (never a fake [DONE]); a plain body is cut short so the client sees it incomplete.
        log.warning("request %s failed mid-response: %s", exchange.request.request_id, exc.message)
        if is_sse:
            await response.write(error_event(error_envelope(exc.code, exc.message)))
            await response.write_eof()
        elif request.transport is not None:
            request.transport.close()
        return
    await response.write_eof()


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _relay(request, "/v1/chat/completions")


async def completions(request: web.Request) -> web.StreamResponse:
    return await _relay(request, "/v1/completions")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await _relay(request, "/v1/embeddings")


async def list_models(request: web.Request) -> web.Response:
    """The models this key reaches, with how many agents serve each, whether any has it hot, and whose they are."""
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
    for session in hub.registry.sessions.values():
        agent_id = session.agent_id
        if access.groups_of_agent(agent_id).isdisjoint(groups):
            continue  # another group's agent: its models do not exist for this key
        owner = access.agent_owner.get(agent_id)
        if access.controls_of(agent_id).own_requests_only and owner != requester:
            continue
        for model in session.models:
            if key.models is not None and model.id not in key.models:
                continue
            agents[model.id] = agents.get(model.id, 0) + 1
            hot[model.id] = hot.get(model.id, False) or model.hot
            if owner is not None:
                owners.setdefault(model.id, set()).add(access.usernames.get(owner, owner))
    data = [
        Model(id=model, agents=count, hot=hot[model], owners=sorted(owners.get(model, ())))
        for model, count in sorted(agents.items())
    ]
    for alias, targets in access.aliases_for(groups).items():
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
            )
        )
    return data


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)
