"""Against a real llama.cpp server (xllamacpp's embedded llama-server) on a tiny model made at test time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from openai.types.chat import ChatCompletionMessageParam

from testing.llama import start_llama_server
from tests.e2e.conftest import Fleet

pytestmark = pytest.mark.slow


@pytest.fixture
def llama_url(tmp_path: Path) -> Iterator[str]:
    with start_llama_server(tmp_path, alias="tiny-llama", parallel=2) as url:
        yield url


def test_real_llamacpp_chat_through_the_relay(fleet: Fleet, llama_url: str) -> None:
    agent = fleet.agent(llama_url)
    fleet.hub.wait_agent(agent.name, models={"tiny-llama"})
    client = fleet.client(timeout=60)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]

    reply = client.chat.completions.create(model="tiny-llama", messages=messages, max_tokens=12, temperature=0)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 12
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content

    raw = client.chat.completions.with_raw_response.create(
        model="tiny-llama", messages=messages, max_tokens=12, temperature=0, stream=True
    )
    chunks = list(raw.parse())
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == reply.choices[0].message.content  # greedy decoding: same text either way
    assert all(c.usage is None or c.choices for c in chunks), "no usage-only chunk the client did not ask for"
    record = fleet.hub.usage_of(raw.headers["x-request-id"])
    assert record["completion_tokens"] == 12
    assert record["prompt_tokens"] > 0


def test_real_llamacpp_stream_with_usage_requested(fleet: Fleet, llama_url: str) -> None:
    agent = fleet.agent(llama_url)
    fleet.hub.wait_agent(agent.name, models={"tiny-llama"})

    stream = fleet.client(timeout=60).chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "Count"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    usage_chunks = [c for c in chunks if c.usage is not None and not c.choices]
    assert len(usage_chunks) == 1
    assert usage_chunks[0].usage is not None
    assert usage_chunks[0].usage.completion_tokens == 8


def test_real_llamacpp_is_auto_detected_with_its_slots(fleet: Fleet, llama_url: str) -> None:
    from urllib.parse import urlsplit

    agent = fleet.agent(extra=("--scan-ports", str(urlsplit(llama_url).port), "--metrics-interval", "0.3"))
    listed = fleet.hub.wait_agent(agent.name, models={"tiny-llama"})
    backend = next(b for b in listed["backends"] if b["url"] == llama_url)
    assert backend["kind"] == "llamacpp"
    assert backend["slots"] == 2
    # It answered the agent's count_tokens probe: Anthropic requests pass through to it.
    assert backend["native_paths"] == ["/v1/messages", "/v1/messages/count_tokens"]
    model = next(m for m in listed["models"] if m["id"] == "tiny-llama")
    assert model["hot"] is True
    assert model["context_length"] == 2048
    reply = fleet.client(timeout=60).chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 4
    # Host metrics arrive in LOAD frames (no GPU here: source "none", CPU and RAM from psutil).
    import time

    deadline = time.monotonic() + 5
    while (host := fleet.hub.agent_by_name(agent.name)["host"]) is None and time.monotonic() < deadline:  # type: ignore[index]
        time.sleep(0.1)
    assert host is not None
    assert host["ram_total_bytes"] > 0
    assert host["source"] in ("none", "nvml", "nvidia-smi", "rocm-smi")


@pytest.mark.parametrize("kind", ["llamacpp", "openai"], ids=["native-messages", "translated-through-chat"])
def test_real_llamacpp_answers_the_anthropic_sdk(fleet: Fleet, llama_url: str, kind: str) -> None:
    """llama.cpp speaks Messages itself: its agent passes them through; named a generic OpenAI server
    (`kind=openai`), the agent translates them through its chat endpoint. The SDK sees the same answer."""
    agent = fleet.agent(f"{llama_url},kind={kind}")
    fleet.hub.wait_agent(agent.name, models={"tiny-llama"})
    with anthropic.Anthropic(base_url=fleet.hub.url, api_key=fleet.key, max_retries=0, timeout=60) as client:
        asked: Any = [{"role": "user", "content": "Say hello"}]
        raw = client.messages.with_raw_response.create(
            model="tiny-llama", max_tokens=8, messages=asked, extra_body={"temperature": 0}
        )
        message = raw.parse()
        assert message.stop_reason == "max_tokens"
        assert message.usage.output_tokens == 8
        assert message.content[0].type == "text"
        assert message.content[0].text
        with client.messages.stream(
            model="tiny-llama", max_tokens=8, messages=asked, extra_body={"temperature": 0}
        ) as stream:
            streamed = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert streamed == message.content[0].text  # greedy decoding: the same text either way
        assert final.usage.output_tokens == 8
        counted = client.messages.count_tokens(model="tiny-llama", messages=asked)
        assert counted.input_tokens > 0
    record = fleet.hub.usage_of(raw.headers["request-id"])
    assert (record["path"], record["outcome"], record["completion_tokens"]) == ("/v1/messages", "ok", 8)
    assert record["prompt_tokens"] == message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)


def test_real_llamacpp_answers_the_openai_responses_client(fleet: Fleet, llama_url: str) -> None:
    """llama.cpp's Responses support is not relied on: the agent translates through its chat endpoint."""
    agent = fleet.agent(llama_url)
    fleet.hub.wait_agent(agent.name, models={"tiny-llama"})
    client = fleet.client(timeout=60)
    raw = client.responses.with_raw_response.create(
        model="tiny-llama", input="Say hello", max_output_tokens=8, temperature=0
    )
    response = raw.parse()
    assert response.status == "incomplete"  # the tiny model never stops by itself within 8 tokens
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text
    assert response.usage is not None
    assert response.usage.output_tokens == 8
    with client.responses.stream(model="tiny-llama", input="Say hello", max_output_tokens=8, temperature=0) as stream:
        streamed = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    assert streamed == response.output_text
    record = fleet.hub.usage_of(raw.headers["x-request-id"])
    assert (record["path"], record["completion_tokens"]) == ("/v1/responses", 8)
