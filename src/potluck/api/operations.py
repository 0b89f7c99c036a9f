"""Every HTTP operation of the hub, in one table: summary, auth, request and response body types, errors.

``OPERATIONS`` has one entry per route ``create_app`` registers (``HEAD`` aside); tests/api/test_openapi.py
keeps the two equal and checks real answers against the document `potluck.api.openapi` renders from it.
Bodies are the types in `potluck.api.schemas` (and the hub or protocol Structs they reuse). Written by
hand here are only the schemas of what no type of ours describes (bodies relayed from backends, event
streams, CSV, Prometheus text, this document) and `RELAY_BODY`'s one refinement of `RoutingFields`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from potluck.api.schemas import (
    accounts,
    admin,
    agents,
    billing,
    claims,
    cluster,
    dashboard,
    groups,
    requests,
    scheduling,
    service,
)
from potluck.api.schemas.common import KeyList, Named, Revoked, RevokedKey
from potluck.hub.receipts import SignedReceipt
from potluck.protocol.openai import Dialect, RoutingFields

Schema = dict[str, Any]


class Auth(enum.Enum):
    """Who may call an operation; the values name the document's security schemes."""

    API_KEY = "apiKey"
    ADMIN = "adminToken"
    USER = "userToken"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Answer:
    """One documented response of an operation."""

    description: str
    body: Any = None
    """A type msgspec can describe, answered as ``application/json``."""
    media: Mapping[str, Schema] = field(default_factory=dict)
    """Content the hub does not build from a type, by media type."""


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    auth: Auth
    answers: Mapping[int, Answer]
    """Answers that are not errors of the hub (``/readyz``'s 503 is a state, not an error)."""
    errors: tuple[str, ...] = ()
    """Codes of ``ERROR_CODES`` it can answer beyond those implied by its auth, body and query."""
    body: Any = None
    """The request body's type."""
    query: type[msgspec.Struct] | None = None
    """The query string, as the Struct the handler decodes it into."""
    description: str | None = None
    upstream: bool = False
    """Relayed to a backend, whose error statuses and bodies pass through."""
    dialect: Dialect = Dialect.OPENAI
    """Whose error shape (and statuses) its errors take."""


SHELL_SCRIPT: Mapping[str, Schema] = {"text/x-shellscript": {"type": "string"}}
DOWNLOAD: Mapping[str, Schema] = {
    "application/octet-stream": {"type": "string", "contentMediaType": "application/zip"},
    "text/plain": {"type": "string", "pattern": "^[0-9a-f]{64}  potluck-.+\\.whl\n$"},
}


def ok(body: Any, description: str, status: int = 200) -> dict[int, Answer]:
    return {status: Answer(description, body)}


RELAY_BODY = Annotated[
    RoutingFields,
    msgspec.Meta(
        description=(
            "The request body in the route's API (OpenAI's, Anthropic's Messages, OpenAI's Responses). The hub "
            "reads only these routing fields and passes the body to the agent byte for byte (which relays or "
            "translates it); other fields are not validated here. A missing or empty `model` is a 400."
        ),
        extra_json_schema={
            "required": ["model"],
            "properties": {"model": {"type": "string", "minLength": 1}},
            "additionalProperties": True,
        },
    ),
]
"""`RoutingFields` decodes ``model`` as optional so that its absence gets OpenAI's message; the handler then
requires it, which the extra schema says."""

BACKEND_JSON: Schema = {
    "type": "object",
    "description": "The backend's response, unchanged (the hub adds only headers)",
    "additionalProperties": True,
}
EVENT_STREAM: Schema = {
    "type": "string",
    "description": "Server-sent events relayed as the backend wrote them; a failure after the start ends the "
    'stream with one `data: {"error": {...}}` event and no `[DONE]`',
}
DASHBOARD_EVENTS: Schema = {
    "type": "string",
    "description": "Server-sent events; see the operation's description for each event's body",
}
CSV: Schema = {"type": "string", "description": "The same rows as CSV, with a header line"}

_RELAY_ERRORS = (
    "permission_denied",
    "model_not_found",
    "rate_limit_exceeded",
    "insufficient_quota",
    "server_overloaded",
    "shutting_down",
    "upstream_error",
    "backend_unavailable",
    "upstream_timeout",
)
_IN_GROUP = ("not_found",)
_GROUP_ADMIN = ("not_found", "permission_denied")


def _relay(summary: str, *, streams: bool, dialect: Dialect = Dialect.OPENAI) -> Operation:
    media = {"application/json": BACKEND_JSON}
    if streams:
        media["text/event-stream"] = EVENT_STREAM
    answer = Answer("The backend's answer, streamed as it arrives", media=media)
    return Operation(
        summary, Auth.API_KEY, {200: answer}, _RELAY_ERRORS, body=RELAY_BODY, upstream=True, dialect=dialect
    )


def _report(kind: type[msgspec.Struct], description: str) -> dict[int, Answer]:
    return {200: Answer(description, kind, {"text/csv": CSV})}


def _page(summary: str, status: int = 303) -> Operation:
    """A page for browsers: HTML (or a redirect to the sign-in page), not part of the JSON API."""
    return Operation(
        summary,
        Auth.NONE,
        {status: Answer("HTML for a browser, or a redirect (see docs/dashboard.md)")},
        description="Pages authenticate with the browser session cookie; see docs/dashboard.md.",
    )


def _form(summary: str) -> Operation:
    """A form post from a page: checked for its origin and CSRF token, answered with a redirect or the form again."""
    return Operation(
        summary,
        Auth.NONE,
        {303: Answer("Done: on to the next page"), 200: Answer("The form again, with what was wrong")},
        ("permission_denied",),
        description="Form posts need this hub's Origin and the form's CSRF token (403 otherwise): docs/dashboard.md.",
    )


OPERATIONS: dict[tuple[str, str], Operation] = {
    # OpenAI-compatible client API (api/openai.py)
    ("POST", "/v1/chat/completions"): _relay("OpenAI chat completions, streaming or not", streams=True),
    ("POST", "/v1/completions"): _relay("OpenAI text completions, streaming or not", streams=True),
    ("POST", "/v1/embeddings"): _relay("OpenAI embeddings", streams=False),
    # Other dialects, translated by the agent where the backend does not speak them (api/dialect_routes.py)
    ("POST", "/v1/messages"): _relay("Anthropic Messages, streaming or not", streams=True, dialect=Dialect.ANTHROPIC),
    ("POST", "/v1/messages/count_tokens"): _relay(
        "Anthropic token count of a Messages request (never charged)", streams=False, dialect=Dialect.ANTHROPIC
    ),
    ("POST", "/v1/responses"): _relay("OpenAI Responses, streaming or not", streams=True, dialect=Dialect.RESPONSES),
    ("GET", "/v1/models"): Operation(
        "Models served by connected agents", Auth.API_KEY, ok(service.ModelList, "Every model the key reaches")
    ),
    ("GET", "/v1/models/{model}"): Operation(
        "One model served by connected agents",
        Auth.API_KEY,
        ok(service.Model, "The model, as `GET /v1/models` lists it"),
        ("model_not_found",),
    ),
    # Admin API (api/admin.py, api/users.py, api/billing.py, api/scheduling.py)
    ("POST", "/admin/keys"): Operation(
        "Create an API key", Auth.ADMIN, ok(admin.CreatedKey, "The key", 201), body=Named
    ),
    ("GET", "/admin/keys"): Operation("List API keys", Auth.ADMIN, ok(KeyList, "All keys")),
    ("GET", "/admin/users"): Operation(
        "List user accounts", Auth.ADMIN, ok(admin.UserList, "Every account, with its role, limits and credits")
    ),
    ("DELETE", "/admin/keys/{key_id}"): Operation(
        "Revoke an API key", Auth.ADMIN, ok(RevokedKey, "Revoked (again: the original time)"), ("not_found",)
    ),
    ("POST", "/admin/agent-tokens"): Operation(
        "Create a one-time agent enrolment token",
        Auth.ADMIN,
        ok(admin.CreatedAgentToken, "The token", 201),
        body=Named,
    ),
    ("GET", "/admin/agents"): Operation(
        "Enrolled agents, their state and load", Auth.ADMIN, ok(admin.AgentList, "Every enrolled agent")
    ),
    ("GET", "/admin/cluster"): Operation(
        "The replicas of the cluster, their agents, queue depths and versions",
        Auth.ADMIN,
        ok(cluster.ClusterView, "The cluster as the answering replica sees it"),
        ("not_found",),
        description="Cluster mode only (`--redis-url`); a single hub answers 404 `not_found`.",
    ),
    ("POST", "/admin/agents/{agent_id}/drain"): Operation(
        "Stop routing new requests to an agent",
        Auth.ADMIN,
        ok(admin.AgentStateChange, "Draining; requests in flight finish", 202),
        ("not_found",),
    ),
    ("POST", "/admin/agents/{agent_id}/resume"): Operation(
        "Route to it again", Auth.ADMIN, ok(admin.AgentStateChange, "The admin drain is cleared"), ("not_found",)
    ),
    ("GET", "/admin/usage"): Operation(
        "Latest usage records", Auth.ADMIN, ok(admin.UsageList, "Newest first"), query=admin.UsageQuery
    ),
    ("GET", "/admin/route-explain"): Operation(
        "Why the scheduler would pick an agent for a model now",
        Auth.ADMIN,
        ok(scheduling.RouteExplanation, "Every agent listing the model: its filter reason or its score terms"),
        ("not_found",),
        query=scheduling.ExplainQuery,
    ),
    ("POST", "/admin/credits"): Operation(
        "Grant credits to a user (from the mint)",
        Auth.ADMIN,
        ok(billing.CreditGrant, "The grant and the new balance", 201),
        ("not_found",),
        body=billing.Grant,
    ),
    ("POST", "/admin/users"): Operation(
        "Create a user account",
        Auth.ADMIN,
        ok(accounts.Account, "The account", 201),
        ("conflict",),
        body=accounts.NewUser,
    ),
    # User API: accounts and tokens (api/users.py)
    ("POST", "/api/login"): Operation(
        "A session token (7 days)",
        Auth.NONE,
        ok(accounts.Session, "The session token"),
        ("invalid_api_key", "rate_limit_exceeded"),
        body=accounts.Login,
    ),
    ("POST", "/api/logout"): Operation(
        "Revoke the token the request carries", Auth.USER, ok(accounts.LoggedOut, "Logged out")
    ),
    ("GET", "/api/me"): Operation("Who the token belongs to", Auth.USER, ok(accounts.Account, "The account")),
    ("POST", "/api/tokens"): Operation(
        "Create a personal access token",
        Auth.USER,
        ok(accounts.PersonalToken, "The token", 201),
        body=Named,
    ),
    ("DELETE", "/api/tokens/{token_id}"): Operation(
        "Revoke one of your tokens", Auth.USER, ok(Revoked, "Revoked"), ("not_found",)
    ),
    # Groups, members and invites (api/users.py)
    ("POST", "/api/groups"): Operation(
        "Create a group (you own it)", Auth.USER, ok(groups.GroupName, "The group", 201), body=Named
    ),
    ("GET", "/api/groups"): Operation(
        "Your groups and your role in each", Auth.USER, ok(groups.MembershipList, "Your groups")
    ),
    ("GET", "/api/groups/{group_id}"): Operation(
        "A group you are in: its settings and your role",
        Auth.USER,
        ok(groups.GroupWithRole, "The group"),
        _IN_GROUP,
    ),
    ("PATCH", "/api/groups/{group_id}"): Operation(
        "Group settings (owner): sharing rule and billing",
        Auth.USER,
        ok(groups.GroupView, "The group's settings after the change"),
        _GROUP_ADMIN,
        body=groups.GroupSettings,
    ),
    ("DELETE", "/api/groups/{group_id}"): Operation(
        "Delete a group (owner)", Auth.USER, ok(groups.GroupDeleted, "Deleted"), _GROUP_ADMIN
    ),
    ("GET", "/api/groups/{group_id}/members"): Operation(
        "The group's members and roles (member)", Auth.USER, ok(groups.MemberList, "The members"), _IN_GROUP
    ),
    ("POST", "/api/groups/{group_id}/leave"): Operation(
        "Leave a group (member; not the owner)",
        Auth.USER,
        ok(groups.GroupLeft, "Left"),
        ("not_found", "invalid_request_error"),
    ),
    ("DELETE", "/api/groups/{group_id}/members/{user_id}"): Operation(
        "Remove a member (owner, admin; never the owner)",
        Auth.USER,
        ok(groups.MemberRemoved, "Removed"),
        (*_GROUP_ADMIN, "invalid_request_error"),
    ),
    ("PATCH", "/api/groups/{group_id}/members/{user_id}"): Operation(
        "Make a member an admin, or a member again (owner only)",
        Auth.USER,
        ok(groups.MemberRoleSet, "The new role"),
        _GROUP_ADMIN,
        body=groups.MemberRole,
    ),
    ("POST", "/api/groups/{group_id}/invites"): Operation(
        "Create an invite code (owner, admin)",
        Auth.USER,
        ok(groups.CreatedInvite, "The invite", 201),
        _GROUP_ADMIN,
        body=groups.NewInvite,
    ),
    ("GET", "/api/groups/{group_id}/invites"): Operation(
        "List invites, never the codes (owner, admin)", Auth.USER, ok(groups.InviteList, "Invites"), _GROUP_ADMIN
    ),
    ("DELETE", "/api/groups/{group_id}/invites/{invite_id}"): Operation(
        "Revoke an invite (owner, admin)", Auth.USER, ok(Revoked, "Revoked"), _GROUP_ADMIN
    ),
    ("POST", "/api/invites/redeem"): Operation(
        "Join a group with an invite code",
        Auth.USER,
        ok(groups.Joined, "Joined"),
        ("invalid_invite", "conflict"),
        body=groups.Redeem,
    ),
    # Model aliases (api/scheduling.py)
    ("GET", "/api/groups/{group_id}/aliases"): Operation(
        "The group's model aliases (members)", Auth.USER, ok(scheduling.AliasList, "Aliases"), _IN_GROUP
    ),
    ("PUT", "/api/groups/{group_id}/aliases/{alias}"): Operation(
        "Map a name to concrete models, most preferred first (owner, admin)",
        Auth.USER,
        ok(scheduling.Alias, "The alias"),
        _GROUP_ADMIN,
        body=scheduling.AliasBody,
    ),
    ("DELETE", "/api/groups/{group_id}/aliases/{alias}"): Operation(
        "Remove an alias (owner, admin)", Auth.USER, ok(scheduling.AliasDeleted, "Removed"), _GROUP_ADMIN
    ),
    # Model claims (api/claims.py)
    ("GET", "/api/groups/{group_id}/claims"): Operation(
        "Who may serve which model name in the group, and who is held out (members)",
        Auth.USER,
        ok(claims.GroupClaimsView, "Policy, approvals, holds and rules"),
        _IN_GROUP,
    ),
    ("PUT", "/api/groups/{group_id}/claims/policy"): Operation(
        "Set who may serve which model name: `open` or `approved` (owner)",
        Auth.USER,
        ok(claims.PolicyView, "The policy now"),
        _GROUP_ADMIN,
        body=claims.PolicyBody,
    ),
    ("PUT", "/api/groups/{group_id}/approvals/{agent_id}/{model}"): Operation(
        "Approve an agent to serve a model name in the group (owner, admin)",
        Auth.USER,
        ok(claims.ApprovalView, "The approval"),
        _GROUP_ADMIN,
    ),
    ("DELETE", "/api/groups/{group_id}/approvals/{agent_id}/{model}"): Operation(
        "Withdraw an approval (owner, admin)", Auth.USER, ok(claims.Revocation, "Withdrawn"), _GROUP_ADMIN
    ),
    ("DELETE", "/api/groups/{group_id}/holds/{agent_id}/{model}"): Operation(
        "Put a flagged or parked agent back in routing for the model (owner, admin)",
        Auth.USER,
        ok(claims.Revocation, "Lifted"),
        _GROUP_ADMIN,
    ),
    ("PUT", "/api/groups/{group_id}/model-rules/{model}"): Operation(
        "A model's throughput floor and pinned spot-check reference; model `*`: every model (owner, admin)",
        Auth.USER,
        ok(claims.RuleView, "The rule now"),
        _GROUP_ADMIN,
        body=claims.RuleBody,
    ),
    ("POST", "/api/groups/{group_id}/spot-checks"): Operation(
        "Run spot checks of a model now (owner, admin); never billed",
        Auth.USER,
        ok(claims.SpotCheckReport, "Each check's answers and verdicts"),
        _GROUP_ADMIN,
        body=claims.SpotCheckBody,
    ),
    ("GET", "/api/claim-events"): Operation(
        "Your agents taken out of routing for a model (flagged, parked) or put back, newest first",
        Auth.USER,
        ok(claims.ClaimEventList, "The latest events"),
    ),
    # Keys and agents (api/users.py)
    ("POST", "/api/keys"): Operation(
        "Create an API key for some or all of your groups",
        Auth.USER,
        ok(accounts.CreatedUserKey, "The key", 201),
        body=accounts.NewKey,
    ),
    ("GET", "/api/keys"): Operation("Your API keys (never the secrets)", Auth.USER, ok(accounts.UserKeyList, "Keys")),
    ("DELETE", "/api/keys/{key_id}"): Operation(
        "Revoke one of your keys", Auth.USER, ok(RevokedKey, "Revoked"), ("not_found",)
    ),
    ("POST", "/api/agent-tokens"): Operation(
        "A one-time enrolment token for an agent you will own",
        Auth.USER,
        ok(admin.AgentToken, "The token", 201),
        body=Named,
    ),
    ("GET", "/api/agents"): Operation(
        "Your agents and the groups they are shared into", Auth.USER, ok(agents.OwnAgentList, "Agents")
    ),
    ("PATCH", "/api/agents/{agent_id}"): Operation(
        "Owner controls: pause, availability windows, own requests only / first",
        Auth.USER,
        ok(agents.ControlsView, "The agent's controls now"),
        ("not_found",),
        body=agents.AgentControls,
    ),
    ("POST", "/api/agents/{agent_id}/groups"): Operation(
        "Share your agent into a group you own or administer",
        Auth.USER,
        ok(agents.Sharing, "Shared"),
        _GROUP_ADMIN,
        body=agents.GroupRef,
    ),
    ("DELETE", "/api/agents/{agent_id}/groups/{group_id}"): Operation(
        "Stop sharing your agent into a group", Auth.USER, ok(agents.Sharing, "Unshared"), ("not_found",)
    ),
    # Credits, prices, reports and receipts (api/billing.py)
    ("GET", "/api/balance"): Operation(
        "Your credits: spendable and held for requests in flight", Auth.USER, ok(billing.Balance, "Credits")
    ),
    ("GET", "/api/agents/{agent_id}/prices"): Operation(
        "Your agent's prices per model (credits per million tokens)",
        Auth.USER,
        ok(billing.AgentPrices, "Prices"),
        ("not_found",),
    ),
    ("PUT", "/api/agents/{agent_id}/prices"): Operation(
        "Set your agent's prices (within the bounds of every group it is shared into)",
        Auth.USER,
        ok(billing.AgentPrices, "Prices"),
        ("not_found",),
        body=billing.AgentPriceTable,
    ),
    ("GET", "/api/groups/{group_id}/prices"): Operation(
        "What each model costs in the group now, per agent, with the dynamic multiplier and why (members)",
        Auth.USER,
        ok(billing.GroupPrices, "Quotes"),
        _IN_GROUP,
    ),
    ("GET", "/api/groups/{group_id}/usage"): Operation(
        "The group's totals per day, member and model (owner, admin)",
        Auth.USER,
        _report(billing.GroupUsageReport, "Totals"),
        _GROUP_ADMIN,
        query=billing.ReportQuery,
    ),
    ("GET", "/api/usage"): Operation(
        "Your usage and spend per day, key and model",
        Auth.USER,
        _report(billing.UsageReport, "Rows"),
        query=billing.ReportQuery,
    ),
    ("GET", "/api/earnings"): Operation(
        "Your agents' earnings per day, agent and model",
        Auth.USER,
        _report(billing.EarningsReport, "Rows"),
        query=billing.ReportQuery,
    ),
    ("GET", "/api/requests"): Operation(
        "Your requests with their ids, newest first (admins: any user's)",
        Auth.USER,
        ok(requests.RequestList, "A page; pass `next_before` as `before` for the next"),
        ("permission_denied", "not_found"),
        query=requests.RequestsQuery,
    ),
    ("GET", "/api/receipts/{request_id}"): Operation(
        "The hub-signed receipt of a settled request (its consumer and the agent's owner)",
        Auth.USER,
        ok(SignedReceipt, "Verify it with `potluck receipt verify`"),
        ("not_found",),
    ),
    ("GET", "/.well-known/potluck-hub-key"): Operation(
        "The hub's Ed25519 public key, which signs receipts", Auth.NONE, ok(billing.HubKey, "The key")
    ),
    # The dashboard's numbers (api/dashboard.py, api/dashboard_stream.py)
    ("GET", "/api/dashboard/now"): Operation(
        "The fleet you can see now, with 15-minute sparklines, your credits and the event feed",
        Auth.USER,
        ok(dashboard.NowView, "Now"),
    ),
    ("GET", "/api/dashboard/models"): Operation(
        "Per model: hot and cold agents, queue, TTFT, speed, price and capability badges",
        Auth.USER,
        ok(dashboard.ModelsView, "Models"),
    ),
    ("GET", "/api/dashboard/machines"): Operation(
        "Your agents (every agent for admins), with live GPU figures from their LOAD frames",
        Auth.USER,
        ok(dashboard.MachinesView, "Machines"),
    ),
    ("GET", "/api/dashboard/usage"): Operation(
        "Daily spend and earnings by model from the rollups, and the members' shares of the groups you manage",
        Auth.USER,
        ok(dashboard.UsageView, "Usage"),
        query=dashboard.UsageQuery,
    ),
    ("GET", "/api/dashboard/usage.csv"): Operation(
        "The daily series of `/api/dashboard/usage` as CSV",
        Auth.USER,
        {200: Answer("CSV", media={"text/csv": CSV})},
        query=dashboard.UsageQuery,
    ),
    ("GET", "/api/dashboard/holds"): Operation(
        "Your open credit holds (requests in flight)", Auth.USER, ok(dashboard.HoldsView, "Holds")
    ),
    ("GET", "/api/dashboard/explain"): Operation(
        "Why the scheduler would pick an agent for a model now (admin users)",
        Auth.USER,
        ok(scheduling.RouteExplanation, "Explanation"),
        ("permission_denied",),
        query=dashboard.ModelQuery,
    ),
    ("GET", "/api/dashboard/stream"): Operation(
        "One Server-Sent Events stream per dashboard page",
        Auth.USER,
        {
            200: Answer(
                "Events `now`, `request`, `event`, `agent` and `dropped`", media={"text/event-stream": DASHBOARD_EVENTS}
            )
        },
        description=(
            "Each event's `data` is one JSON object: `now` a NowView (every second, only when its figures "
            "changed), `request` a RequestRow, `event` a FeedEvent, `agent` an AgentChange, `dropped` a Dropped. "
            "A `: ping` comment comes every 15 s while nothing else does."
        ),
    ),
    # Health and metrics (api/health.py)
    ("GET", "/healthz"): Operation("Liveness", Auth.NONE, ok(service.Alive, "The process serves HTTP")),
    ("GET", "/readyz"): Operation(
        "Readiness",
        Auth.NONE,
        {
            200: Answer("Ready", service.Ready),
            503: Answer(
                "Shutting down, or the database does not answer (this body, not the error envelope)", service.NotReady
            ),
        },
    ),
    ("GET", "/metrics"): Operation(
        "Prometheus metrics",
        Auth.NONE,
        {200: Answer("Prometheus text format; see docs/operations.md", media={"text/plain": {"type": "string"}})},
    ),
    # The hub hands out its agent (api/install.py)
    ("GET", "/install.sh"): Operation(
        "The agent install script, with this hub's URL and wheel name baked in",
        Auth.NONE,
        {200: Answer("POSIX sh; `curl -fsSL HUB/install.sh | sh -s -- --token pat-…`", media=SHELL_SCRIPT)},
        ("invalid_request_error",),
        description="The URL is `--public-url` when set, else this request's scheme and `Host` (a plain host[:port], "
        "else 400). Never cached.",
    ),
    ("GET", "/download/{filename}"): Operation(
        "The agent wheel of the running version, `potluck-<version>-py3-none-any.whl`, or its `.sha256`",
        Auth.NONE,
        {200: Answer("The wheel, or `<hex>  <filename>` as sha256sum writes it", media=DOWNLOAD)},
        ("not_found",),
    ),
    # The agent WebSocket (api/agent_ws.py)
    ("GET", "/agent/connect"): Operation(
        "The agent WebSocket",
        Auth.NONE,
        {101: Answer("Switching to the WebSocket protocol")},
        ("invalid_request_error",),
        description=(
            "Agents connect here with a WebSocket upgrade. Authentication (the agent's Ed25519 key and, on first "
            "contact, a one-time enrolment token) and every message are part of the agent protocol, not of HTTP: "
            "see docs/protocol.md."
        ),
    ),
    # The dashboard's pages and forms (api/web/): HTML for browsers, described in docs/dashboard.md
    **{("GET", path): _page("The dashboard (redirects to /ui/now)") for path in ("/", "/dashboard", "/ui")},
    ("GET", "/ui/{page}"): _page(
        "A dashboard page: now, models, machines, requests, usage, keys, groups, add-gpu, admin"
    ),
    ("GET", "/static/{name}"): _page("A script or style sheet of the pages", status=200),
    ("GET", "/login"): _page("The sign-in form", status=200),
    ("POST", "/login"): _form("Sign in: sets the session cookie and redirects"),
    ("POST", "/logout"): _form("Sign out: ends the session and redirects to /login"),
    ("GET", "/join/{code}"): _page("An invite link: sign up (or sign in) and join the group", status=200),
    ("POST", "/join/{code}"): _form("Create an account and join the invite's group, or join it as the signed-in user"),
    ("GET", "/signup"): _page("The sign-up form (--signup open)", status=200),
    ("POST", "/signup"): _form("Create an account without an invite (--signup open)"),
    ("GET", "/password"): _page("The password form", status=200),
    ("POST", "/password"): _form("Change your password; your other sessions end"),
    # The link between hub replicas (api/peer.py)
    ("GET", "/cluster/peer"): Operation(
        "A peer link between hub replicas (cluster mode)",
        Auth.NONE,
        {101: Answer("Switching to the WebSocket protocol")},
        ("invalid_api_key",),
        description=(
            "Replicas of one cluster (`--redis-url`) link to each other here with a WebSocket upgrade, authenticated "
            "by a key derived from `--cluster-secret` and named by `x-potluck-replica`. Requests placed on an agent "
            "tunnelled to another replica travel over it in the agent frame format: see docs/operations.md."
        ),
    ),
    # This document (api/openapi.py)
    ("GET", "/openapi.json"): Operation(
        "This OpenAPI document",
        Auth.NONE,
        {200: Answer("OpenAPI 3.1", media={"application/json": {"type": "object"}})},
    ),
}
