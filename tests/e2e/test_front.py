"""The hub's front server (api/front.py) where its own code decides, on a real hub: TLS, CORS headers, the
keep-alive timeout, and a shutdown with its connections open. Framing, errors and slow clients on the relayed
routes are tests/e2e/test_http_framing.py's; which requests the front keeps, tests/api/test_front.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.processes import HubProcess
from testing.raw_http import Conn, request
from testing.tls import self_signed
from tests.e2e.conftest import FAST_HUB_ARGS, Fleet

pytestmark = pytest.mark.slow

APP = "https://chat.example"


def chat(model: str, key: str, *headers: str, stream: bool = False) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return request("POST", "/v1/chat/completions", json.dumps(body).encode(), *headers, key=key)


def port_of(hub: HubProcess) -> int:
    return int(hub.url.rsplit(":", 1)[1])


@contextlib.contextmanager
def serving(root: Path, *hub_args: str) -> Iterator[tuple[HubProcess, Fleet, str]]:
    """A hub started with ``hub_args`` and one agent serving a model of its own: (hub, fleet, model)."""
    hub = HubProcess(root / "hub", *FAST_HUB_ARGS, *hub_args)
    fleet = Fleet(hub, root / "fleet")
    try:
        model = fleet.model()
        _backend, url = fleet.backend(model)
        agent = fleet.agent(url, wait=False)
        hub.wait_agent(agent.name, models={model})
        yield hub, fleet, model
    finally:
        fleet.close()
        hub.stop()


async def test_relayed_and_other_requests_share_a_tls_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # for the admin calls here and the agent's own
    with serving(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key)) as (hub, fleet, model):
        async with Conn.open(port_of(hub), ssl=ssl.create_default_context(cafile=cert)) as conn:
            await conn.send(chat(model, fleet.key))
            first = await conn.answer()
            await conn.send(chat(model, fleet.key, stream=True))
            streamed = await conn.answer()
            await conn.send(request("GET", "/v1/models", key=fleet.key))  # aiohttp's from here on
            models = await conn.answer()
            await conn.send(chat(model, fleet.key))
            last = await conn.answer()
        assert (first.status, streamed.status, models.status, last.status) == (200, 200, 200, 200)
        assert first.json()["choices"][0]["message"]["content"]
        assert streamed.chunked
        assert streamed.body.endswith(b"data: [DONE]\n\n")
        assert model in [m["id"] for m in models.json()["data"]]
    assert len({a.request_id for a in (first, streamed, last)}) == 3
    assert "Traceback" not in hub.log()


async def test_cors_headers_on_relayed_answers_for_allowed_origins_only(tmp_path: Path) -> None:
    with serving(tmp_path, "--cors-origin", APP) as (hub, fleet, model):
        async with Conn.open(port_of(hub)) as conn:
            answers = []
            for origin in (APP, "https://evil.example"):
                for stream in (False, True):
                    await conn.send(chat(model, fleet.key, f"Origin: {origin}", stream=stream))
                    answers.append(await conn.answer())
            await conn.send(chat("no-such-model", fleet.key, f"Origin: {APP}"))
            error = await conn.answer()
    assert [a.status for a in answers] == [200, 200, 200, 200]
    for allowed in (*answers[:2], error):
        assert allowed.header("access-control-allow-origin") == APP
        assert "x-request-id" in (allowed.header("access-control-expose-headers") or "")
        assert allowed.header("vary") == "Origin"
    assert error.status == 404
    for refused in answers[2:]:
        assert refused.header("access-control-allow-origin") is None


async def test_an_idle_connection_is_closed_after_the_keepalive_timeout(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub", "--keepalive-timeout", "1")
    try:
        async with Conn.open(port_of(hub)) as conn:
            await conn.send(chat("m", "not-a-key"))
            assert (await conn.answer()).status == 401
            answered = time.monotonic()
            assert await conn.rest(timeout=10) == b""
            idle = time.monotonic() - answered
    finally:
        hub.stop()
    assert 0.9 <= idle < 5, idle


async def test_the_hub_shuts_down_promptly_with_an_idle_connection_open(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub")
    try:
        async with Conn.open(port_of(hub)) as conn:
            await conn.send(chat("m", "not-a-key"))
            assert (await conn.answer()).status == 401
            hub.signal(signal.SIGTERM)
            assert await conn.rest(timeout=10) == b""
            assert await asyncio.to_thread(hub.wait, 10) == 0
    finally:
        hub.stop()
