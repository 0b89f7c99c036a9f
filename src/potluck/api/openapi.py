"""``GET /openapi.json``: an OpenAPI 3.1 document of the hub's HTTP API, built from the table below.

``ROUTES`` holds one entry per route that ``create_app`` registers (``HEAD`` aside): its summary,
who may call it, its request body (the msgspec Structs the handlers decode, or a small inline
schema for the OpenAI pass-through bodies), its answers and the error codes it can give. Errors
are rendered from ``ERROR_CODES`` with the shared ``ErrorEnvelope`` schema. docs/api.md is the
prose; tests/api/test_openapi.py keeps the table and the router in step.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal

import msgspec
from aiohttp import web

from potluck import __version__
from potluck.api import admin, billing, scheduling, users
from potluck.protocol.errors import ERROR_CODES, ErrorEnvelope

Schema = dict[str, Any]
_OPTIONAL = "x-potluck-optional"
Auth = Literal["apiKey", "adminToken", "userToken", "none"]

SCHEMA_REF = "#/components/schemas/{name}"
ERROR_SCHEMA = "ErrorEnvelope"

OPENAPI_JSON = web.AppKey("potluck_openapi_json", bytes)


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """One response: its description and a schema per media type."""

    description: str
    content: dict[str, Schema] = dataclasses.field(default_factory=dict)
    retry_after: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    summary: str
    auth: Auth
    answers: dict[int, Answer]
    """Non-error answers (and bodies of statuses that are not errors of the hub, like /readyz's 503)."""
    errors: tuple[str, ...] = ()
    """Codes from ERROR_CODES beyond those every route of its kind gives (see ``_error_codes``)."""
    body: type[msgspec.Struct] | Schema | None = None
    query: tuple[Schema, ...] = ()
    description: str | None = None
    upstream: bool = False
    """Relayed to a backend: its error statuses and bodies pass through (the ``default`` answer)."""


# -- schema helpers ----------------------------------------------------------------------------------


def _obj(strings: str = "", **props: Schema) -> Schema:
    """An object schema: ``strings`` names (space-separated) string properties, ``props`` the others.

    Every property is required unless wrapped in ``_opt``.
    """
    properties: Schema = {name: {"type": "string"} for name in strings.split()}
    properties.update(props)
    return {"type": "object", "properties": properties, "required": list(properties)}


def _opt(schema: Schema) -> Schema:
    """An optional property of ``_obj`` (the marker is dropped, with its name in ``required``, by ``_finish``)."""
    return {**schema, _OPTIONAL: True}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
TIMESTAMP: Schema = {"type": "string", "format": "date-time"}
NULLABLE_TIMESTAMP: Schema = {"type": ["string", "null"], "format": "date-time"}
ROLE: Schema = {"type": "string", "enum": ["owner", "admin", "member"]}
ACCOUNT_ROLE: Schema = {"type": "string", "enum": ["admin", "user"]}


def _list_of(key: str, item: Schema) -> Schema:
    return {"type": "object", "properties": {key: {"type": "array", "items": item}}, "required": [key]}


def _json(description: str, schema: Schema) -> Answer:
    return Answer(description, {"application/json": schema})


ROUTING_BODY: Schema = {
    "type": "object",
    "description": (
        "The OpenAI request body. The hub reads only these routing fields and passes the body to "
        "the backend byte for byte; other fields are not validated."
    ),
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "stream": {"type": ["boolean", "null"]},
        "stream_options": {
            "type": ["object", "null"],
            "properties": {"include_usage": {"type": ["boolean", "null"]}},
            "additionalProperties": True,
        },
        "max_tokens": {"type": ["integer", "null"]},
        "max_completion_tokens": {"type": ["integer", "null"]},
    },
    "required": ["model"],
    "additionalProperties": True,
}

BACKEND_JSON: Schema = {
    "type": "object",
    "description": "The backend's response, unchanged (the hub adds only headers)",
    "additionalProperties": True,
}
EVENT_STREAM: Schema = {
    "type": "string",
    "description": "Server-sent events relayed as the backend wrote them; a failure after the start "
    'ends the stream with one `data: {"error": {...}}` event and no `[DONE]`',
}

MODEL = _obj(
    "id owned_by",
    object={"const": "model"},
    created=INTEGER,
    agents={"type": "integer", "minimum": 1},
    hot=BOOLEAN,
    alias_of=_opt({"type": "array", "items": STRING}),
)
NUMBER: Schema = {"type": "number"}
NULLABLE_NUMBER: Schema = {"type": ["number", "null"]}
GROUP_SETTINGS = _obj(
    "id name",
    members_can_share=BOOLEAN,
    billing={"type": "string", "enum": ["mutual", "credits"]},
    dynamic_pricing=BOOLEAN,
    min_price_per_mtok=NULLABLE_NUMBER,
    max_price_per_mtok=NULLABLE_NUMBER,
    default_input_per_mtok=NUMBER,
    default_output_per_mtok=NUMBER,
    max_tokens_cap=INTEGER,
)
PRICES: Schema = {
    "type": "object",
    "additionalProperties": _obj(input_per_mtok=NUMBER, output_per_mtok=NUMBER),
}
_DAYS = (
    {"name": "since", "in": "query", "required": False, "description": "First day (UTC), YYYY-MM-DD", "schema": STRING},
    {"name": "until", "in": "query", "required": False, "description": "Last day (UTC), inclusive", "schema": STRING},
    {
        "name": "format",
        "in": "query",
        "required": False,
        "description": "json (default) or csv",
        "schema": {"type": "string", "enum": ["json", "csv"]},
    },
)


def _report(description: str, row: Schema) -> dict[int, Answer]:
    return {
        200: Answer(
            description,
            {"application/json": _list_of("data", row), "text/csv": STRING},
        )
    }


USAGE_ROW = _obj(
    "day model",
    user_id={"type": ["string", "null"]},
    key_id={"type": ["string", "null"]},
    requests=INTEGER,
    prompt_tokens=INTEGER,
    completion_tokens=INTEGER,
    spend=NUMBER,
    spend_micro=INTEGER,
)
EARNINGS_ROW = _obj(
    "day model",
    agent_id={"type": ["string", "null"]},
    requests=INTEGER,
    prompt_tokens=INTEGER,
    completion_tokens=INTEGER,
    earned=NUMBER,
    earned_micro=INTEGER,
)
GROUP_ROW = _obj(
    "day model",
    user_id={"type": ["string", "null"]},
    requests=INTEGER,
    tokens=INTEGER,
    spend=NUMBER,
    spend_micro=INTEGER,
    earned=NUMBER,
    earned_micro=INTEGER,
)
SIGNED_RECEIPT = _obj("signature", receipt={"type": "object", "additionalProperties": True})
ALIAS = _obj("alias group_id", models={"type": "array", "items": STRING}, updated_at=TIMESTAMP)
_TERMS: Schema = {"type": "object", "additionalProperties": {"type": "number"}}
ROUTE_EXPLANATION = _obj(
    "model policy",
    key_id={"type": ["string", "null"]},
    models={"type": "array", "items": STRING},
    weights=_TERMS,
    queue_depth=INTEGER,
    choice={"type": ["object", "null"]},
    candidates={
        "type": "array",
        "items": {
            **_obj(
                "agent_id model",
                eligible=BOOLEAN,
                reason=_opt(STRING),
                score=_opt({"type": "number"}),
                terms=_opt(_TERMS),
            ),
        },
    },
)
KEY = _obj("id name prefix", created_at=TIMESTAMP, revoked_at=NULLABLE_TIMESTAMP)
GROUP_IDS: Schema = {"type": ["array", "null"], "items": {"type": "string"}}
USER_KEY = _obj("id name prefix", groups=GROUP_IDS, created_at=TIMESTAMP, revoked_at=NULLABLE_TIMESTAMP)
MY_AGENT = _obj(
    "id name state",
    groups={"type": "array", "items": {"type": "string"}},
    models={"type": "array", "items": {**_obj("id", hot=BOOLEAN), "additionalProperties": True}},
)
AGENT: Schema = {
    **_obj(
        "id name",
        state={"type": "string", "enum": ["online", "draining", "offline"]},
        models={
            "type": "array",
            "items": {**_obj("id", hot=BOOLEAN), "additionalProperties": True},
        },
        in_flight=INTEGER,
        max_concurrency=INTEGER,
        last_seen=NULLABLE_TIMESTAMP,
        drained_by_admin=BOOLEAN,
        backends=_opt({"type": "array", "items": {**_obj("url kind", healthy=BOOLEAN), "additionalProperties": True}}),
        host=_opt({"type": ["object", "null"]}),
        agent_in_flight=_opt(INTEGER),
        rtt_ms=_opt({"type": ["number", "null"]}),
        version=_opt(STRING),
        implausible_usage=_opt(INTEGER),
        implausible_reason=_opt(STRING),
    ),
    "description": "A connected agent has every field; an offline one has no backends, host, agent_in_flight, "
    "rtt_ms, version or implausible_usage (implausible_reason only once it reported an implausible count)",
}
USAGE_RECORD = _obj(
    "request_id model path",
    key_id={"type": ["string", "null"]},
    agent_id={"type": ["string", "null"]},
    outcome={
        "type": "string",
        "enum": [
            "ok",
            "client_cancelled",
            "agent_failed",
            "upstream_error",
            "timeout",
            "overloaded",
            "model_not_found",
            "error",
        ],
    },
    status=INTEGER,
    prompt_tokens=INTEGER,
    completion_tokens=INTEGER,
    queue_ms=INTEGER,
    ttft_ms={"type": ["integer", "null"]},
    total_ms=INTEGER,
    created_at=TIMESTAMP,
)
USER = _obj("id username", role=ACCOUNT_ROLE)
NULLABLE_INTEGER: Schema = {"type": ["integer", "null"]}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
LISTED_USER = _obj(
    "id username", role=ACCOUNT_ROLE, rpm=NULLABLE_INTEGER, tpm=NULLABLE_INTEGER, balance=NUMBER, balance_micro=INTEGER
)
REQUEST = _obj(
    "request_id model",
    created_at=TIMESTAMP,
    agent_id=NULLABLE_STRING,
    key_id=NULLABLE_STRING,
    group_id=NULLABLE_STRING,
    outcome=USAGE_RECORD["properties"]["outcome"],
    status=INTEGER,
    prompt_tokens=INTEGER,
    completion_tokens=INTEGER,
    tokens_estimated=BOOLEAN,
    charged=NUMBER,
    charged_micro=INTEGER,
)
INVITE = _obj("id", max_uses=INTEGER, uses=INTEGER, expires_at=TIMESTAMP, revoked=BOOLEAN)


# -- the table ----------------------------------------------------------------------------------------

_RELAY_ERRORS = (
    "model_not_found",
    "server_overloaded",
    "shutting_down",
    "upstream_error",
    "backend_unavailable",
    "upstream_timeout",
)
_GROUP_ERRORS = ("not_found",)
_GROUP_ADMIN_ERRORS = ("not_found", "permission_denied")


def _relay(summary: str, *, streams: bool) -> Route:
    content = {"application/json": BACKEND_JSON}
    if streams:
        content["text/event-stream"] = EVENT_STREAM
    return Route(
        summary,
        "apiKey",
        {200: Answer("The backend's answer, streamed as it arrives", content)},
        _RELAY_ERRORS,
        body=ROUTING_BODY,
        upstream=True,
    )


ROUTES: dict[tuple[str, str], Route] = {
    # OpenAI-compatible client API (api/openai.py)
    ("POST", "/v1/chat/completions"): _relay("OpenAI chat completions, streaming or not", streams=True),
    ("POST", "/v1/completions"): _relay("OpenAI text completions, streaming or not", streams=True),
    ("POST", "/v1/embeddings"): _relay("OpenAI embeddings", streams=False),
    ("GET", "/v1/models"): Route(
        "Models served by connected agents",
        "apiKey",
        {200: _json("Every model at least one connected agent serves, by id", _list_of("data", MODEL))},
    ),
    # Admin API (api/admin.py)
    ("POST", "/admin/keys"): Route(
        "Create an API key",
        "adminToken",
        {201: _json("The key; `key` is shown only here", _obj("id name key", created_at=TIMESTAMP))},
        body=admin.NameBody,
    ),
    ("GET", "/admin/keys"): Route(
        "List API keys",
        "adminToken",
        {200: _json("All keys, revoked ones included, oldest first", _list_of("keys", KEY))},
    ),
    ("DELETE", "/admin/keys/{key_id}"): Route(
        "Revoke an API key",
        "adminToken",
        {200: _json("Revoked (again: the original time)", _obj("id", revoked_at=TIMESTAMP))},
        ("not_found",),
    ),
    ("GET", "/admin/users"): Route(
        "List user accounts",
        "adminToken",
        {200: _json("Every account by username, with its role, limits and credits", _list_of("users", LISTED_USER))},
    ),
    ("POST", "/admin/agent-tokens"): Route(
        "Create a one-time agent enrolment token",
        "adminToken",
        {201: _json("The token; shown only here", _obj("id name token", created_at=TIMESTAMP))},
        body=admin.NameBody,
    ),
    ("GET", "/admin/agents"): Route(
        "Enrolled agents, their state and load",
        "adminToken",
        {200: _json("Every enrolled agent, oldest enrolment first", _list_of("agents", AGENT))},
    ),
    ("POST", "/admin/agents/{agent_id}/drain"): Route(
        "Stop routing new requests to an agent",
        "adminToken",
        {202: _json("Draining; requests in flight finish", _obj("id", state={"const": "draining"}))},
        ("not_found",),
    ),
    ("POST", "/admin/agents/{agent_id}/resume"): Route(
        "Route to it again",
        "adminToken",
        {200: _json("The admin drain is cleared", _obj("id", state={"type": "string", "enum": ["online", "offline"]}))},
        ("not_found",),
    ),
    ("GET", "/admin/usage"): Route(
        "Latest usage records",
        "adminToken",
        {200: _json("Newest first", _list_of("usage", USAGE_RECORD))},
        ("invalid_request_error",),
        query=(
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": "How many records (clamped to 1…1000)",
                "schema": {"type": "integer", "default": 100},
            },
        ),
    ),
    ("GET", "/admin/route-explain"): Route(
        "Why the scheduler would pick an agent for a model now",
        "adminToken",
        {
            200: _json(
                "Every agent listing the model: its filter reason or its score terms; and the choice", ROUTE_EXPLANATION
            )
        },
        ("invalid_request_error", "not_found"),
        query=(
            {"name": "model", "in": "query", "required": True, "description": "Model or alias", "schema": STRING},
            {
                "name": "key_id",
                "in": "query",
                "required": False,
                "description": "Explain as a request with this key would be routed (its groups, owner, aliases)",
                "schema": STRING,
            },
        ),
    ),
    ("POST", "/admin/credits"): Route(
        "Grant credits to a user (from the mint)",
        "adminToken",
        {201: _json("The grant and the new balance", _obj("txn_id user_id", balance=NUMBER, balance_micro=INTEGER))},
        ("invalid_request_error", "not_found"),
        body=billing.Grant,
    ),
    ("POST", "/admin/users"): Route(
        "Create a user account",
        "adminToken",
        {201: _json("The account", USER)},
        ("conflict",),
        body=users.NewUser,
    ),
    # User API (api/users.py)
    ("POST", "/api/login"): Route(
        "A session token (7 days)",
        "none",
        {200: _json("The session token", _obj("token", expires_at=TIMESTAMP))},
        ("invalid_api_key",),
        body=users.Login,
    ),
    ("POST", "/api/logout"): Route(
        "Revoke the token the request carries",
        "userToken",
        {200: _json("Logged out", _obj(logged_out={"type": "boolean"}))},
    ),
    ("GET", "/api/me"): Route("Who the token belongs to", "userToken", {200: _json("The account", USER)}),
    ("POST", "/api/tokens"): Route(
        "Create a personal access token",
        "userToken",
        {201: _json("The token; shown only here", _obj("id token"))},
        body=users.Named,
    ),
    ("DELETE", "/api/tokens/{token_id}"): Route(
        "Revoke one of your tokens",
        "userToken",
        {200: _json("Revoked", _obj("id", revoked={"const": True}))},
        ("not_found",),
    ),
    ("POST", "/api/groups"): Route(
        "Create a group (you own it)", "userToken", {201: _json("The group", _obj("id name"))}, body=users.Named
    ),
    ("GET", "/api/groups"): Route(
        "Your groups and your role in each",
        "userToken",
        {200: _json("Your groups", _list_of("groups", _obj("id name", role=ROLE)))},
    ),
    ("DELETE", "/api/groups/{group_id}"): Route(
        "Delete a group (owner)",
        "userToken",
        {200: _json("Deleted", _obj("id", deleted={"const": True}))},
        _GROUP_ADMIN_ERRORS,
    ),
    ("GET", "/api/groups/{group_id}/members"): Route(
        "The group's members and roles (member)",
        "userToken",
        {200: _json("The members", _list_of("members", _obj("user_id username", role=ROLE)))},
        _GROUP_ERRORS,
    ),
    ("POST", "/api/groups/{group_id}/leave"): Route(
        "Leave a group (member; not the owner)",
        "userToken",
        {200: _json("Left", _obj("id", left={"const": True}))},
        ("not_found", "invalid_request_error"),
    ),
    ("DELETE", "/api/groups/{group_id}/members/{user_id}"): Route(
        "Remove a member (owner, admin; never the owner)",
        "userToken",
        {200: _json("Removed", _obj("group_id user_id", removed={"const": True}))},
        (*_GROUP_ADMIN_ERRORS, "invalid_request_error"),
    ),
    ("PATCH", "/api/groups/{group_id}/members/{user_id}"): Route(
        "Make a member an admin, or a member again (owner only)",
        "userToken",
        {200: _json("The new role", _obj("group_id user_id role"))},
        (*_GROUP_ADMIN_ERRORS, "invalid_request_error"),
        body=users.MemberRole,
    ),
    ("POST", "/api/groups/{group_id}/invites"): Route(
        "Create an invite code (owner, admin)",
        "userToken",
        {201: _json("The invite; `code` is shown only here", _obj("id code", max_uses=INTEGER, expires_at=TIMESTAMP))},
        _GROUP_ADMIN_ERRORS,
        body=users.NewInvite,
    ),
    ("GET", "/api/groups/{group_id}/invites"): Route(
        "List invites, never the codes (owner, admin)",
        "userToken",
        {200: _json("The group's invites", _list_of("invites", INVITE))},
        _GROUP_ADMIN_ERRORS,
    ),
    ("DELETE", "/api/groups/{group_id}/invites/{invite_id}"): Route(
        "Revoke an invite (owner, admin)",
        "userToken",
        {200: _json("Revoked", _obj("id", revoked={"const": True}))},
        _GROUP_ADMIN_ERRORS,
    ),
    ("GET", "/api/groups/{group_id}/aliases"): Route(
        "The group's model aliases (members)",
        "userToken",
        {200: _json("Aliases by name", _list_of("data", ALIAS))},
        _GROUP_ERRORS,
    ),
    ("PUT", "/api/groups/{group_id}/aliases/{alias}"): Route(
        "Map a name to concrete models, most preferred first (owner, admin)",
        "userToken",
        {200: _json("The alias", ALIAS)},
        (*_GROUP_ADMIN_ERRORS, "invalid_request_error"),
        body=scheduling.AliasBody,
    ),
    ("DELETE", "/api/groups/{group_id}/aliases/{alias}"): Route(
        "Remove an alias (owner, admin)",
        "userToken",
        {200: _json("Removed", _obj("alias", deleted={"const": True}))},
        _GROUP_ADMIN_ERRORS,
    ),
    ("POST", "/api/invites/redeem"): Route(
        "Join a group with an invite code",
        "userToken",
        {200: _json("Joined", _obj("group_id"))},
        ("invalid_invite", "conflict"),
        body=users.Redeem,
    ),
    ("POST", "/api/keys"): Route(
        "Create an API key for some or all of your groups",
        "userToken",
        {201: _json("The key; `key` is shown only here", _obj("id name key", groups=GROUP_IDS, created_at=TIMESTAMP))},
        body=users.NewKey,
    ),
    ("GET", "/api/keys"): Route(
        "Your API keys (never the secrets)", "userToken", {200: _json("Keys", _list_of("keys", USER_KEY))}
    ),
    ("DELETE", "/api/keys/{key_id}"): Route(
        "Revoke one of your keys",
        "userToken",
        {200: _json("Revoked", _obj("id", revoked_at=NULLABLE_TIMESTAMP))},
        ("not_found",),
    ),
    ("POST", "/api/agent-tokens"): Route(
        "A one-time enrolment token for an agent you will own",
        "userToken",
        {201: _json("The token; shown only here", _obj("id name token"))},
        body=users.Named,
    ),
    ("GET", "/api/agents"): Route(
        "Your agents and the groups they are shared into",
        "userToken",
        {200: _json("Agents", _list_of("agents", MY_AGENT))},
    ),
    ("PATCH", "/api/agents/{agent_id}"): Route(
        "Owner controls: pause, availability windows, own requests only / first",
        "userToken",
        {200: _json("The agent's controls now", {"type": "object", "required": ["id"], "additionalProperties": True})},
        ("not_found",),
        body=users.AgentControls,
    ),
    ("GET", "/api/groups/{group_id}"): Route(
        "A group you are in: its settings and your role",
        "userToken",
        {200: _json("The group", {**GROUP_SETTINGS, "properties": {**GROUP_SETTINGS["properties"], "role": ROLE}})},
        _GROUP_ERRORS,
    ),
    ("PATCH", "/api/groups/{group_id}"): Route(
        "Group settings (owner): whether plain members may share agents into it",
        "userToken",
        {200: _json("The group's settings after the change", GROUP_SETTINGS)},
        (*_GROUP_ADMIN_ERRORS, "invalid_request_error"),
        body=users.GroupSettings,
    ),
    ("GET", "/api/balance"): Route(
        "Your credits: spendable and held for requests in flight",
        "userToken",
        {
            200: _json(
                "Credits and micro-credits",
                _obj(balance=NUMBER, held=NUMBER, balance_micro=INTEGER, held_micro=INTEGER),
            )
        },
    ),
    ("GET", "/api/agents/{agent_id}/prices"): Route(
        "Your agent's prices per model (credits per million tokens)",
        "userToken",
        {200: _json("Prices", _obj("agent_id", prices=PRICES))},
        ("not_found",),
    ),
    ("PUT", "/api/agents/{agent_id}/prices"): Route(
        "Set your agent's prices (within the bounds of every group it is shared into)",
        "userToken",
        {200: _json("Prices", _obj("agent_id", prices=PRICES))},
        ("not_found", "invalid_request_error"),
        body=PRICES,
    ),
    ("GET", "/api/groups/{group_id}/prices"): Route(
        "What each model costs in the group now, per agent, with the dynamic multiplier and why (members)",
        "userToken",
        {
            200: _json(
                "Quotes",
                _obj(
                    "group_id billing",
                    data={
                        "type": "array",
                        "items": _obj(
                            "model agent_id reason",
                            input_per_mtok=NUMBER,
                            output_per_mtok=NUMBER,
                            multiplier=NUMBER,
                        ),
                    },
                ),
            )
        },
        _GROUP_ERRORS,
    ),
    ("GET", "/api/groups/{group_id}/usage"): Route(
        "The group's totals per day, member and model (owner, admin)",
        "userToken",
        _report("Totals", GROUP_ROW),
        (*_GROUP_ADMIN_ERRORS, "invalid_request_error"),
        query=_DAYS,
    ),
    ("GET", "/api/usage"): Route(
        "Your usage and spend per day, key and model",
        "userToken",
        _report("Rows, oldest day first", USAGE_ROW),
        ("invalid_request_error",),
        query=_DAYS,
    ),
    ("GET", "/api/earnings"): Route(
        "Your agents' earnings per day, agent and model",
        "userToken",
        _report("Rows, oldest day first", EARNINGS_ROW),
        ("invalid_request_error",),
        query=_DAYS,
    ),
    ("GET", "/api/requests"): Route(
        "Your requests with their ids, newest first (admins: any user's)",
        "userToken",
        {
            200: _json(
                "A page of requests; pass `next_before` as `before` for the next one (null: no more)",
                _obj(data={"type": "array", "items": REQUEST}, next_before=NULLABLE_STRING),
            )
        },
        ("invalid_request_error", "permission_denied", "not_found"),
        query=(
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": "How many requests (1 to 500)",
                "schema": {"type": "integer", "default": 50},
            },
            {
                "name": "before",
                "in": "query",
                "required": False,
                "description": "Older than this request id (the `next_before` of the previous page)",
                "schema": STRING,
            },
            {
                "name": "user",
                "in": "query",
                "required": False,
                "description": "Another user's id (the admin token or an admin user's token)",
                "schema": STRING,
            },
        ),
    ),
    ("GET", "/api/receipts/{request_id}"): Route(
        "The hub-signed receipt of a settled request (its consumer and the agent's owner)",
        "userToken",
        {200: _json("Verify it with `potluck receipt verify`", SIGNED_RECEIPT)},
        ("not_found",),
    ),
    ("GET", "/.well-known/potluck-hub-key"): Route(
        "The hub's Ed25519 public key, which signs receipts",
        "none",
        {200: _json("The key", _obj("algorithm public_key fingerprint"))},
    ),
    ("POST", "/api/agents/{agent_id}/groups"): Route(
        "Share your agent into a group you own or administer",
        "userToken",
        {200: _json("Shared", _obj("agent_id group_id", shared=BOOLEAN))},
        _GROUP_ADMIN_ERRORS,
        body=users.GroupRef,
    ),
    ("DELETE", "/api/agents/{agent_id}/groups/{group_id}"): Route(
        "Stop sharing your agent into a group",
        "userToken",
        {200: _json("Unshared", _obj("agent_id group_id", shared=BOOLEAN))},
        ("not_found",),
    ),
    # Health and metrics (api/health.py)
    ("GET", "/healthz"): Route(
        "Liveness", "none", {200: _json("The process serves HTTP", _obj(status={"const": "ok"}))}
    ),
    ("GET", "/readyz"): Route(
        "Readiness",
        "none",
        {
            200: _json("Ready", _obj(status={"const": "ready"}, agents=INTEGER)),
            503: _json(
                "Shutting down, or the database does not answer (this body, not the error envelope)",
                _obj(status={"type": "string", "enum": ["shutting_down", "database_unavailable"]}),
            ),
        },
    ),
    ("GET", "/metrics"): Route(
        "Prometheus metrics",
        "none",
        {200: Answer("Prometheus text format; see docs/operations.md", {"text/plain": STRING})},
    ),
    # The agent WebSocket (api/agent_ws.py)
    ("GET", "/agent/connect"): Route(
        "The agent WebSocket",
        "none",
        {101: Answer("Switching to the WebSocket protocol")},
        ("invalid_request_error",),
        description=(
            "Agents connect here with a WebSocket upgrade. Authentication (the agent's Ed25519 key and, "
            "on first contact, a one-time enrolment token) and every message are part of the agent "
            "protocol, not of HTTP: see docs/protocol.md."
        ),
    ),
    # This document
    ("GET", "/openapi.json"): Route("This OpenAPI document", "none", {200: _json("OpenAPI 3.1", {"type": "object"})}),
}


# -- building the document ------------------------------------------------------------------------------

_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    "apiKey": [{"apiKey": []}, {"apiKeyHeader": []}],
    "adminToken": [{"adminToken": []}],
    "userToken": [{"userToken": []}],
    "none": [],
}

_SECURITY_SCHEMES: Schema = {
    "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key (`pk-…`) from POST /admin/keys"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "The API key, another way"},
    "adminToken": {"type": "http", "scheme": "bearer", "description": "The hub's admin token"},
    "userToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A session token from POST /api/login or a personal access token from POST /api/tokens",
    },
}

_HEADERS: Schema = {
    "RequestId": {
        "description": "The request's id, `req_<24 hex digits>`",
        "schema": {"type": "string", "pattern": "^req_[0-9a-f]{24}$"},
    },
    "RetryAfter": {
        "description": "Seconds to wait before retrying (1 to 60); on 503s made by the hub",
        "schema": {"type": "integer", "minimum": 1, "maximum": 60},
    },
}


def _error_codes(route: Route) -> list[str]:
    codes = list(route.errors)
    if route.auth != "none":
        codes.append("invalid_api_key")
    if route.body is not None:
        codes += ["invalid_request_error", "request_too_large"]
    codes.append("internal_error")
    return list(dict.fromkeys(codes))


def _content(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _response(answer: Answer, *, request_id: bool = True) -> Schema:
    response: Schema = {"description": answer.description}
    headers = {"x-request-id": "RequestId"} if request_id else {}
    if answer.retry_after:
        headers["Retry-After"] = "RetryAfter"
    if headers:
        response["headers"] = {name: {"$ref": f"#/components/headers/{ref}"} for name, ref in headers.items()}
    if answer.content:
        response["content"] = {media: {"schema": schema} for media, schema in answer.content.items()}
    return response


def _error_responses(codes: list[str]) -> dict[str, Schema]:
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(ERROR_CODES[code][0], []).append(code)
    envelope = {"$ref": SCHEMA_REF.format(name=ERROR_SCHEMA)}
    return {
        str(status): _response(
            Answer(
                "Error: " + ", ".join(f"`{c}`" for c in status_codes),
                {"application/json": envelope},
                retry_after=status == 503,
            )
        )
        for status, status_codes in sorted(by_status.items())
    }


def _operation_id(method: str, path: str) -> str:
    return method.lower() + "_" + re.sub(r"[^a-z0-9]+", "_", path.lower()).strip("_")


def _finish(node: Any) -> Any:
    """Drops ``_opt``'s markers (and those properties from ``required``), and empty ``required`` lists."""
    if isinstance(node, list):
        return [_finish(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _finish(value) for key, value in node.items() if key != _OPTIONAL}
    properties = node.get("properties")
    if isinstance(properties, dict) and isinstance(out.get("required"), list):
        out["required"] = [name for name in out["required"] if not properties.get(name, {}).get(_OPTIONAL)]
        if not out["required"]:
            del out["required"]
    return out


def build_document() -> Schema:
    """The OpenAPI 3.1 document for ``ROUTES``."""
    structs = [ErrorEnvelope, *(r.body for r in ROUTES.values() if isinstance(r.body, type))]
    _, components = msgspec.json.schema_components(list(dict.fromkeys(structs)), ref_template=SCHEMA_REF)
    paths: dict[str, Schema] = {}
    for (method, path), route in ROUTES.items():
        operation: Schema = {"operationId": _operation_id(method, path), "summary": route.summary}
        if route.description:
            operation["description"] = route.description
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", path)
        ]
        parameters += route.query
        if parameters:
            operation["parameters"] = parameters
        if isinstance(route.body, type):
            body_schema: Schema = {"$ref": SCHEMA_REF.format(name=route.body.__name__)}
        else:
            body_schema = route.body or {}
        if route.body is not None:
            operation["requestBody"] = {"required": True, "content": _content(body_schema)}
        websocket = method == "GET" and 101 in route.answers
        responses = {str(s): _response(a, request_id=not websocket) for s, a in route.answers.items()}
        for status, response in _error_responses(_error_codes(route)).items():
            responses.setdefault(status, response)
        if route.upstream:
            responses["default"] = _response(
                Answer(
                    "The backend's error status. Its body passes through when it is an OpenAI error object; "
                    "anything else is wrapped as `upstream_error`",
                    {"application/json": {"$ref": SCHEMA_REF.format(name=ERROR_SCHEMA)}},
                )
            )
        operation["responses"] = dict(sorted(responses.items()))
        operation["security"] = _SECURITY[route.auth]
        paths.setdefault(path, {})[method.lower()] = operation
    document: Schema = _finish(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "Potluck hub",
                "version": __version__,
                "description": "One OpenAI-compatible endpoint over pooled LLM servers. Prose: docs/api.md.",
            },
            "paths": paths,
            "components": {
                "schemas": components,
                "securitySchemes": _SECURITY_SCHEMES,
                "headers": _HEADERS,
            },
        }
    )
    return document


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_JSON], content_type="application/json")


def add_routes(app: web.Application) -> None:
    app[OPENAPI_JSON] = msgspec.json.encode(build_document())
    app.router.add_get("/openapi.json", openapi_json)
