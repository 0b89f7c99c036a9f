"""Errors in each dialect's shape: Anthropic's on /v1/messages*, OpenAI's elsewhere (in-process hub, no agents)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from aiohttp.test_utils import TestClient, TestServer

from potluck.api.dialects import error_status, stream_error, upstream_error
from potluck.app import create_app
from potluck.hub.auth import AdminAuth
from potluck.hub.settings import HubSettings
from potluck.protocol.openai import Dialect
from tests.api.test_client_api import ADMIN, assert_error

MAX_BODY = 4096
MESSAGE = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(HubSettings(data_dir=tmp_path, max_body_bytes=MAX_BODY), AdminAuth.hash_token("adm"))
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.fixture
async def key(client: TestClient[Any, Any]) -> str:
    resp = await client.post("/admin/keys", json={"name": "tests"}, headers=ADMIN)
    assert resp.status == 201
    return str((await resp.json())["key"])


async def assert_anthropic_error(resp: Any, status: int, error_type: str) -> str:
    """Anthropic's error shape, the status, and the request id in both headers; the message."""
    assert resp.status == status, await resp.text()
    assert resp.headers["request-id"] == resp.headers["x-request-id"]
    assert resp.headers["request-id"].startswith("req_")
    body = await resp.json()
    assert set(body) == {"type", "error"}
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    message: str = body["error"]["message"]
    assert message
    return message


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
async def test_messages_without_a_key_is_an_anthropic_authentication_error(
    client: TestClient[Any, Any], path: str
) -> None:
    resp = await client.post(path, json=MESSAGE)
    await assert_anthropic_error(resp, 401, "authentication_error")


async def test_messages_takes_the_key_as_x_api_key_or_bearer(client: TestClient[Any, Any], key: str) -> None:
    for headers in ({"x-api-key": key, "anthropic-version": "2023-06-01"}, {"Authorization": f"Bearer {key}"}):
        resp = await client.post("/v1/messages?beta=true", json=MESSAGE, headers=headers)
        message = await assert_anthropic_error(resp, 404, "not_found_error")  # authenticated: no agent serves it
        assert "claude-sonnet-4-5" in message


async def test_messages_bad_bodies_are_anthropic_invalid_request_errors(client: TestClient[Any, Any], key: str) -> None:
    headers = {"x-api-key": key}
    await assert_anthropic_error(
        await client.post("/v1/messages", data=b"{not json", headers=headers), 400, "invalid_request_error"
    )
    await assert_anthropic_error(
        await client.post("/v1/messages", json={"max_tokens": 1}, headers=headers), 400, "invalid_request_error"
    )
    nested = b'{"model":"m","x":' + b"[" * 1000 + b"]" * 1000 + b"}"
    await assert_anthropic_error(
        await client.post("/v1/messages", data=nested, headers=headers), 400, "invalid_request_error"
    )
    too_big = b'{"model":"m","x":"' + b"a" * MAX_BODY + b'"}'
    await assert_anthropic_error(
        await client.post("/v1/messages", data=too_big, headers=headers), 413, "request_too_large"
    )


async def test_responses_errors_keep_openais_envelope(client: TestClient[Any, Any], key: str) -> None:
    resp = await client.post(
        "/v1/responses", json={"model": "m", "input": "hi"}, headers={"Authorization": f"Bearer {key}"}
    )
    await assert_error(resp, 404, "model_not_found")
    await assert_error(await client.post("/v1/responses", json={"model": "m"}), 401, "invalid_api_key")


async def test_the_anthropic_sdk_reads_the_hubs_errors(client: TestClient[Any, Any], key: str) -> None:
    url = str(client.make_url(""))
    async with anthropic.AsyncAnthropic(base_url=url, api_key=key, max_retries=0) as sdk:
        with pytest.raises(anthropic.NotFoundError) as caught:
            await sdk.messages.create(**MESSAGE)  # type: ignore[call-overload]
    assert caught.value.request_id is not None
    assert caught.value.request_id.startswith("req_")
    async with anthropic.AsyncAnthropic(base_url=url, api_key="pk-wrong", max_retries=0) as sdk:
        with pytest.raises(anthropic.AuthenticationError):
            await sdk.messages.count_tokens(model="m", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("server_overloaded", 503, 529),
        ("shutting_down", 503, 529),
        ("model_unavailable", 503, 529),
        ("rate_limit_exceeded", 429, 429),
    ],
)
def test_anthropic_overloaded_is_529(code: str, status: int, expected: int) -> None:
    assert error_status(Dialect.ANTHROPIC, code, status) == expected
    assert error_status(Dialect.OPENAI, code, status) == status


def test_an_agents_error_body_takes_the_dialects_shape() -> None:
    anthropic_error = b'{"type":"error","error":{"type":"invalid_request_error","message":"too long"}}'
    assert upstream_error(Dialect.ANTHROPIC, 400, anthropic_error) == anthropic_error
    wrapped = upstream_error(Dialect.ANTHROPIC, 500, b"segfault")
    assert wrapped == b'{"type":"error","error":{"type":"api_error","message":"segfault"}}'
    assert b'"invalid_request_error"' in upstream_error(Dialect.ANTHROPIC, 422, b"")
    assert b'"upstream_error"' in upstream_error(Dialect.OPENAI, 500, b"segfault")


@pytest.mark.parametrize("dialect", list(Dialect))
def test_a_deeply_nested_upstream_error_body_is_wrapped_not_decoded(dialect: Dialect) -> None:
    body = b'{"error":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    wrapped = upstream_error(dialect, 400, body)
    assert wrapped.startswith(b'{"type":"error"' if dialect is Dialect.ANTHROPIC else b'{"error":')
    assert len(wrapped) < 2000  # the text is cut, not relayed whole


def test_a_failure_mid_stream_ends_it_with_the_dialects_error_event() -> None:
    assert stream_error(Dialect.ANTHROPIC, "upstream_error", "lost").startswith(b'event: error\ndata: {"type":"error"')
    assert stream_error(Dialect.RESPONSES, "upstream_error", "lost").startswith(b'event: error\ndata: {"type":"error"')
    assert stream_error(Dialect.OPENAI, "upstream_error", "lost").startswith(b'data: {"error":')
