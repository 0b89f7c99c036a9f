"""CORS on the client API: off by default, preflights and answers for configured origins only, never on admin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from potluck.app import create_app
from potluck.hub.auth import AdminAuth
from potluck.hub.settings import HubSettings

APP = "https://chat.example"
PREFLIGHT = {
    "Origin": APP,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}

Hub = Callable[..., AbstractAsyncContextManager[TestClient[Any, Any]]]


@pytest.fixture
def hub(tmp_path: Path) -> Hub:
    @asynccontextmanager
    async def start(*origins: str) -> AsyncIterator[TestClient[Any, Any]]:
        settings = HubSettings(data_dir=tmp_path, cors_origins=origins)
        async with TestClient(TestServer(create_app(settings, AdminAuth.hash_token("adm")))) as client:
            yield client

    return start


async def test_cors_is_off_by_default(hub: Hub) -> None:
    async with hub() as client:
        resp = await client.options("/v1/chat/completions", headers=PREFLIGHT)
        assert resp.status == 405
        assert "Access-Control-Allow-Origin" not in resp.headers
        resp = await client.get("/v1/models", headers={"Origin": APP})
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_a_preflight_from_an_allowed_origin_gets_permission(hub: Hub) -> None:
    async with hub(APP) as client:
        resp = await client.options("/v1/chat/completions", headers=PREFLIGHT)
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == APP
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert resp.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
        assert "Origin" in resp.headers["Vary"]


async def test_a_preflight_from_another_origin_gets_none(hub: Hub) -> None:
    async with hub(APP) as client:
        resp = await client.options("/v1/chat/completions", headers={**PREFLIGHT, "Origin": "https://evil.example"})
        assert resp.status == 403
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_answers_and_errors_carry_the_origin_and_expose_the_request_id(hub: Hub) -> None:
    async with hub(APP) as client:
        resp = await client.post("/v1/chat/completions", json={"model": "m"}, headers={"Origin": APP})
        assert resp.status == 401
        assert resp.headers["Access-Control-Allow-Origin"] == APP
        assert "x-request-id" in resp.headers["Access-Control-Expose-Headers"]
        # The admin API is never opened to browsers on other origins.
        resp = await client.get("/admin/agents", headers={"Origin": APP, "Authorization": "Bearer adm"})
        assert resp.status == 200
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_a_wildcard_allows_any_origin(hub: Hub) -> None:
    async with hub("*") as client:
        resp = await client.options("/v1/models", headers={**PREFLIGHT, "Origin": "http://localhost:3000"})
        assert (resp.status, resp.headers["Access-Control-Allow-Origin"]) == (204, "*")
