"""LM Studio and vLLM through the real agent: detection, hot/cold state, load figures, relaying."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from testing.fake_lmstudio import FakeLMStudio
from testing.fake_vllm import FakeVLLM
from tests.e2e.conftest import Fleet

pytestmark = pytest.mark.slow


def _port(url: str) -> str:
    return str(urlsplit(url).port)


def _backend(fleet: Fleet, agent_name: str, url: str) -> dict:  # type: ignore[type-arg]
    agent = fleet.hub.agent_by_name(agent_name)
    assert agent is not None
    return next(b for b in agent["backends"] if b["url"] == url)


def test_lmstudio_is_detected_with_loaded_state_and_never_loaded_by_the_agent(fleet: Fleet) -> None:
    loaded, idle = fleet.model("loaded"), fleet.model("idle")
    fake = FakeLMStudio(models=[loaded, idle], loaded=[loaded], chunks=3)
    url = fleet.serve(fake)
    agent = fleet.agent(extra=("--scan-ports", _port(url)))

    listed = fleet.hub.wait_agent(agent.name, models={loaded, idle})
    models = {m["id"]: m for m in listed["models"]}
    assert models[loaded]["hot"] is True
    assert models[idle]["hot"] is False
    assert models[loaded]["context_length"] == 32768
    assert _backend(fleet, agent.name, url)["kind"] == "lmstudio"

    reply = fleet.client().chat.completions.create(model=loaded, messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content
    fake.load(idle)
    deadline = time.monotonic() + 2
    while not {m["id"]: m["hot"] for m in fleet.hub.agent_by_name(agent.name)["models"]}[idle]:  # type: ignore[index]
        assert time.monotonic() < deadline, "load state did not reach the hub within 2 s"
        time.sleep(0.05)
    assert not fake.find(path="/api/v1/models/load")
    assert not fake.find(path="/api/v1/models/unload")


def test_vllm_is_detected_and_reports_its_load(fleet: Fleet) -> None:
    model = fleet.model("vllm")
    fake = FakeVLLM(model, max_model_len=1024, chunks=3)
    fake.waiting = 2
    fake.kv_cache_usage = 0.375
    url = fleet.serve(fake)
    agent = fleet.agent(extra=("--scan-ports", _port(url), "--metrics-interval", "0.3"))

    listed = fleet.hub.wait_agent(agent.name, models={model})
    assert {m["id"]: m for m in listed["models"]}[model]["context_length"] == 1024
    deadline = time.monotonic() + 3
    while (backend := _backend(fleet, agent.name, url)).get("waiting") is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert backend["kind"] == "vllm"
    assert backend["version"] == "0.32.0"
    assert backend["waiting"] == 2
    assert backend["kv_cache_usage"] == 0.375

    stream = fleet.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "x"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
