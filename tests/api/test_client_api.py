"""The HTTP surface of an in-process hub with no agents: error shapes, auth, admin, health and metrics."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from potluck.app import create_app
from potluck.hub.auth import AdminAuth
from potluck.hub.settings import HubSettings

ADMIN = {"Authorization": "Bearer adm"}
MAX_BODY = 4096


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    settings = HubSettings(data_dir=tmp_path, max_body_bytes=MAX_BODY)
    app = create_app(settings, AdminAuth.hash_token("adm"))
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.fixture
async def api_key(client: TestClient[Any, Any]) -> str:
    resp = await client.post("/admin/keys", json={"name": "tests"}, headers=ADMIN)
    assert resp.status == 201
    key: str = (await resp.json())["key"]
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def assert_error(
    resp: Any, status: int, code: str, *, type_: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error shape, the given status, and a request id."""
    assert resp.status == status, await resp.text()
    assert resp.headers["x-request-id"].startswith("req_")
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    assert error["code"] == code
    if type_ is not None:
        assert error["type"] == type_
    if param is not None:
        assert error["param"] == param
    return error


# -- client API errors ----------------------------------------------------------------------------


async def test_missing_api_key_is_401_invalid_api_key(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/v1/chat/completions", json={"model": "m", "messages": []})
    await assert_error(resp, 401, "invalid_api_key", type_="invalid_request_error")


async def test_wrong_api_key_is_401(client: TestClient[Any, Any], api_key: str) -> None:
    resp = await client.post("/v1/chat/completions", json={"model": "m"}, headers=bearer(api_key + "x"))
    await assert_error(resp, 401, "invalid_api_key")


async def test_non_bearer_authorization_is_401(client: TestClient[Any, Any], api_key: str) -> None:
    resp = await client.post("/v1/chat/completions", json={"model": "m"}, headers={"Authorization": f"Basic {api_key}"})
    await assert_error(resp, 401, "invalid_api_key")


async def test_models_list_needs_a_key(client: TestClient[Any, Any]) -> None:
    await assert_error(await client.get("/v1/models"), 401, "invalid_api_key")


async def test_models_list_is_empty_without_agents(client: TestClient[Any, Any], api_key: str) -> None:
    resp = await client.get("/v1/models", headers={"x-api-key": api_key})
    assert resp.status == 200
    assert await resp.json() == {"object": "list", "data": []}
    assert resp.headers["x-request-id"].startswith("req_")


async def test_malformed_json_is_400_invalid_request_error(client: TestClient[Any, Any], api_key: str) -> None:
    resp = await client.post("/v1/chat/completions", data=b'{"model": "m",', headers=bearer(api_key))
    await assert_error(resp, 400, "invalid_request_error", type_="invalid_request_error")


async def test_non_object_body_is_400(client: TestClient[Any, Any], api_key: str) -> None:
    resp = await client.post("/v1/chat/completions", data=b"[1, 2]", headers=bearer(api_key))
    await assert_error(resp, 400, "invalid_request_error")


@pytest.mark.parametrize("body", [{"messages": []}, {"model": ""}, {"model": None}])
async def test_missing_model_is_400_with_param_model(
    client: TestClient[Any, Any], api_key: str, body: dict[str, Any]
) -> None:
    resp = await client.post("/v1/chat/completions", json=body, headers=bearer(api_key))
    await assert_error(resp, 400, "invalid_request_error", param="model")


async def test_wrong_type_for_stream_is_400_with_param_stream(client: TestClient[Any, Any], api_key: str) -> None:
    resp = await client.post("/v1/chat/completions", json={"model": "m", "stream": "yes"}, headers=bearer(api_key))
    await assert_error(resp, 400, "invalid_request_error", param="stream")


async def test_wrong_type_for_model_is_400_with_param_model(client: TestClient[Any, Any], api_key: str) -> None:
    resp = await client.post("/v1/completions", json={"model": 7}, headers=bearer(api_key))
    await assert_error(resp, 400, "invalid_request_error", param="model")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
async def test_unknown_model_is_404_model_not_found(client: TestClient[Any, Any], api_key: str, path: str) -> None:
    resp = await client.post(path, json={"model": "no-such-model", "stream": True}, headers=bearer(api_key))
    await assert_error(resp, 404, "model_not_found", type_="invalid_request_error", param="model")


async def test_body_over_the_limit_is_413(client: TestClient[Any, Any], api_key: str) -> None:
    body = b'{"model":"m","prompt":"' + b"x" * (MAX_BODY + 10) + b'"}'
    resp = await client.post("/v1/completions", data=body, headers=bearer(api_key))
    await assert_error(resp, 413, "request_too_large")


async def test_unknown_route_is_404(client: TestClient[Any, Any]) -> None:
    await assert_error(await client.get("/v1/nope"), 404, "not_found")


async def test_wrong_method_is_405(client: TestClient[Any, Any], api_key: str) -> None:
    resp = await client.get("/v1/chat/completions", headers=bearer(api_key))
    await assert_error(resp, 405, "method_not_allowed")


# -- admin API ------------------------------------------------------------------------------------

ADMIN_ROUTES = [
    ("POST", "/admin/keys"),
    ("GET", "/admin/keys"),
    ("DELETE", "/admin/keys/key_x"),
    ("POST", "/admin/agent-tokens"),
    ("GET", "/admin/agents"),
    ("POST", "/admin/agents/agt_x/drain"),
    ("POST", "/admin/agents/agt_x/resume"),
    ("GET", "/admin/usage"),
]


async def test_admin_endpoints_refuse_missing_or_wrong_admin_token(client: TestClient[Any, Any]) -> None:
    for method, path in ADMIN_ROUTES:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "adm"},
            {"Authorization": "Basic adm"},
        ):
            resp = await client.request(method, path, json={"name": "x"}, headers=headers)
            await assert_error(resp, 401, "invalid_api_key")


async def test_api_key_is_not_an_admin_token(client: TestClient[Any, Any], api_key: str) -> None:
    await assert_error(await client.get("/admin/keys", headers=bearer(api_key)), 401, "invalid_api_key")


async def test_admin_creates_a_key_and_shows_its_secret_once(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/admin/keys", json={"name": "laptop"}, headers=ADMIN)

    assert resp.status == 201
    assert resp.headers["x-request-id"].startswith("req_")
    created = await resp.json()
    assert set(created) == {"id", "name", "key", "created_at"}
    assert created["name"] == "laptop"
    assert created["key"].startswith("pk-")
    assert created["created_at"].endswith("+00:00")

    listing = await client.get("/admin/keys", headers=ADMIN)
    assert listing.status == 200
    text = await listing.text()
    assert created["key"] not in text
    assert created["key"][10:] not in text
    (listed,) = (await listing.json())["keys"]
    assert listed["id"] == created["id"]
    assert listed["prefix"] == created["key"][:10]
    assert listed["revoked_at"] is None
    assert "key" not in listed


@pytest.mark.parametrize("body", [b"{}", b'{"name": ""}', b'{"name": "   "}', b"not json", b'{"name": 5}'])
async def test_admin_create_key_needs_a_name(client: TestClient[Any, Any], body: bytes) -> None:
    resp = await client.post("/admin/keys", data=body, headers=ADMIN)
    await assert_error(resp, 400, "invalid_request_error", param="name")


async def test_created_key_works_and_a_deleted_key_is_refused_from_the_next_request(
    client: TestClient[Any, Any],
) -> None:
    created = await (await client.post("/admin/keys", json={"name": "k"}, headers=ADMIN)).json()
    assert (await client.get("/v1/models", headers=bearer(created["key"]))).status == 200

    resp = await client.delete(f"/admin/keys/{created['id']}", headers=ADMIN)
    assert resp.status == 200
    revoked = await resp.json()
    assert revoked["id"] == created["id"]
    assert revoked["revoked_at"] is not None

    await assert_error(await client.get("/v1/models", headers=bearer(created["key"])), 401, "invalid_api_key")
    resp = await client.post("/v1/chat/completions", json={"model": "m"}, headers=bearer(created["key"]))
    await assert_error(resp, 401, "invalid_api_key")
    (listed,) = (await (await client.get("/admin/keys", headers=ADMIN)).json())["keys"]
    assert listed["revoked_at"] is not None


async def test_deleting_an_unknown_key_is_404(client: TestClient[Any, Any]) -> None:
    await assert_error(await client.delete("/admin/keys/key_nope", headers=ADMIN), 404, "not_found")


async def test_admin_creates_an_agent_enrolment_token(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/admin/agent-tokens", json={"name": "gpu-1"}, headers=ADMIN)
    assert resp.status == 201
    body = await resp.json()
    assert {"id", "token"} <= set(body)
    assert body["token"].startswith("pat-")
    assert body["id"]


async def test_admin_lists_no_agents_on_a_new_hub(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/admin/agents", headers=ADMIN)
    assert resp.status == 200
    assert await resp.json() == {"agents": []}


async def test_draining_an_unknown_agent_is_404(client: TestClient[Any, Any]) -> None:
    await assert_error(await client.post("/admin/agents/agt_nope/drain", headers=ADMIN), 404, "not_found")


async def test_failed_requests_are_metered(client: TestClient[Any, Any], api_key: str) -> None:
    await client.post("/v1/chat/completions", json={"model": "ghost"}, headers=bearer(api_key))
    resp = await client.get("/admin/usage", headers=ADMIN)
    assert resp.status == 200
    (record,) = (await resp.json())["usage"]
    assert record["model"] == "ghost"
    assert record["outcome"] == "model_not_found"
    assert record["status"] == 404


async def test_usage_limit_must_be_an_integer(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/admin/usage?limit=lots", headers=ADMIN)
    await assert_error(resp, 400, "invalid_request_error", param="limit")


# -- health and metrics ---------------------------------------------------------------------------


async def test_healthz_is_ok(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}
    assert resp.headers["x-request-id"].startswith("req_")


async def test_readyz_is_ready_with_the_database_up(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ready", "agents": 0}


async def test_metrics_expose_hub_collectors(client: TestClient[Any, Any], api_key: str) -> None:
    await client.post("/v1/chat/completions", json={"model": "ghost"}, headers=bearer(api_key))
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    text = await resp.text()
    for name in (
        "potluck_hub_requests_total",
        "potluck_hub_tokens_total",
        "potluck_hub_retries_total",
        "potluck_hub_agents_connected",
        "potluck_hub_queue_depth",
        "potluck_hub_requests_in_flight",
        "potluck_hub_ttft_seconds",
    ):
        assert f"# TYPE {name}" in text, name
    assert 'potluck_hub_requests_total{outcome="model_not_found"} 1.0' in text
    assert "python_gc_objects_collected_total" not in text  # an injected registry, not the global one


FIRST_REQUEST_SCRIPT = """
import asyncio, sys, tempfile, warnings
from pathlib import Path
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from potluck.app import create_app
from potluck.hub.auth import AdminAuth
from potluck.hub.settings import HubSettings

warnings.filterwarnings("error", category=web.NotAppKeyWarning)

async def main():
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(HubSettings(data_dir=Path(tmp)), AdminAuth.hash_token("adm"))
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/healthz")
            print("status", resp.status, (await resp.text())[:200])
            sys.exit(0 if resp.status == 200 else 1)

asyncio.run(main())
"""


@pytest.mark.slow
async def test_first_request_of_a_process_raises_no_aiohttp_storage_warning(tmp_path: Path) -> None:
    # aiohttp warns once per process for each plain-`str` request-storage key; under this suite's
    # filterwarnings=error that made the first in-process request of every test process a 500.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FIRST_REQUEST_SCRIPT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(20):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
