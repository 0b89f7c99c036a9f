"""Auto-detection, hot/cold state, catalog refresh and native translation, with faithful fakes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import aiohttp
import pytest

from testing.fake_ollama import FakeOllama
from tests.e2e.conftest import Fleet

pytestmark = pytest.mark.slow

MANAGEMENT_PATHS = {"/api/pull", "/api/delete", "/api/create", "/api/copy", "/api/push"}


def _port(url: str) -> str:
    return str(urlsplit(url).port)


def _wait(predicate: Callable[[], object], timeout: float = 2.0) -> float:
    """Poll ``predicate`` until true; the seconds it took (fails the test past ``timeout``)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


def _models(fleet: Fleet, agent_name: str) -> dict[str, bool]:
    agent = fleet.hub.agent_by_name(agent_name)
    return {m["id"]: m["hot"] for m in agent["models"]} if agent else {}


Ollama = tuple[FakeOllama, str, str, str]
"""The fake, its URL, a hot model and a cold one."""


@pytest.fixture
def ollama(fleet: Fleet) -> Ollama:
    hot, cold = f"{fleet.model('hot')}:latest", f"{fleet.model('cold')}:latest"
    fake = FakeOllama(models=[hot, cold], loaded=[hot], chunks=4)
    url = fleet.serve(fake)
    return fake, url, hot, cold


def test_ollama_is_detected_with_hot_and_cold_models(fleet: Fleet, ollama: Ollama) -> None:
    fake, url, hot, cold = ollama
    agent = fleet.agent(extra=("--scan-ports", _port(url)))

    listed = fleet.hub.wait_agent(agent.name, models={hot, cold})
    backends = [b for b in listed["backends"] if b["url"] == url]
    assert backends
    assert backends[0]["kind"] == "ollama"
    assert backends[0]["version"] == fake.version
    models = {m["id"]: m for m in listed["models"]}
    assert models[hot]["hot"] is True
    assert models[cold]["hot"] is False
    assert models[hot]["vram_bytes"] > 0
    assert models[hot.removesuffix(":latest")]["hot"] is True  # the bare name Ollama also answers to
    served = {m.id: m.model_extra or {} for m in fleet.client().models.list()}
    assert served[hot]["hot"] is True
    assert served[cold]["hot"] is False


def test_catalog_changes_reach_the_hub_within_two_seconds(fleet: Fleet, ollama: Ollama) -> None:
    fake, url, hot, cold = ollama
    agent = fleet.agent(extra=("--scan-ports", _port(url)))
    fleet.hub.wait_agent(agent.name, models={hot, cold})

    pulled = f"{fleet.model('pulled')}:latest"
    fake.pull(pulled)
    assert _wait(lambda: pulled in _models(fleet, agent.name)) < 2.0
    fake.load(cold)
    assert _wait(lambda: _models(fleet, agent.name).get(cold) is True) < 2.0
    fake.unload(hot)
    assert _wait(lambda: _models(fleet, agent.name).get(hot) is False) < 2.0
    fake.delete(pulled)
    assert _wait(lambda: pulled not in _models(fleet, agent.name)) < 2.0
    reply = fleet.client().chat.completions.create(model=cold, messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content


def test_plain_requests_use_ollamas_openai_layer_untouched(fleet: Fleet, ollama: Ollama) -> None:
    fake, url, hot, _cold = ollama
    fleet.agent(f"{url},kind=ollama")

    reply = fleet.client().chat.completions.create(model=hot, messages=[{"role": "user", "content": "a b"}])

    assert reply.choices[0].message.content == "tok0 tok1 tok2 tok3 "
    assert [r.path for r in fake.records if r.method == "POST"] == ["/v1/chat/completions"]


def test_native_options_go_through_api_chat_and_come_back_openai_shaped(fleet: Fleet, ollama: Ollama) -> None:
    fake, url, hot, _cold = ollama
    fleet.agent(f"{url},kind=ollama")
    client = fleet.client()
    extra = {"options": {"num_ctx": 8192}, "keep_alive": "10m"}

    raw = client.chat.completions.with_raw_response.create(
        model=hot, messages=[{"role": "user", "content": "one two three"}], max_tokens=3, extra_body=extra
    )
    reply = raw.parse()
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == "tok0 tok1 tok2 "
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 3)
    native = [r for r in fake.records if r.path == "/api/chat"][-1]
    assert native.json is not None
    assert native.json["options"] == {"num_ctx": 8192, "num_predict": 3}
    assert native.json["keep_alive"] == "10m"
    record = fleet.hub.usage_of(raw.headers["x-request-id"])
    assert (record["prompt_tokens"], record["completion_tokens"]) == (3, 3)

    chunks = list(
        client.chat.completions.create(
            model=hot,
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_body=extra,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 "
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4

    streamed_without_usage = list(
        client.chat.completions.create(
            model=hot, messages=[{"role": "user", "content": "x"}], stream=True, extra_body=extra
        )
    )
    assert all(c.choices for c in streamed_without_usage), "no usage chunk the client did not ask for"


def test_native_completions_and_embeddings(fleet: Fleet, ollama: Ollama) -> None:
    fake, url, hot, _cold = ollama
    fleet.agent(f"{url},kind=ollama")
    client = fleet.client()
    extra = {"keep_alive": -1}

    completion = client.completions.create(model=hot, prompt="once upon", extra_body=extra)
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "tok0 tok1 tok2 tok3 "
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model=hot, prompt="x", stream=True, extra_body=extra)
        if c.choices
    )
    assert streamed == "tok0 tok1 tok2 tok3 "
    embedding = client.embeddings.create(model=hot, input=["a b", "c"], extra_body=extra, encoding_format="float")
    assert len(embedding.data) == 2
    assert embedding.usage.prompt_tokens == 3
    assert {r.path for r in fake.records if r.method == "POST"} >= {"/api/generate", "/api/embed"}


def test_native_errors_become_openai_errors(fleet: Fleet, ollama: Ollama) -> None:
    import openai

    fake, url, hot, _cold = ollama
    fleet.agent(f"{url},kind=ollama")
    fake.status = 500
    with pytest.raises(openai.InternalServerError) as failed:
        fleet.client().chat.completions.create(
            model=hot, messages=[{"role": "user", "content": "x"}], extra_body={"keep_alive": "1m"}
        )
    assert failed.value.body["type"] == "server_error"  # type: ignore[index]
    assert failed.value.body["message"]  # type: ignore[index]


async def test_client_disconnect_cancels_the_native_request(fleet: Fleet, ollama: Ollama) -> None:
    fake, url, hot, _cold = ollama
    fake.chunks = 200
    fake.token_delay = 0.05
    fleet.agent(f"{url},kind=ollama", max_concurrency=1)
    body = {"model": hot, "messages": [{"role": "user", "content": "x"}], "stream": True, "keep_alive": "1m"}

    async with (
        aiohttp.ClientSession() as http,
        http.post(fleet.hub.url + "/v1/chat/completions", json=body, headers={"x-api-key": fleet.key}) as resp,
    ):
        first = await resp.content.readany()
        assert first.startswith(b"data: ")
    closed_at = time.monotonic()

    native = [r for r in fake.records if r.path == "/api/chat"]
    assert await fake.wait_for_async(lambda: native[-1].disconnected, 1.0)
    assert native[-1].disconnected_at is not None
    assert native[-1].disconnected_at - closed_at < 1.0
    fake.chunks = 2
    fake.token_delay = 0.0
    client = fleet.client(timeout=3)
    reply = await asyncio.to_thread(
        lambda: client.chat.completions.create(model=hot, messages=[{"role": "user", "content": "y"}])
    )
    assert reply.choices[0].message.content == "tok0 tok1 "


def test_the_agent_never_calls_management_endpoints(fleet: Fleet, ollama: Ollama) -> None:
    fake, url, hot, cold = ollama
    agent = fleet.agent(extra=("--scan-ports", _port(url)))
    fleet.hub.wait_agent(agent.name, models={hot, cold})
    client = fleet.client()
    client.chat.completions.create(model=cold, messages=[{"role": "user", "content": "x"}])
    client.chat.completions.create(model=hot, messages=[{"role": "user", "content": "x"}], extra_body={"keep_alive": 0})
    # A body naming other paths or hosts changes nothing: only the model field routes.
    client.chat.completions.create(
        model=hot,
        messages=[{"role": "user", "content": "x"}],
        extra_body={"path": "/api/pull", "url": "http://example.invalid/", "model_url": "/api/delete"},
    )
    assert not [r for r in fake.records if r.path in MANAGEMENT_PATHS]
    assert {urlsplit(f"http://x{r.path}").path for r in fake.records} <= {
        "/api/version",
        "/api/tags",
        "/api/ps",
        "/v1/chat/completions",
        "/api/chat",
        "/v1/models",
        "/",
        "/api/v0/models",
        "/props",
        "/version",
        "/get_model_info",
        "/metrics",
    }


def test_backend_appearing_and_disappearing_changes_what_is_served_without_reconnect(fleet: Fleet) -> None:
    model = f"{fleet.model('late')}:latest"
    late = FakeOllama(models=[model], loaded=[model])
    from testing.fake_backend import BackgroundServer

    server = BackgroundServer(late.make_app())
    url = server.start()
    try:
        port = _port(url)
        server.stop()  # nothing listens there when the agent starts
        agent = fleet.agent(extra=("--scan-ports", port, "--rescan-interval", "0.3"))
        agent_id = fleet.hub.wait_agent(agent.name)["id"]
        assert model not in _models(fleet, agent.name)

        server = BackgroundServer(late.make_app(), port=int(port))
        server.start()
        _wait(lambda: model in _models(fleet, agent.name), timeout=5)
        server.stop()
        _wait(lambda: model not in _models(fleet, agent.name), timeout=5)
        assert fleet.hub.agent_by_name(agent.name)["id"] == agent_id  # type: ignore[index]
        assert agent.log().count("connected to") == 1, "the agent never reconnected"
        assert json.dumps(fleet.hub.agents())
    finally:
        server.stop()


def test_agent_scan_prints_the_detected_backends(fleet: Fleet, ollama: Ollama) -> None:
    import subprocess
    import sys

    _fake, url, hot, cold = ollama
    result = subprocess.run(
        [sys.executable, "-m", "potluck", "agent", "--scan-ports", _port(url), "scan"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if url in line)
    assert "ollama" in line
    assert f"{hot} (hot)" in line
    assert cold in line
    assert f"{cold} (hot)" not in line


def test_a_request_waiting_on_a_cold_model_speeds_up_catalog_reads(fleet: Fleet, ollama: Ollama) -> None:
    fake, url, _hot, cold = ollama
    fake.load_delay = 1.0
    agent = fleet.agent(f"{url},kind=ollama", extra=("--catalog-interval", "10"))
    fleet.hub.wait_agent(agent.name, models={cold})
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        client = fleet.client()
        pending = pool.submit(
            lambda: client.chat.completions.create(
                model=cold, messages=[{"role": "user", "content": "x"}], extra_body={"fake": {"delay": 0}}
            )
        )
        _wait(lambda: _models(fleet, agent.name).get(cold) is True, timeout=3.0)
        # Loaded after 1 s; seen hot by the hub well before the 10 s catalog interval.
        assert time.monotonic() - started < 2.5
        assert pending.result(10).choices[0].message.content
