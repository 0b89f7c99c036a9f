"""``GET /openapi.json``: a valid OpenAPI 3.1 document of exactly the routes ``create_app`` registers,
whose schemas describe what the hub really answers (errors included)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from potluck.api.openapi import ERROR_SCHEMA, build_document
from potluck.app import create_app
from potluck.hub.auth import AdminAuth
from potluck.hub.settings import HubSettings
from potluck.protocol.errors import ERROR_CODES

ADMIN = {"Authorization": "Bearer adm"}
ENVELOPE_REF = f"#/components/schemas/{ERROR_SCHEMA}"


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


async def check(document: dict[str, Any], resp: Any, method: str, route: str, status: int) -> Any:
    """The response has ``status``, and its JSON body matches the document's schema for it."""
    assert resp.status == status, await resp.text()
    assert re.fullmatch(r"req_[0-9a-f]{24}", resp.headers["x-request-id"])
    responses = document["paths"][route][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {route} does not document {status}"
    schema = responses[str(status)]["content"][resp.content_type]["schema"]
    body = await resp.json()
    validator(document, schema).validate(body)
    return body


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
    statuses = {status for status, _ in ERROR_CODES.values()}
    for method, path, op in operations(document):
        for status, response in op["responses"].items():
            if status == "default" or (int(status) >= 400 and (method, path, status) != ("GET", "/readyz", "503")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": ENVELOPE_REF}, f"{method} {path} {status}"
                if status != "default":
                    assert int(status) in statuses, f"{method} {path}: {status} is no status of ERROR_CODES"


def test_struct_bodies_are_msgspec_schemas(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    body = document["paths"]["/admin/users"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/NewUser"}
    assert schemas["NewUser"]["required"] == ["username", "password"]
    relay = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert relay["additionalProperties"] is True
    assert set(relay["properties"]) == {"model", "stream", "stream_options", "max_tokens", "max_completion_tokens"}


def test_envelope_schema_rejects_other_shapes(document: dict[str, Any]) -> None:
    envelope = validator(document, {"$ref": ENVELOPE_REF})
    envelope.validate({"error": {"message": "m", "type": "t", "code": "c", "param": None}})
    for bad in ({"error": {"message": "m"}}, {"error": "m"}, {"message": "m", "type": "t"}):
        with pytest.raises(jsonschema.ValidationError):
            envelope.validate(bad)


# -- against the running hub ------------------------------------------------------------------------------


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
    ("method", "route", "path", "headers", "json"),
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
    json: Any,
) -> None:
    resp = await client.request(method, path, headers=headers, json=json)
    body = await check(document, resp, method, route, 401)
    assert body["error"]["code"] == "invalid_api_key"


async def test_admin_answers_match_their_schemas(client: TestClient[Any, Any], document: dict[str, Any]) -> None:
    resp = await client.post("/admin/keys", json={"name": "k"}, headers=ADMIN)
    key = await check(document, resp, "POST", "/admin/keys", 201)
    await check(document, await client.get("/admin/keys", headers=ADMIN), "GET", "/admin/keys", 200)
    resp = await client.post("/admin/keys", json={"name": ""}, headers=ADMIN)
    await check(document, resp, "POST", "/admin/keys", 400)
    resp = await client.get("/v1/models", headers=bearer(key["key"]))
    await check(document, resp, "GET", "/v1/models", 200)
    resp = await client.post("/v1/chat/completions", json={"model": "absent"}, headers=bearer(key["key"]))
    await check(document, resp, "POST", "/v1/chat/completions", 404)
    resp = await client.post("/v1/chat/completions", json={"stream": 1}, headers=bearer(key["key"]))
    await check(document, resp, "POST", "/v1/chat/completions", 400)
    resp = await client.delete(f"/admin/keys/{key['id']}", headers=ADMIN)
    await check(document, resp, "DELETE", "/admin/keys/{key_id}", 200)
    resp = await client.delete("/admin/keys/key_nope", headers=ADMIN)
    await check(document, resp, "DELETE", "/admin/keys/{key_id}", 404)
    resp = await client.post("/admin/agent-tokens", json={"name": "box"}, headers=ADMIN)
    await check(document, resp, "POST", "/admin/agent-tokens", 201)
    await check(document, await client.get("/admin/agents", headers=ADMIN), "GET", "/admin/agents", 200)
    resp = await client.post("/admin/agents/agt_nope/drain", headers=ADMIN)
    await check(document, resp, "POST", "/admin/agents/{agent_id}/drain", 404)
    await check(document, await client.get("/admin/usage", headers=ADMIN), "GET", "/admin/usage", 200)
    resp = await client.get("/admin/usage?limit=x", headers=ADMIN)
    await check(document, resp, "GET", "/admin/usage", 400)
    await check(document, await client.get("/healthz"), "GET", "/healthz", 200)
    await check(document, await client.get("/readyz"), "GET", "/readyz", 200)


async def test_user_answers_match_their_schemas(client: TestClient[Any, Any], document: dict[str, Any]) -> None:
    async def account(name: str) -> str:
        resp = await client.post("/admin/users", json={"username": name, "password": "password-1"}, headers=ADMIN)
        await check(document, resp, "POST", "/admin/users", 201)
        resp = await client.post("/api/login", json={"username": name, "password": "password-1"})
        token: str = (await check(document, resp, "POST", "/api/login", 200))["token"]
        return token

    owner, other = await account("owner"), await account("other")
    resp = await client.post("/admin/users", json={"username": "owner", "password": "password-1"}, headers=ADMIN)
    await check(document, resp, "POST", "/admin/users", 409)
    await check(document, await client.get("/api/me", headers=bearer(owner)), "GET", "/api/me", 200)
    resp = await client.post("/api/tokens", json={"name": "t"}, headers=bearer(owner))
    token = await check(document, resp, "POST", "/api/tokens", 201)
    resp = await client.delete(f"/api/tokens/{token['id']}", headers=bearer(owner))
    await check(document, resp, "DELETE", "/api/tokens/{token_id}", 200)

    resp = await client.post("/api/groups", json={"name": "g"}, headers=bearer(owner))
    group = (await check(document, resp, "POST", "/api/groups", 201))["id"]
    await check(document, await client.get("/api/groups", headers=bearer(owner)), "GET", "/api/groups", 200)
    invites = f"/api/groups/{group}/invites"
    resp = await client.post(invites, json={"max_uses": 1}, headers=bearer(owner))
    invite = await check(document, resp, "POST", "/api/groups/{group_id}/invites", 201)
    resp = await client.post(invites, json={}, headers=bearer(other))
    await check(document, resp, "POST", "/api/groups/{group_id}/invites", 404)
    resp = await client.post("/api/invites/redeem", json={"code": invite["code"]}, headers=bearer(other))
    await check(document, resp, "POST", "/api/invites/redeem", 200)
    resp = await client.post("/api/invites/redeem", json={"code": "nope"}, headers=bearer(other))
    await check(document, resp, "POST", "/api/invites/redeem", 400)
    resp = await client.get(invites, headers=bearer(other))
    await check(document, resp, "GET", "/api/groups/{group_id}/invites", 403)
    resp = await client.get(invites, headers=bearer(owner))
    await check(document, resp, "GET", "/api/groups/{group_id}/invites", 200)
    resp = await client.delete(f"{invites}/{invite['id']}", headers=bearer(owner))
    await check(document, resp, "DELETE", "/api/groups/{group_id}/invites/{invite_id}", 200)
    resp = await client.get(f"/api/groups/{group}/members", headers=bearer(other))
    members = await check(document, resp, "GET", "/api/groups/{group_id}/members", 200)
    other_id = next(m["user_id"] for m in members["members"] if m["username"] == "other")
    resp = await client.post(f"/api/groups/{group}/leave", headers=bearer(owner))
    await check(document, resp, "POST", "/api/groups/{group_id}/leave", 400)
    resp = await client.post(f"/api/groups/{group}/leave", headers=bearer(other))
    await check(document, resp, "POST", "/api/groups/{group_id}/leave", 200)
    resp = await client.delete(f"/api/groups/{group}/members/{other_id}", headers=bearer(owner))
    await check(document, resp, "DELETE", "/api/groups/{group_id}/members/{user_id}", 404)
    resp = await client.delete(f"/api/groups/{group}", headers=bearer(owner))
    await check(document, resp, "DELETE", "/api/groups/{group_id}", 200)
