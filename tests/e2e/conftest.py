"""Fixtures that start real processes: hubs, agents, and fake backends (real HTTP servers in a thread)."""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from testing.fake_backend import BackgroundServer, FakeBackend
from testing.processes import AgentProcess, HubProcess

# Short heartbeats so that dead agents are noticed quickly and long streams prove they survive.
FAST_HUB_ARGS = ("--heartbeat-interval", "0.3", "--heartbeat-timeout", "1.5")


class Fleet:
    """One hub (shared by a module) plus the backends and agents a test starts."""

    def __init__(self, hub: HubProcess, root: Path) -> None:
        self.hub = hub
        self.root = root
        self.key = hub.create_key("fleet")
        self._stack = contextlib.ExitStack()
        self._counter = itertools.count()
        self.agents: list[AgentProcess] = []
        self.servers: dict[int, BackgroundServer] = {}

    def model(self, hint: str = "m") -> str:
        """A model name no other test uses, so tests sharing a hub never route to each other's agents."""
        return f"{hint}-{uuid.uuid4().hex[:8]}"

    def backend(self, *models: str, **knobs: Any) -> tuple[FakeBackend, str]:
        backend = FakeBackend(models, **knobs)
        server = self._stack.enter_context(BackgroundServer(backend.make_app()))
        self.servers[id(backend)] = server
        return backend, server.url

    def serve(self, fake: Any) -> str:
        """Run any fake server (anything with make_app()) in a thread; its base URL."""
        server = self._stack.enter_context(BackgroundServer(fake.make_app()))
        self.servers[id(fake)] = server
        return server.url

    def stop_backend(self, backend: Any) -> None:
        """Stop one fake backend: its port then refuses connections."""
        self.servers.pop(id(backend)).stop()

    def agent(self, *backends: str, max_concurrency: int = 8, wait: bool = True, **kwargs: Any) -> AgentProcess:
        n = next(self._counter)
        name = kwargs.pop("name", f"agent-{uuid.uuid4().hex[:8]}")
        token = self.hub.create_agent_token(name)
        agent = AgentProcess(
            self.hub,
            self.root / f"agent-{n}-{name}",
            list(backends),
            name=name,
            token=token,
            max_concurrency=max_concurrency,
            **kwargs,
        )
        self.agents.append(agent)
        if wait:
            self.hub.wait_agent(name)
        return agent

    def client(self, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 20)
        client = openai.OpenAI(base_url=self.hub.url + "/v1", api_key=self.key, **kwargs)
        self._stack.callback(client.close)
        return client

    def async_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 20)
        return openai.AsyncOpenAI(base_url=self.hub.url + "/v1", api_key=self.key, **kwargs)

    def closing(self, client: Any) -> None:
        """Close this (sync) SDK client with the fleet, so no socket outlives the test."""
        self._stack.callback(client.close)

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.agents.clear()
        self._stack.close()


@pytest.fixture(scope="module")
def shared_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    hub = HubProcess(tmp_path_factory.mktemp("hub"), *FAST_HUB_ARGS)
    yield hub
    hub.stop()


@pytest.fixture
def fleet(shared_hub: HubProcess, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(shared_hub, tmp_path)
    yield fleet
    fleet.close()


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    """A dedicated hub with its own options, for tests that change hub-wide settings."""
    fleets: list[Fleet] = []
    hubs: list[HubProcess] = []

    def make(*args: str) -> Fleet:
        hub = HubProcess(tmp_path / f"hub-{len(hubs)}", *FAST_HUB_ARGS, *args)
        hubs.append(hub)
        fleet = Fleet(hub, tmp_path / f"fleet-{len(fleets)}")
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.close()
    for hub in hubs:
        hub.stop()
