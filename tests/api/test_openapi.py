"""``GET /openapi.json``: a valid OpenAPI 3.1 document of exactly the routes ``create_app`` registers, generated
from typed bodies, whose schemas describe what the hub really answers (errors included).

The last test drives a real hub, agent and backend through every documented answer and validates each one
against the document, so a handler that answers something else than its declared type fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import re
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from potluck.api.openapi import ANTHROPIC_ERROR_SCHEMA, ERROR_SCHEMA, build_document
from potluck.api.operations import OPERATIONS
from potluck.app import create_app
from potluck.hub.auth import AdminAuth
from potluck.hub.settings import HubSettings
from potluck.protocol.errors import ERROR_CODES
from testing.fake_backend import BackgroundServer, FakeBackend
from testing.processes import ADMIN_TOKEN, AgentProcess, HubProcess

ADMIN = {"Authorization": "Bearer adm"}
ENVELOPE_REF = f"#/components/schemas/{ERROR_SCHEMA}"
ANTHROPIC_REF = f"#/components/schemas/{ANTHROPIC_ERROR_SCHEMA}"
JSON = "application/json"


CLUSTER_ONLY = {("GET", "/admin/cluster")}
"""Answered only by a replica of a cluster: tests/cluster checks these answers against the document."""


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(HubSettings(data_dir=tmp_path), AdminAuth.hash_token("adm"))
    async with TestClient(TestServer(app)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for ``schema`` whose ``#/components/...`` references resolve in ``document``."""
    root = {**schema, "components": document["components"]}
    return jsonschema.Draft202012Validator(root, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in document["paths"].items() for method, op in item.items()]


def is_error(response: dict[str, Any]) -> bool:
    """An error answer: OpenAI's envelope, or Anthropic's error on the Messages routes."""
    return response.get("content", {}).get(JSON, {}).get("schema") in ({"$ref": ENVELOPE_REF}, {"$ref": ANTHROPIC_REF})


def check_answer(
    document: dict[str, Any], method: str, route: str, status: int, headers: Any, media: str, raw: bytes
) -> Any:
    """The answer is documented for ``status`` and ``media``, carries a request id, and its body matches the
    documented schema; returns the body (decoded when it is JSON)."""
    op = document["paths"][route][method.lower()]
    response = op["responses"].get(str(status)) or op["responses"].get("default")
    assert response is not None, f"{method} {route} does not document {status}"
    assert re.fullmatch(r"req_[0-9a-f]{24}", headers["x-request-id"])
    assert media in response["content"], f"{method} {route} {status} does not document {media}"
    if media == "application/octet-stream":
        return raw  # binary (the agent wheel): no JSON Schema to check it against
    body = json.loads(raw) if media == JSON else raw.decode()
    validator(document, response["content"][media]["schema"]).validate(body)
    return body


async def check(document: dict[str, Any], resp: Any, method: str, route: str, status: int) -> Any:
    assert resp.status == status, await resp.text()
    return check_answer(document, method, route, status, resp.headers, resp.content_type, await resp.read())


# -- the document --------------------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)


def test_paths_are_exactly_the_routes_of_create_app(tmp_path: Path, document: dict[str, Any]) -> None:
    app = create_app(HubSettings(data_dir=tmp_path), AdminAuth.hash_token("x"))
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD" and r.resource}
    documented = {(method, path) for method, path, _ in operations(document)}
    assert ("GET", "/openapi.json") in routes
    assert documented == routes, f"undocumented: {routes - documented}; not routes: {documented - routes}"


def test_every_operation_has_a_summary_security_and_unique_id(document: dict[str, Any]) -> None:
    schemes = set(document["components"]["securitySchemes"])
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))
    for method, path, op in operations(document):
        assert op["summary"], f"{method} {path}"
        assert isinstance(op["security"], list), f"{method} {path} must say its security, even none"
        for requirement in op["security"]:
            assert set(requirement) <= schemes
        if path.startswith("/admin/"):
            assert op["security"] == [{"adminToken": []}]
        elif path.startswith("/api/") and path != "/api/login":
            assert op["security"] == [{"userToken": []}]
        elif path.startswith("/v1/"):
            assert {"apiKey": []} in op["security"]
        else:
            assert op["security"] == [], f"{method} {path} needs no authentication"


def test_agent_websocket_points_to_the_protocol_doc(document: dict[str, Any]) -> None:
    op = document["paths"]["/agent/connect"]["get"]
    assert "docs/protocol.md" in op["description"]
    assert "101" in op["responses"]


def test_every_hub_error_uses_the_error_envelope(document: dict[str, Any]) -> None:
    statuses = {status for status, _ in ERROR_CODES.values()} | {529}  # 529: Anthropic's "overloaded"
    for method, path, op in operations(document):
        for status, response in op["responses"].items():
            if status == "default" or (int(status) >= 400 and (method, path, status) != ("GET", "/readyz", "503")):
                assert is_error(response), f"{method} {path} {status}"
                if status != "default":
                    assert int(status) in statuses, f"{method} {path}: {status} is no status of ERROR_CODES"


def test_every_json_answer_is_a_typed_body() -> None:
    """Only what the hub does not build itself has a hand-written schema: relayed backend bodies, this document."""
    hand_written = {
        (method, path, status)
        for (method, path), op in OPERATIONS.items()
        for status, answer in op.answers.items()
        if JSON in answer.media
    }
    relayed = {(method, path, 200) for (method, path), op in OPERATIONS.items() if op.upstream}
    assert hand_written == {*relayed, ("GET", "/openapi.json", 200)}


def test_every_schema_and_property_is_described(document: dict[str, Any]) -> None:
    for name, schema in document["components"]["schemas"].items():
        assert schema.get("description"), f"{name} has no docstring"
        for prop, value in schema.get("properties", {}).items():
            assert value.get("description"), f"{name}.{prop} has no docstring"
    for method, path, op in operations(document):
        for parameter in op.get("parameters", []):
            if parameter["in"] == "query":
                assert parameter.get("description"), f"{method} {path} ?{parameter['name']}"


def test_request_bodies_and_queries_are_the_types_the_handlers_decode(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    paths = document["paths"]
    body = paths["/admin/users"]["post"]["requestBody"]["content"][JSON]["schema"]
    assert body == {"$ref": "#/components/schemas/NewUser"}
    assert schemas["NewUser"]["required"] == ["username", "password"]
    assert schemas["GroupSettings"]["additionalProperties"] is False  # forbid_unknown_fields
    relay = paths["/v1/chat/completions"]["post"]["requestBody"]["content"][JSON]["schema"]
    assert relay["$ref"] == "#/components/schemas/RoutingFields"
    assert relay["required"] == ["model"]
    assert relay["additionalProperties"] is True
    assert set(schemas["RoutingFields"]["properties"]) == {
        "model",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
    }
    (limit,) = paths["/admin/usage"]["get"]["parameters"]
    assert (limit["name"], limit["required"], limit["schema"]) == ("limit", False, {"type": "integer", "default": 100})
    report = {p["name"]: p for p in paths["/api/usage"]["get"]["parameters"]}
    assert report["format"]["schema"] == {"enum": ["csv", "json"], "default": "json"}
    assert report["since"]["schema"] == {"type": "string"}


def test_envelope_schema_rejects_other_shapes(document: dict[str, Any]) -> None:
    envelope = validator(document, {"$ref": ENVELOPE_REF})
    envelope.validate({"error": {"message": "m", "type": "t", "code": "c", "param": None}})
    for bad in ({"error": {"message": "m"}}, {"error": "m"}, {"message": "m", "type": "t"}):
        with pytest.raises(jsonschema.ValidationError):
            envelope.validate(bad)


# -- an in-process hub ------------------------------------------------------------------------------------


async def test_served_without_auth_and_built_once(client: TestClient[Any, Any], document: dict[str, Any]) -> None:
    first = await client.get("/openapi.json")
    assert first.status == 200
    assert first.content_type == "application/json"
    assert first.headers["x-request-id"].startswith("req_")
    body = await first.read()
    assert await first.json() == document
    second = await client.get("/openapi.json")
    assert await second.read() == body


@pytest.mark.parametrize(
    ("method", "route", "path", "headers", "json_body"),
    [
        ("POST", "/v1/chat/completions", "/v1/chat/completions", {}, {"model": "m", "messages": []}),
        ("GET", "/v1/models", "/v1/models", {"x-api-key": "pk-wrong"}, None),
        ("POST", "/v1/embeddings", "/v1/embeddings", {"Authorization": "Basic abc"}, {"model": "m"}),
        ("GET", "/admin/keys", "/admin/keys", bearer("not-the-admin-token"), None),
        ("DELETE", "/admin/keys/{key_id}", "/admin/keys/key_x", {}, None),
        ("GET", "/api/me", "/api/me", {}, None),
        ("POST", "/api/groups", "/api/groups", bearer("nope"), {"name": "g"}),
        ("POST", "/api/login", "/api/login", {}, {"username": "nobody", "password": "wrong-password"}),
    ],
)
async def test_401_body_matches_the_documented_envelope(
    client: TestClient[Any, Any],
    document: dict[str, Any],
    method: str,
    route: str,
    path: str,
    headers: dict[str, str],
    json_body: Any,
) -> None:
    resp = await client.request(method, path, headers=headers, json=json_body)
    body = await check(document, resp, method, route, 401)
    assert body["error"]["code"] == "invalid_api_key"


async def test_bad_requests_match_the_documented_envelope(
    client: TestClient[Any, Any], document: dict[str, Any]
) -> None:
    resp = await client.post("/admin/keys", json={"name": ""}, headers=ADMIN)
    await check(document, resp, "POST", "/admin/keys", 400)
    resp = await client.post("/admin/keys", data=b"not json", headers=ADMIN)
    await check(document, resp, "POST", "/admin/keys", 400)
    resp = await client.get("/admin/usage?limit=x", headers=ADMIN)
    assert (await check(document, resp, "GET", "/admin/usage", 400))["error"]["param"] == "limit"
    resp = await client.delete("/admin/keys/key_nope", headers=ADMIN)
    await check(document, resp, "DELETE", "/admin/keys/{key_id}", 404)
    resp = await client.post("/admin/agents/agt_nope/drain", headers=ADMIN)
    await check(document, resp, "POST", "/admin/agents/{agent_id}/drain", 404)
    key = await check(
        document, await client.post("/admin/keys", json={"name": "k"}, headers=ADMIN), "POST", "/admin/keys", 201
    )
    resp = await client.post("/v1/chat/completions", json={"model": "absent"}, headers=bearer(key["key"]))
    await check(document, resp, "POST", "/v1/chat/completions", 404)
    resp = await client.post("/v1/chat/completions", json={"stream": 1}, headers=bearer(key["key"]))
    await check(document, resp, "POST", "/v1/chat/completions", 400)


# -- a real hub, agent and backend: every documented answer --------------------------------------------------

MODEL = "conformance-model"
PASSWORD = "a long password"
WAIT_S = 20.0
POLL_S = 0.05
"""Pause between two looks at another process's state, which tells no one when it changes."""


class Conformance:
    """Calls a hub and checks each answer against the document; remembers which documented answers it saw."""

    def __init__(self, session: aiohttp.ClientSession, url: str, document: dict[str, Any]) -> None:
        self.session = session
        self.url = url
        self.document = document
        self.seen: set[tuple[str, str, str, str]] = set()
        self.request_id = ""
        self._routes: list[tuple[re.Pattern[str], str]] = [
            (re.compile("[^/]+".join(re.escape(part) for part in re.split(r"{\w+}", path))), path)
            for path in document["paths"]
        ]

    def route(self, path: str) -> str:
        matches = [route for pattern, route in self._routes if pattern.fullmatch(path)]
        assert len(matches) == 1, f"{path} matches {matches}"
        return matches[0]

    async def call(
        self, method: str, path: str, status: int, *, token: str | None = None, body: Any = None, data: bytes = b""
    ) -> Any:
        headers = bearer(token) if token else {}
        async with self.session.request(method, self.url + path, json=body, data=data or None, headers=headers) as resp:
            raw = await resp.read()
        assert resp.status == status, f"{method} {path}: {resp.status} {raw[:500]!r}"
        route = self.route(path.partition("?")[0])
        answer = check_answer(self.document, method, route, status, resp.headers, resp.content_type, raw)
        self.seen.add((method, route, str(status), resp.content_type))
        self.request_id = resp.headers["x-request-id"]
        return answer

    async def first_event(self, path: str, token: str) -> tuple[str, Any]:
        """Open an event stream that never ends by itself; its first event (name, JSON body), then hang up."""
        async with self.session.get(self.url + path, headers=bearer(token)) as resp:
            assert resp.status == 200, f"GET {path}: {resp.status}"
            async with asyncio.timeout(WAIT_S):
                raw = await resp.content.readuntil(b"\n\n")
        self.seen.add(("GET", self.route(path), "200", resp.content_type))
        name, data = raw.decode().strip().split("\n")
        return name.removeprefix("event: "), json.loads(data.removeprefix("data: "))

    def unseen(self) -> set[tuple[str, str, str, str]]:
        """Documented answers other than errors (and than the WebSocket upgrade) that no call got."""
        documented = {
            (method, path, status, media)
            for method, path, op in operations(self.document)
            for status, response in op["responses"].items()
            if status != "default" and not is_error(response)
            for media in response.get("content", {})
            if (method, path) not in CLUSTER_ONLY
        }
        return documented - self.seen

    async def until(self, method: str, path: str, token: str, done: Any) -> Any:
        """Call until ``done(answer)``: for state that another process changes."""
        async with asyncio.timeout(WAIT_S):
            while not done(answer := await self.call(method, path, 200, token=token)):
                await asyncio.sleep(POLL_S)
        return answer


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[HubProcess, FakeBackend, str]]:
    backend = FakeBackend([MODEL], chunks=4)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(BackgroundServer(backend.make_app()))
        hub = HubProcess(tmp_path / "hub", "--shutdown-timeout", "30", "--heartbeat-interval", "0.3")
        stack.callback(hub.stop)
        yield hub, backend, server.url


def csv_header(text: str) -> list[str]:
    return next(csv.reader(io.StringIO(text)))


@pytest.mark.slow
async def test_every_documented_answer_matches_its_schema(
    live: tuple[HubProcess, FakeBackend, str], document: dict[str, Any], tmp_path: Path
) -> None:
    hub, backend, backend_url = live
    agents: list[AgentProcess] = []
    try:
        async with aiohttp.ClientSession() as session:
            api = Conformance(session, hub.url, document)
            await scenario(api, hub, backend, backend_url, tmp_path, agents)
            assert not api.unseen(), f"documented answers no call checked: {sorted(api.unseen())}"
    finally:
        for agent in agents:
            agent.stop()


async def scenario(
    api: Conformance, hub: HubProcess, backend: FakeBackend, backend_url: str, root: Path, agents: list[AgentProcess]
) -> None:
    assert await api.call("GET", "/openapi.json", 200) == api.document
    await api.call("GET", "/healthz", 200)
    await api.call("GET", "/readyz", 200)
    await api.call("GET", "/admin/cluster", 404, token=ADMIN_TOKEN)  # a single hub is no cluster
    await api.call("GET", "/.well-known/potluck-hub-key", 200)

    async def account(name: str) -> tuple[str, str]:
        user = await api.call(
            "POST", "/admin/users", 201, token=ADMIN_TOKEN, body={"username": name, "password": PASSWORD}
        )
        login = await api.call("POST", "/api/login", 200, body={"username": name, "password": PASSWORD})
        return user["id"], login["token"]

    # Accounts and tokens.
    _, olga = await account("olga")
    carl_id, carl = await account("carl")
    _, dave = await account("dave")
    _, eve = await account("eve")
    await api.call("POST", "/admin/users", 409, token=ADMIN_TOKEN, body={"username": "olga", "password": PASSWORD})
    await api.call("GET", "/api/me", 200, token=olga)
    pat = await api.call("POST", "/api/tokens", 201, token=olga, body={"name": "laptop"})
    await api.call("DELETE", f"/api/tokens/{pat['id']}", 200, token=olga)
    await api.call("POST", "/api/logout", 200, token=dave)
    await api.call("GET", "/api/me", 401, token=dave)

    # Olga's credits group, with her agent in it at her prices.
    group = (await api.call("POST", "/api/groups", 201, token=olga, body={"name": "market"}))["id"]
    await api.call("PATCH", f"/api/groups/{group}", 200, token=olga, body={"billing": "credits", "max_tokens_cap": 64})
    await api.call("PATCH", f"/api/groups/{group}", 400, token=olga, body={"color": "red"})
    enrol = await api.call("POST", "/api/agent-tokens", 201, token=olga, body={"name": "olga-gpu"})
    agents.append(AgentProcess(hub, root / "olga-gpu", [backend_url], name="olga-gpu", token=enrol["token"]))
    mine = await api.until("GET", "/api/agents", olga, lambda a: [x for x in a["agents"] if x["state"] == "online"])
    agent_id = mine["agents"][0]["id"]
    await api.call("POST", f"/api/agents/{agent_id}/groups", 200, token=olga, body={"group_id": group})
    prices = {MODEL: {"input_per_mtok": 100.0, "output_per_mtok": 1000.0}}
    await api.call("PUT", f"/api/agents/{agent_id}/prices", 200, token=olga, body=prices)
    assert (await api.call("GET", f"/api/agents/{agent_id}/prices", 200, token=olga))["prices"] == prices
    # Two windows that cover every minute of every day, so the agent stays available.
    windows = [
        {"days": list(range(7)), "start": "00:00", "end": "12:00"},
        {"days": list(range(7)), "start": "12:00", "end": "00:00"},
    ]
    controls = {"own_requests_first": True, "schedule": {"timezone": "UTC", "windows": windows}}
    answer = await api.call("PATCH", f"/api/agents/{agent_id}", 200, token=olga, body=controls)
    assert answer["schedule"]["windows"] == windows
    await api.call("PATCH", f"/api/agents/{agent_id}", 200, token=olga, body={"schedule": None})

    # Carl joins with an invite and gets credits.
    invite = await api.call("POST", f"/api/groups/{group}/invites", 201, token=olga, body={"max_uses": 2})
    await api.call("GET", f"/api/groups/{group}/invites", 404, token=carl)
    await api.call("POST", "/api/invites/redeem", 200, token=carl, body={"code": invite["code"]})
    await api.call("GET", f"/api/groups/{group}/invites", 403, token=carl)
    await api.call("POST", "/api/invites/redeem", 409, token=carl, body={"code": invite["code"]})
    await api.call("GET", f"/api/groups/{group}/invites", 200, token=olga)
    await api.call("DELETE", f"/api/groups/{group}/invites/{invite['id']}", 200, token=olga)
    await api.call("PATCH", f"/api/groups/{group}/members/{carl_id}", 200, token=olga, body={"role": "member"})
    await api.call("GET", f"/api/groups/{group}/members", 200, token=carl)
    await api.call("GET", f"/api/groups/{group}", 200, token=carl)
    await api.call("GET", "/api/groups", 200, token=carl)
    grant = {"user_id": carl_id, "amount": 5, "reason": "conformance"}
    await api.call("POST", "/admin/credits", 201, token=ADMIN_TOKEN, body=grant)
    await api.call("GET", "/api/balance", 200, token=carl)

    # Carl's key: models, an alias, and every relayed route, streamed where it streams.
    key = await api.call("POST", "/api/keys", 201, token=carl, body={"name": "carl", "groups": [group]})
    await api.call("GET", "/api/keys", 200, token=carl)
    await api.call("PUT", f"/api/groups/{group}/aliases/fast", 200, token=olga, body={"models": [MODEL]})
    await api.call("GET", f"/api/groups/{group}/aliases", 200, token=carl)
    models = await api.call("GET", "/v1/models", 200, token=key["key"])
    assert {m["id"]: m.get("alias_of") for m in models["data"]} == {MODEL: None, "fast": [MODEL]}
    assert (await api.call("GET", f"/v1/models/{MODEL}", 200, token=key["key"]))["id"] == MODEL
    await api.call("DELETE", f"/api/groups/{group}/aliases/fast", 200, token=olga)
    # Model claims: Olga approves her agent under the `approved` policy; a pinned reference it does not
    # give flags it after three spot checks; she lifts the flag and opens the group again.
    await api.call("PUT", f"/api/groups/{group}/claims/policy", 200, token=olga, body={"policy": "approved"})
    await api.call("PUT", f"/api/groups/{group}/claims/policy", 403, token=carl, body={"policy": "open"})
    await api.call("PUT", f"/api/groups/{group}/approvals/{agent_id}/{MODEL}", 200, token=olga)
    pinned = {"reference_prompt": "Say ok", "reference_answer": "certainly not what the fake says"}
    await api.call("PUT", f"/api/groups/{group}/model-rules/{MODEL}", 200, token=olga, body=pinned)
    await api.call("PUT", f"/api/groups/{group}/model-rules/*", 400, token=olga, body=pinned)
    checked = await api.call(
        "POST", f"/api/groups/{group}/spot-checks", 200, token=olga, body={"model": MODEL, "rounds": 3}
    )
    assert checked["flagged"] == [agent_id]
    claims = await api.call("GET", f"/api/groups/{group}/claims", 200, token=carl)
    assert claims["policy"] == "approved"
    assert claims["holds"][0]["kind"] == "flagged"
    await api.call("DELETE", f"/api/groups/{group}/holds/{agent_id}/{MODEL}", 200, token=olga)
    events = await api.call("GET", "/api/claim-events", 200, token=olga)
    assert [(e["change"], e["kind"]) for e in events["events"]] == [("lifted", "flagged"), ("held", "flagged")]
    assert (await api.call("GET", "/api/claim-events", 200, token=carl))["events"] == []
    await api.call("DELETE", f"/api/groups/{group}/holds/{agent_id}/{MODEL}", 404, token=olga)
    await api.call("PUT", f"/api/groups/{group}/model-rules/{MODEL}", 200, token=olga, body={})
    await api.call("PUT", f"/api/groups/{group}/claims/policy", 200, token=olga, body={"policy": "open"})
    await api.call("DELETE", f"/api/groups/{group}/approvals/{agent_id}/{MODEL}", 200, token=olga)
    await api.call("GET", f"/api/groups/{group}/prices", 200, token=carl)
    hello = [{"role": "user", "content": "hello"}]
    await api.call("POST", "/v1/chat/completions", 200, token=key["key"], body={"model": MODEL, "messages": hello})
    paid = api.request_id
    events = await api.call(
        "POST", "/v1/chat/completions", 200, token=key["key"], body={"model": MODEL, "messages": hello, "stream": True}
    )
    assert events.endswith("data: [DONE]\n\n")
    await api.call("POST", "/v1/completions", 200, token=key["key"], body={"model": MODEL, "prompt": "hi"})
    await api.call(
        "POST", "/v1/completions", 200, token=key["key"], body={"model": MODEL, "prompt": "hi", "stream": True}
    )
    await api.call("POST", "/v1/embeddings", 200, token=key["key"], body={"model": MODEL, "input": "hi"})
    # The other dialects, translated by the agent (the fake speaks chat completions only).
    message = {"model": MODEL, "max_tokens": 16, "messages": hello}
    answer = await api.call("POST", "/v1/messages", 200, token=key["key"], body=message)
    assert answer["type"] == "message"
    events = await api.call("POST", "/v1/messages", 200, token=key["key"], body={**message, "stream": True})
    assert events.rstrip().endswith('{"type":"message_stop"}')
    counted = await api.call(
        "POST", "/v1/messages/count_tokens", 200, token=key["key"], body={"model": MODEL, "messages": hello}
    )
    assert counted["input_tokens"] > 0
    missing = await api.call("POST", "/v1/messages", 404, token=key["key"], body={**message, "model": "absent"})
    assert missing["error"]["type"] == "not_found_error"
    reply = await api.call("POST", "/v1/responses", 200, token=key["key"], body={"model": MODEL, "input": "hi"})
    assert reply["status"] == "completed"
    events = await api.call(
        "POST", "/v1/responses", 200, token=key["key"], body={"model": MODEL, "input": "hi", "stream": True}
    )
    assert "response.completed" in events
    await api.call("POST", "/v1/chat/completions", 404, token=key["key"], body={"model": "absent", "messages": hello})
    await api.call("POST", "/v1/chat/completions", 400, token=key["key"], data=b"[")
    rejected = {"model": MODEL, "messages": hello, "fake": {"status": 422}}
    upstream = await api.call("POST", "/v1/chat/completions", 422, token=key["key"], body=rejected)
    assert upstream["error"]["message"] == "fake error 422"

    # Receipts and reports, as JSON and as CSV with the JSON rows' columns.
    await api.call("GET", f"/api/receipts/{paid}", 200, token=carl)
    await api.call("GET", f"/api/receipts/{paid}", 200, token=olga)
    await api.call("GET", f"/api/receipts/{paid}", 404, token=eve)
    rows = document_rows(api.document)
    for path, token, row in (
        ("/api/usage", carl, "UsageRow"),
        ("/api/earnings", olga, "EarningsRow"),
        (f"/api/groups/{group}/usage", olga, "GroupUsageRow"),
    ):
        assert (await api.call("GET", path + "?since=2020-01-01", 200, token=token))["data"]
        assert csv_header(await api.call("GET", path + "?format=csv", 200, token=token)) == rows[row]
    await api.call("GET", "/api/usage?format=xml", 400, token=carl)
    # The dashboard's numbers, as Carl (a member who spent) and Olga (who earned).
    for path in ("now", "models", "machines", "usage?days=7", "holds"):
        await api.call("GET", f"/api/dashboard/{path}", 200, token=carl)
    shares = await api.call("GET", "/api/dashboard/usage", 200, token=olga)
    assert shares["totals"]["earned_micro"] > 0
    assert {m["username"] for m in shares["groups"][0]["members"]} == {"olga", "carl"}
    assert csv_header(await api.call("GET", "/api/dashboard/usage.csv", 200, token=carl)) == rows["UsageDay"]
    await api.call("GET", "/api/dashboard/usage?days=0", 400, token=carl)
    await api.call("GET", f"/api/dashboard/explain?model={MODEL}", 403, token=carl)
    boss = {"username": "boss", "password": PASSWORD, "role": "admin"}
    await api.call("POST", "/admin/users", 201, token=ADMIN_TOKEN, body=boss)
    boss_token = (await api.call("POST", "/api/login", 200, body={"username": "boss", "password": PASSWORD}))["token"]
    await api.call("GET", f"/api/dashboard/explain?model={MODEL}", 200, token=boss_token)
    name, now = await api.first_event("/api/dashboard/stream", carl)
    assert name == "now"
    validator(api.document, {"$ref": "#/components/schemas/NowView"}).validate(now)
    mine = await api.call("GET", "/api/requests?limit=500", 200, token=carl)
    assert paid in [r["request_id"] for r in mine["data"]]
    await api.call("GET", "/api/requests?limit=0", 400, token=carl)

    # The admin's views.
    ops_key = await api.call("POST", "/admin/keys", 201, token=ADMIN_TOKEN, body={"name": "ops"})
    await api.call("GET", "/admin/keys", 200, token=ADMIN_TOKEN)
    await api.call("DELETE", f"/admin/keys/{ops_key['id']}", 200, token=ADMIN_TOKEN)
    await api.call("GET", "/admin/usage?limit=5", 200, token=ADMIN_TOKEN)
    users = await api.call("GET", "/admin/users", 200, token=ADMIN_TOKEN)
    assert carl_id in [u["id"] for u in users["users"]]
    explained = await api.call("GET", f"/admin/route-explain?model={MODEL}&key_id={key['id']}", 200, token=ADMIN_TOKEN)
    assert explained["choice"]["agent_id"] == agent_id
    await api.call("GET", "/admin/route-explain", 400, token=ADMIN_TOKEN)
    await api.call("POST", f"/admin/agents/{agent_id}/drain", 202, token=ADMIN_TOKEN)
    await api.call("POST", f"/admin/agents/{agent_id}/resume", 200, token=ADMIN_TOKEN)
    await api.call("GET", "/metrics", 200)
    script = await api.call("GET", "/install.sh", 200)
    wheel = re.search(r"^WHEEL='(.+)'$", script, re.MULTILINE)
    assert wheel is not None, script
    await api.call("GET", f"/download/{wheel[1]}", 200)
    await api.call("GET", f"/download/{wheel[1]}.sha256", 200)
    # An agent that enrolled and went away is listed offline, with fewer fields.
    spare = await api.call("POST", "/admin/agent-tokens", 201, token=ADMIN_TOKEN, body={"name": "spare"})
    agents.append(AgentProcess(hub, root / "spare", [backend_url], name="spare", token=spare["token"]))
    online = await api.until(
        "GET", "/admin/agents", ADMIN_TOKEN, lambda a: [x["state"] for x in a["agents"]] == ["online", "online"]
    )
    assert all("backends" in a for a in online["agents"])
    agents.pop().stop()
    listed = await api.until(
        "GET", "/admin/agents", ADMIN_TOKEN, lambda a: {x["state"] for x in a["agents"]} == {"online", "offline"}
    )
    offline = next(a for a in listed["agents"] if a["state"] == "offline")
    assert "backends" not in offline

    # Memberships end.
    await api.call("DELETE", f"/api/agents/{agent_id}/groups/{group}", 200, token=olga)
    await api.call("POST", f"/api/agents/{agent_id}/groups", 200, token=olga, body={"group_id": group})
    other = (await api.call("POST", "/api/groups", 201, token=olga, body={"name": "other"}))["id"]
    code = (await api.call("POST", f"/api/groups/{other}/invites", 201, token=olga, body={"max_uses": 2}))["code"]
    await api.call("POST", "/api/invites/redeem", 200, token=carl, body={"code": code})
    await api.call("POST", "/api/invites/redeem", 200, token=eve, body={"code": code})
    await api.call("DELETE", f"/api/groups/{other}/members/{carl_id}", 200, token=olga)
    await api.call("POST", f"/api/groups/{other}/leave", 400, token=olga)
    await api.call("POST", f"/api/groups/{other}/leave", 200, token=eve)
    await api.call("DELETE", f"/api/groups/{other}", 200, token=olga)
    spent = await api.call("POST", "/api/keys", 201, token=carl, body={"name": "spent"})
    await api.call("DELETE", f"/api/keys/{spent['id']}", 200, token=carl)

    # Shutting down with a request in flight: /readyz answers 503 with its own body until the hub is gone.
    hung = {"model": MODEL, "messages": hello, "fake": {"hang": True}}
    request = asyncio.create_task(
        api.session.post(hub.url + "/v1/chat/completions", json=hung, headers=bearer(key["key"]))
    )

    def hanging() -> bool:
        return any(r.json is not None and "fake" in r.json and not r.completed for r in backend.records)

    async def ready() -> bool:
        async with api.session.get(hub.url + "/readyz") as resp:
            return resp.status == 200

    try:
        assert await backend.wait_for_async(hanging, WAIT_S)
        hub.signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT_S):
            while await ready():
                await asyncio.sleep(POLL_S)
        assert (await api.call("GET", "/readyz", 503))["status"] == "shutting_down"
    finally:
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await request


def document_rows(document: dict[str, Any]) -> dict[str, list[str]]:
    """The documented columns of each report row, in order."""
    schemas = document["components"]["schemas"]
    return {
        name: list(schemas[name]["properties"]) for name in ("UsageRow", "EarningsRow", "GroupUsageRow", "UsageDay")
    }
