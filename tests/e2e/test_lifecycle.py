"""Enrolment, identity, reconnects, key revocation, and graceful shutdown of hub and agent."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import openai
import pytest

from potluck.protocol.agent import (
    PROTOCOL_VERSION,
    ChallengeMessage,
    HelloMessage,
    ModelsMessage,
    RejectMessage,
    encode_hello,
    iter_frames,
)
from testing.processes import AgentProcess, HubProcess, free_port, http_json
from tests.e2e.conftest import Fleet

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"


def test_enrolment_token_works_once_and_the_key_alone_afterwards(fleet: Fleet) -> None:
    model = fleet.model()
    _backend, url = fleet.backend(model)
    token = fleet.hub.create_agent_token("once")
    first = AgentProcess(fleet.hub, fleet.root / "a1", [url], name="first-agent", token=token)
    fleet.agents.append(first)
    agent_id = fleet.hub.wait_agent("first-agent")["id"]

    # A second agent (another key) presenting the spent token is refused and exits with an error.
    thief = AgentProcess(fleet.hub, fleet.root / "a2", [url], name="thief", token=token)
    fleet.agents.append(thief)
    assert thief.wait(15) == 2
    assert "already used" in thief.log()

    # The first agent restarts without any token: its key is its identity.
    first.stop()
    again = AgentProcess(fleet.hub, fleet.root / "a1", [url], name="first-agent")
    fleet.agents.append(again)
    assert fleet.hub.wait_agent("first-agent")["id"] == agent_id


def test_agent_without_token_or_enrolment_is_refused(fleet: Fleet) -> None:
    _backend, url = fleet.backend(fleet.model())
    stranger = AgentProcess(fleet.hub, fleet.root / "stranger", [url], name="stranger")
    fleet.agents.append(stranger)
    assert stranger.wait(15) == 2
    assert "not enrolled" in stranger.log()


async def test_hub_rejects_wrong_protocol_version_and_bad_signatures(fleet: Fleet) -> None:
    async with aiohttp.ClientSession() as http:
        for version, signature in ((PROTOCOL_VERSION + 1, b"\0" * 64), (PROTOCOL_VERSION, b"\0" * 64)):
            async with http.ws_connect(fleet.hub.url.replace("http", "ws") + "/agent/connect") as ws:
                challenge = next(iter_frames((await ws.receive()).data)).message
                assert isinstance(challenge, ChallengeMessage)
                hello = HelloMessage(
                    protocol_version=version,
                    agent_version="test",
                    public_key=b"\1" * 32,
                    signature=signature,
                    name="impostor",
                    max_concurrency=1,
                    enrol_token=fleet.hub.create_agent_token(),
                )
                await ws.send_bytes(encode_hello(hello, ModelsMessage([], [])))
                reject = next(iter_frames((await ws.receive()).data)).message
                assert isinstance(reject, RejectMessage)
                assert reject.code == ("protocol_version" if version != PROTOCOL_VERSION else "bad_signature")
                assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


def test_revoked_key_is_refused_within_one_second(fleet: Fleet) -> None:
    model = fleet.model()
    _backend, url = fleet.backend(model)
    fleet.agent(url)
    status, created = fleet.hub.admin("POST", "/admin/keys", {"name": "short-lived"})
    assert status == 201
    client = openai.OpenAI(base_url=fleet.hub.url + "/v1", api_key=created["key"], max_retries=0)
    assert client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}]).choices

    status, _ = fleet.hub.admin("DELETE", f"/admin/keys/{created['id']}")
    assert status == 200
    revoked_at = time.monotonic()
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert time.monotonic() - revoked_at < 1.0
    assert refused.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    _, listed = fleet.hub.admin("GET", "/admin/keys")
    assert created["key"] not in str(listed)


class Restartable:
    """A hub on a fixed port and data directory, its fleet, and the hub that replaces it after a restart."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "hub"
        self.args = ("--port", str(free_port()), "--heartbeat-interval", "0.3", "--heartbeat-timeout", "1.5")
        self.hub = HubProcess(self.root, *self.args)
        self.fleet = Fleet(self.hub, tmp_path / "fleet")
        self.restarted: HubProcess | None = None

    def restart(self) -> HubProcess:
        """A new hub on the same port and data (the old one stopped or killed first)."""
        self.restarted = HubProcess(self.root, *self.args)
        return self.restarted

    def close(self) -> None:
        for agent in self.fleet.agents:
            agent.signal(signal.SIGCONT)  # a test may have held one back
        self.fleet.close()
        self.hub.stop()
        if self.restarted is not None:
            self.restarted.stop()


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[Restartable]:
    made = Restartable(tmp_path)
    try:
        yield made
    finally:
        made.close()


def test_agent_reconnects_by_itself_after_hub_restart(restartable: Restartable) -> None:
    hub, fleet = restartable.hub, restartable.fleet
    model = fleet.model()
    _backend, url = fleet.backend(model)
    agent = fleet.agent(url)
    agent_id = hub.wait_agent(agent.name)["id"]
    hub.stop()
    # The agent fails to reconnect at least once (a second "reconnecting in"), backing off.
    assert hub.wait_for(lambda: agent.log().count("reconnecting in") >= 2, 10), agent.log()
    restarted = restartable.restart()
    assert restarted.url == hub.url
    assert restarted.wait_agent(agent.name, models={model}, timeout=20)["id"] == agent_id
    assert agent.proc.poll() is None
    assert "reconnecting in" in agent.log()
    reply = fleet.client().chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content


async def test_agent_sigterm_finishes_in_flight_stream_and_takes_no_new_work(fleet: Fleet) -> None:
    model = fleet.model()
    backend, url = fleet.backend(model, chunks=20, delay=0.05)
    agent = fleet.agent(url, extra=("--drain-timeout", "10"))
    client = fleet.async_client()

    stream = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], stream=True)
    chunks = []
    async for chunk in stream:
        chunks.append(chunk)
        if len(chunks) == 2:
            agent.signal(signal.SIGTERM)
            await asyncio.to_thread(fleet.hub.wait_agent, agent.name, state="draining", timeout=5)
            # While it drains, nothing else is routed to it: the hub has no other agent for this model.
            with pytest.raises(openai.APIStatusError) as busy:
                await client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "x"}], timeout=3
                )
            assert busy.value.status_code == 503
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"tok{i} " for i in range(20))
    assert await asyncio.to_thread(agent.wait, 10) == 0
    assert sum(1 for r in backend.records if r.path == CHAT) == 1
    await client.close()


async def test_hub_sigterm_refuses_new_work_and_finishes_in_flight(tmp_path: Path) -> None:
    hub = HubProcess(
        tmp_path / "hub", "--heartbeat-interval", "0.3", "--heartbeat-timeout", "1.5", "--queue-timeout", "1"
    )
    fleet = Fleet(hub, tmp_path / "fleet")
    try:
        model = fleet.model()
        _backend, url = fleet.backend(model, chunks=30, delay=0.05)
        fleet.agent(url)
        client = fleet.async_client()
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], stream=True
        )
        chunks = []
        async for chunk in stream:
            chunks.append(chunk)
            if len(chunks) == 2:
                hub.signal(signal.SIGTERM)
                stopped = await asyncio.to_thread(
                    hub.wait_for, lambda: http_json("GET", hub.url + "/readyz")[0] == 503, 5
                )
                assert stopped, "the hub did not stop its intake"
                status, body, headers = await asyncio.to_thread(
                    http_json, "POST", hub.url + CHAT, {"model": model, "messages": []}, fleet.key
                )
                assert status == 503
                assert body["error"]["code"] == "shutting_down"
                assert "x-request-id" in {k.lower() for k in headers}
                status, _, _ = await asyncio.to_thread(http_json, "GET", hub.url + "/readyz")
                assert status == 503
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "".join(f"tok{i} " for i in range(30))
        assert await asyncio.to_thread(hub.wait, 15) == 0
        await client.close()
    finally:
        fleet.close()
        hub.stop()


def test_admin_drain_takes_an_agent_out_of_rotation_until_resumed(fleet: Fleet) -> None:
    model = fleet.model()
    _backend, url = fleet.backend(model)
    agent = fleet.agent(url)
    agent_id = fleet.hub.wait_agent(agent.name)["id"]
    client = fleet.client()

    status, body = fleet.hub.admin("POST", f"/admin/agents/{agent_id}/drain")
    assert (status, body["state"]) == (202, "draining")
    assert fleet.hub.wait_agent(agent.name, state="draining")["drained_by_admin"] is True
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 503
    assert 1 <= int(refused.value.response.headers["Retry-After"]) <= 60

    status, body = fleet.hub.admin("POST", f"/admin/agents/{agent_id}/resume")
    assert (status, body["state"]) == (200, "online")
    assert client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}]).choices
    status, _ = fleet.hub.admin("POST", "/admin/agents/agt_nope/drain")
    assert status == 404


@pytest.mark.parametrize("stop", ["sigterm", "kill-9"])
def test_after_a_hub_restart_a_model_answers_503_until_its_agent_is_back(restartable: Restartable, stop: str) -> None:
    hub, fleet = restartable.hub, restartable.fleet
    model = fleet.model()
    _backend, url = fleet.backend(model)
    agent = fleet.agent(url)
    hub.wait_agent(agent.name, models={model})
    agent.signal(signal.SIGSTOP)  # held back, so the restarted hub must answer before the agent returns
    if stop == "kill-9":
        hub.kill()
    else:
        hub.stop()
    restarted = restartable.restart()
    client = fleet.client().with_options(max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"].isdigit()
    assert caught.value.body["code"] == "model_unavailable"  # type: ignore[index]
    # A model nobody served before the restart is still plainly missing.
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=fleet.model("never"), messages=[{"role": "user", "content": "x"}])
    agent.signal(signal.SIGCONT)
    restarted.wait_agent(agent.name, models={model}, timeout=20)
    reply = fleet.client().chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content


def test_a_model_an_agent_added_while_connected_answers_503_after_a_hub_restart(restartable: Restartable) -> None:
    hub, fleet = restartable.hub, restartable.fleet
    model = fleet.model()
    backend, url = fleet.backend(model)
    agent = fleet.agent(url)
    hub.wait_agent(agent.name, models={model})
    added = fleet.model("added")
    backend.set_models((model, added))  # the agent's next catalog read finds it and sends MODELS
    hub.wait_agent(agent.name, models={model, added})

    def stored() -> bool:  # the hub writes the catalog behind, off the frame loop
        with sqlite3.connect(restartable.root / "potluck.db") as db:
            return any(served and added in json.loads(served) for (served,) in db.execute(SERVED))

    assert HubProcess.wait_for(stored, 5)
    agent.signal(signal.SIGSTOP)
    hub.kill()
    restartable.restart()
    client = fleet.client().with_options(max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=added, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "model_unavailable"  # type: ignore[index]


SERVED = "SELECT served_models FROM agents"
