"""Which backends serve which client dialects themselves, per kind, as the agent finds out and reports it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from potluck.agent.backends import make_backend
from potluck.agent.backends.ollama import release
from potluck.agent.catalog import Catalog
from testing.fake_backend import BackgroundServer, FakeBackend
from testing.fake_lmstudio import FakeLMStudio
from testing.fake_ollama import FakeOllama
from testing.fake_vllm import FakeVLLM

ANTHROPIC = ["/v1/messages", "/v1/messages/count_tokens"]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def native_paths(http: aiohttp.ClientSession, fake: object, kind: str) -> list[str]:
    with BackgroundServer(fake.make_app()) as server:  # type: ignore[attr-defined]
        catalog = Catalog([make_backend(server.url, kind)])
        await catalog.refresh(http)
        (info,) = catalog.infos()
        assert info.healthy
        return info.native_paths


async def test_a_llamacpp_server_that_counts_tokens_itself_has_messages_natively(http: aiohttp.ClientSession) -> None:
    fake = FakeBackend(messages=True)
    assert await native_paths(http, fake, "llamacpp") == ANTHROPIC
    (probe,) = [r for r in fake.records if r.path == "/v1/messages/count_tokens"]
    assert probe.json is not None
    assert probe.json["model"] == "fake-model"


async def test_a_llamacpp_build_without_messages_is_translated_to(http: aiohttp.ClientSession) -> None:
    assert await native_paths(http, FakeBackend(), "llamacpp") == []


async def test_the_probe_is_asked_once_and_again_after_the_backend_was_gone(http: aiohttp.ClientSession) -> None:
    fake = FakeBackend(messages=True)
    with BackgroundServer(fake.make_app()) as server:
        backend = make_backend(server.url, "llamacpp")
        await backend.refresh(http)
        await backend.refresh(http)
        assert len([r for r in fake.records if r.path == "/v1/messages/count_tokens"]) == 1
        assert backend.native_paths == frozenset(ANTHROPIC)
    await backend.refresh(http)  # gone: unhealthy, and nothing is known of it any more
    assert (backend.healthy, backend.native_paths) == (False, frozenset())


async def test_a_generic_server_is_always_translated_to_even_if_it_has_messages(http: aiohttp.ClientSession) -> None:
    assert await native_paths(http, FakeBackend(messages=True), "openai") == []
    assert await native_paths(http, FakeBackend(messages=True), "sglang") == []


async def test_vllm_serves_what_its_openapi_document_lists(http: aiohttp.ClientSession) -> None:
    assert await native_paths(http, FakeVLLM("tiny", messages=True), "vllm") == ANTHROPIC
    assert await native_paths(http, FakeVLLM("tiny"), "vllm") == []


async def test_ollama_serves_responses_from_0_13_3_and_messages_from_0_14(http: aiohttp.ClientSession) -> None:
    assert await native_paths(http, FakeOllama(["m:latest"], version="0.12.3"), "ollama") == []
    assert await native_paths(http, FakeOllama(["m:latest"], version="0.13.3"), "ollama") == ["/v1/responses"]
    both = ["/v1/messages", "/v1/responses"]
    assert await native_paths(http, FakeOllama(["m:latest"], version="0.14.0-rc2"), "ollama") == both
    assert release("0.14.0-rc2") == (0, 14, 0)
    assert release(None) == release("unknown") == ()


async def test_lm_studio_is_always_translated_to(http: aiohttp.ClientSession) -> None:
    assert await native_paths(http, FakeLMStudio(), "lmstudio") == []
