"""A deeply nested body is a 400 in OpenAI's shape on every route that takes a body, whoever sends it.

The routes come from the app's own router, so a route added later is covered without touching this test.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from potluck.app import create_app
from potluck.hub.auth import AdminAuth
from potluck.hub.settings import HubSettings
from potluck.protocol.json_depth import MAX_JSON_DEPTH
from tests.api.test_client_api import ADMIN, assert_error, bearer
from tests.api.test_dialects import assert_anthropic_error

NESTED = b'{"model":"m","messages":[],"x":' + b"[" * 1000 + b"]" * 1000 + b"}"
"""5 KB: a thousand nested arrays in a field nobody reads."""
BODYLESS_METHODS = {"GET", "HEAD", "OPTIONS"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(HubSettings(data_dir=tmp_path), AdminAuth.hash_token("adm"))
    async with TestClient(TestServer(app)) as client:
        yield client


def body_routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, path) of every route that takes a body, path parameters filled in."""
    routes = []
    for route in app.router.routes():
        if route.method in BODYLESS_METHODS:
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        template = info.get("formatter") or info.get("path")
        assert isinstance(template, str), info
        routes.append((route.method, re.sub(r"\{[^}]*\}", "x1", template)))
    return routes


async def credentials(client: TestClient[Any, Any]) -> dict[str, dict[str, str]]:
    """No credential, the admin token, an API key and a user session."""
    resp = await client.post("/admin/keys", json={"name": "nested"}, headers=ADMIN)
    assert resp.status == 201
    key = (await resp.json())["key"]
    resp = await client.post("/admin/users", json={"username": "nina", "password": "a long password"}, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    resp = await client.post("/api/login", json={"username": "nina", "password": "a long password"})
    assert resp.status == 200, await resp.text()
    session = (await resp.json())["token"]
    return {"anonymous": {}, "admin": ADMIN, "api key": bearer(key), "user": bearer(session)}


async def test_every_route_that_takes_a_body_refuses_deep_nesting_with_a_400(client: TestClient[Any, Any]) -> None:
    routes = body_routes(client.app)
    paths = {path for _, path in routes}
    assert {"/v1/chat/completions", "/api/login", "/admin/keys", "/admin/credits"} <= paths, paths
    for who, headers in (await credentials(client)).items():
        for method, path in routes:
            resp = await client.request(
                method, path, data=NESTED, headers={**headers, "Content-Type": "application/json"}
            )
            if path.startswith("/v1/messages"):  # Anthropic's routes answer in Anthropic's shape
                message = await assert_anthropic_error(resp, 400, "invalid_request_error")
            else:
                message = (await assert_error(resp, 400, "invalid_request_error", type_="invalid_request_error"))[
                    "message"
                ]
            assert f"more than {MAX_JSON_DEPTH} levels" in message, (who, method, path, message)


async def test_a_body_at_the_limit_reaches_the_handler(client: TestClient[Any, Any]) -> None:
    at_limit = b'{"name":"deep","x":' + b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1) + b"}"
    resp = await client.post("/admin/keys", data=at_limit, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    over = at_limit.replace(b'"x":', b'"x":[', 1).replace(b"}", b"]}")
    await assert_error(await client.post("/admin/keys", data=over, headers=ADMIN), 400, "invalid_request_error")


async def test_nesting_sent_in_chunks_without_a_length_is_refused_too(client: TestClient[Any, Any]) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(NESTED), 512):
            yield NESTED[start : start + 512]

    await assert_error(await client.post("/api/login", data=chunks()), 400, "invalid_request_error")
