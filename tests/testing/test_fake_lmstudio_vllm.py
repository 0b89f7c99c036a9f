"""The LM Studio and vLLM fakes against what the real servers answer (backends.md 5.3-5.5), with raw aiohttp and
the official openai SDK."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import openai
import pytest

from testing.fake_lmstudio import NO_MODELS_LOADED, FakeLMStudio, LMStudioModel
from testing.fake_vllm import FakeVLLM
from testing.helpers import HELLO, run_as_process, sse_events, stop_process

QWEN = "qwen2.5-7b-instruct"
LLAMA = "llama-3.2-1b-instruct"
NOMIC = "text-embedding-nomic-embed-text-v1.5"
LABELS = (("engine", "0"), ("model_name", "tiny"))


def in_order(value: Any) -> str:
    """JSON text keeping key order, so that equal texts mean equal shapes, order included."""
    return json.dumps(value)


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text to {(name, sorted labels): value}."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        assert match is not None, line
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', match.group(2) or "")))
        samples[(match.group(1), labels)] = float(match.group(3))
    return samples


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with asyncio.timeout(5), http.get(url) as resp:
        return resp.status, await resp.json(content_type=None)


async def post_json(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with asyncio.timeout(5), http.post(url, json=body) as resp:
        return resp.status, await resp.json(content_type=None)


async def post_raw(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> bytes:
    async with asyncio.timeout(5), http.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


# ====================================================================== LM Studio


@pytest.fixture
def lms() -> FakeLMStudio:
    return FakeLMStudio([QWEN, LLAMA, NOMIC])


@pytest.fixture
def lms_url(lms: FakeLMStudio) -> Iterator[str]:
    with lms.running() as url:
        yield url


@pytest.fixture
def lms_client(lms_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{lms_url}/v1", api_key="lm-studio", max_retries=0, timeout=5) as sdk:
        yield sdk


async def test_lms_v1_models_lists_downloaded_models_with_jit_and_loaded_ones_without(
    lms: FakeLMStudio, lms_url: str, http: aiohttp.ClientSession
) -> None:
    lms.load(LLAMA)
    _, with_jit = await get_json(http, f"{lms_url}/v1/models")
    lms.jit_loading = False
    _, without_jit = await get_json(http, f"{lms_url}/v1/models")

    def entry(model: str) -> dict[str, str]:
        return {"id": model, "object": "model", "owned_by": "organization_owner"}

    assert in_order(with_jit) == in_order({"data": [entry(QWEN), entry(LLAMA), entry(NOMIC)], "object": "list"})
    assert in_order(without_jit) == in_order({"data": [entry(LLAMA)], "object": "list"})


async def test_lms_v0_models_match_the_documented_example(http: aiohttp.ClientSession) -> None:
    documented = {
        "object": "list",
        "data": [
            {
                "id": "qwen2-vl-7b-instruct",
                "object": "model",
                "type": "vlm",
                "publisher": "mlx-community",
                "arch": "qwen2_vl",
                "compatibility_type": "mlx",
                "quantization": "4bit",
                "state": "not-loaded",
                "max_context_length": 32768,
            },
            {
                "id": "meta-llama-3.1-8b-instruct",
                "object": "model",
                "type": "llm",
                "publisher": "lmstudio-community",
                "arch": "llama",
                "compatibility_type": "gguf",
                "quantization": "Q4_K_M",
                "state": "not-loaded",
                "max_context_length": 131072,
            },
            {
                "id": "text-embedding-nomic-embed-text-v1.5",
                "object": "model",
                "type": "embeddings",
                "publisher": "nomic-ai",
                "arch": "nomic-bert",
                "compatibility_type": "gguf",
                "quantization": "Q4_0",
                "state": "not-loaded",
                "max_context_length": 2048,
            },
        ],
    }
    fake = FakeLMStudio(
        [
            LMStudioModel(
                "qwen2-vl-7b-instruct", type="vlm", publisher="mlx-community", arch="qwen2_vl", compatibility_type="mlx"
            ),
            LMStudioModel("meta-llama-3.1-8b-instruct", arch="llama", max_context_length=131072),
            LMStudioModel(NOMIC, publisher="nomic-ai", quantization="Q4_0"),
        ]
    )
    with fake.running() as url:
        _, listed = await get_json(http, f"{url}/api/v0/models")
        status, one = await get_json(http, f"{url}/api/v0/models/qwen2-vl-7b-instruct")
        missing, error = await get_json(http, f"{url}/api/v0/models/nope")

    assert in_order(listed) == in_order(documented)
    assert (status, in_order(one)) == (200, in_order(documented["data"][0]))
    assert missing == 404
    assert error["error"]["code"] == "model_not_found"


async def test_lms_state_follows_load_and_unload(lms: FakeLMStudio, lms_url: str, http: aiohttp.ClientSession) -> None:
    async def states() -> dict[str, str]:
        _, listed = await get_json(http, f"{lms_url}/api/v0/models")
        return {m["id"]: m["state"] for m in listed["data"]}

    assert await states() == {QWEN: "not-loaded", LLAMA: "not-loaded", NOMIC: "not-loaded"}
    lms.load(QWEN)
    await asyncio.to_thread(lms.load, NOMIC)  # from another thread too
    assert await states() == {QWEN: "loaded", LLAMA: "not-loaded", NOMIC: "loaded"}
    lms.unload(QWEN)
    lms.unload(QWEN)  # unloading twice is harmless
    assert await states() == {QWEN: "not-loaded", LLAMA: "not-loaded", NOMIC: "loaded"}
    assert lms.loaded == (NOMIC,)
    with pytest.raises(ValueError, match="not a downloaded model"):
        lms.load("nope")


async def test_lms_jit_loads_a_requested_model_after_the_load_delay(http: aiohttp.ClientSession) -> None:
    fake = FakeLMStudio([QWEN, LLAMA, NOMIC], loaded=[NOMIC], load_delay=0.3)
    with fake.running() as url:
        body = {"model": QWEN, "messages": HELLO, "fake": {"chunks": 2}}
        started = time.monotonic()
        first = asyncio.create_task(post_json(http, f"{url}/v1/chat/completions", body))
        second = asyncio.create_task(post_json(http, f"{url}/v1/chat/completions", body))
        assert await fake.wait_for_async(lambda: fake.loading == (QWEN,), 2.0)

        # While it loads, nothing reports it loaded.
        _, v0 = await get_json(http, f"{url}/api/v0/models/{QWEN}")
        _, v1 = await get_json(http, f"{url}/api/v1/models")
        assert v0["state"] == "not-loaded"
        assert next(m for m in v1["models"] if m["key"] == QWEN)["loaded_instances"] == []

        (status1, reply1), (status2, reply2) = await asyncio.gather(first, second)
        elapsed = time.monotonic() - started
        assert (status1, status2) == (200, 200)
        assert reply1["model"] == reply2["model"] == QWEN
        assert elapsed >= 0.29
        assert fake.loaded == (NOMIC, QWEN)
        assert fake.loading == ()

        # Auto-evict: JIT loading LLAMA unloads QWEN (JIT loaded) but not NOMIC (loaded by hand).
        status, reply = await post_json(http, f"{url}/v1/chat/completions", {**body, "model": LLAMA})
        assert (status, reply["model"]) == (200, LLAMA)
        assert fake.loaded == (NOMIC, LLAMA)
        _, v0 = await get_json(http, f"{url}/api/v0/models/{LLAMA}")
        assert v0["state"] == "loaded"


async def test_lms_without_auto_evict_jit_loaded_models_stay(http: aiohttp.ClientSession) -> None:
    fake = FakeLMStudio([QWEN, LLAMA], auto_evict=False)
    with fake.running() as url:
        for model in (QWEN, LLAMA):
            status, _ = await post_json(http, f"{url}/v1/completions", {"model": model, "prompt": "hi"})
            assert status == 200

    assert fake.loaded == (QWEN, LLAMA)


async def test_lms_errors_when_no_model_can_serve(lms: FakeLMStudio, lms_url: str, http: aiohttp.ClientSession) -> None:
    lms.jit_loading = False
    status, none_loaded = await post_json(http, f"{lms_url}/v1/chat/completions", {"model": QWEN, "messages": HELLO})
    assert status == 404
    assert none_loaded == {
        "error": {
            "message": NO_MODELS_LOADED,
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    assert NO_MODELS_LOADED == (
        "No models loaded. Please load a model in the developer page or use the `lms load` command."
    )

    lms.load(QWEN)
    lms.load(NOMIC)
    status, wrong_name = await post_json(http, f"{lms_url}/v1/chat/completions", {"model": "x", "messages": HELLO})
    assert status == 404
    assert wrong_name["error"]["message"] == (
        f'Model "x" not found. Please specify a valid model.\n\nYour models:\n\n{QWEN}\n{NOMIC}'
    )
    assert wrong_name["error"]["code"] == "model_not_found"
    assert lms.loaded == (QWEN, NOMIC), "nothing was loaded with JIT off"

    # With JIT on, an unknown name is still not found (and nothing gets loaded).
    lms.jit_loading = True
    status, _ = await post_json(http, f"{lms_url}/v1/completions", {"model": "nope", "prompt": "hi"})
    assert status == 404


def test_lms_one_loaded_model_serves_any_model_name(lms: FakeLMStudio, lms_client: openai.OpenAI) -> None:
    lms.jit_loading = False
    lms.load(LLAMA)

    unknown = lms_client.chat.completions.create(model="gpt-4o", messages=HELLO)
    downloaded_not_loaded = lms_client.chat.completions.create(model=QWEN, messages=HELLO)

    assert unknown.model == downloaded_not_loaded.model == LLAMA
    assert list(lms.loaded) == [LLAMA], "nothing was loaded"
    # With JIT on, a downloaded model is loaded rather than substituted; an unknown name is still substituted.
    lms.jit_loading = True
    assert lms_client.chat.completions.create(model="gpt-4o", messages=HELLO).model == LLAMA
    assert lms_client.chat.completions.create(model=QWEN, messages=HELLO).model == QWEN
    assert lms.loaded == (LLAMA, QWEN)


def test_lms_chat_through_the_sdk(lms: FakeLMStudio, lms_client: openai.OpenAI) -> None:
    lms.load(QWEN)
    reply = lms_client.chat.completions.create(model=QWEN, messages=HELLO, max_tokens=4)
    chunks = list(
        lms_client.chat.completions.create(
            model=QWEN,
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"fake": {"chunks": 3}},
        )
    )

    assert re.fullmatch(r"chatcmpl-[a-z0-9]{21}", reply.id)
    assert reply.object == "chat.completion"
    assert reply.system_fingerprint == QWEN
    assert reply.choices[0].message.content == "tok0 tok1 tok2 tok3 "
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (4, 4, 8)

    assert [c.choices[0].delta.content for c in chunks if c.choices] == ["tok0 ", "tok1 ", "tok2 ", None]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert len({c.id for c in chunks}) == 1
    assert re.fullmatch(r"chatcmpl-[a-z0-9]{21}", chunks[0].id)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


async def test_lms_stream_framing_on_the_wire(lms: FakeLMStudio, lms_url: str, http: aiohttp.ClientSession) -> None:
    lms.load(QWEN)
    body = {"model": QWEN, "messages": HELLO, "stream": True, "fake": {"chunks": 2}}
    events = sse_events(await post_raw(http, f"{lms_url}/v1/chat/completions", body))
    completion = sse_events(
        await post_raw(
            http, f"{lms_url}/v1/completions", {"model": QWEN, "prompt": "hi", "stream": True, "max_tokens": 1}
        )
    )

    assert events[-1] == "[DONE]"
    assert [e["choices"] for e in events[:-1]] == [
        [{"index": 0, "delta": {"role": "assistant", "content": "tok0 "}, "logprobs": None, "finish_reason": None}],
        [{"index": 0, "delta": {"role": "assistant", "content": "tok1 "}, "logprobs": None, "finish_reason": None}],
        [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
    ]
    assert all(list(e) == ["id", "object", "created", "model", "system_fingerprint", "choices"] for e in events[:-1])
    assert {(e["object"], e["model"], e["system_fingerprint"]) for e in events[:-1]} == {
        ("chat.completion.chunk", QWEN, QWEN)
    }
    assert re.fullmatch(r"cmpl-[a-z0-9]{21}", completion[0]["id"])
    assert [e["choices"][0]["text"] for e in completion[:-1]] == ["tok0 ", ""]
    assert completion[-2]["choices"][0]["finish_reason"] == "length"


async def test_lms_v0_chat_adds_stats_model_info_and_runtime(
    lms: FakeLMStudio, lms_url: str, http: aiohttp.ClientSession
) -> None:
    lms.load(QWEN)
    body = {"model": QWEN, "messages": HELLO, "max_tokens": 3, "fake": {"first_delay": 0.05, "delay": 0.02}}
    status, reply = await post_json(http, f"{lms_url}/api/v0/chat/completions", body)
    _, natural = await post_json(
        http, f"{lms_url}/api/v0/completions", {"model": QWEN, "prompt": "x", "max_tokens": -1}
    )

    assert status == 200
    assert list(reply) == ["id", "object", "created", "model", "choices", "usage", "stats", "model_info", "runtime"]
    assert re.fullmatch(r"chatcmpl-[a-z0-9]{21}", reply["id"])
    assert list(reply["choices"][0]) == ["index", "logprobs", "finish_reason", "message"]
    stats = reply["stats"]
    assert list(stats) == ["tokens_per_second", "time_to_first_token", "generation_time", "stop_reason"]
    assert stats["stop_reason"] == "maxPredictedTokensReached"
    assert stats["time_to_first_token"] >= 0.05
    assert stats["generation_time"] >= 0.04
    assert stats["tokens_per_second"] > 0
    assert reply["model_info"] == {"arch": "qwen2", "quant": "Q4_K_M", "format": "gguf", "context_length": 4096}
    assert list(reply["runtime"]) == ["name", "version", "supported_formats"]
    assert reply["runtime"]["supported_formats"] == ["gguf"]
    # max_tokens -1 means no limit.
    assert natural["object"] == "text_completion"
    assert natural["choices"][0]["text"] == "".join(f"tok{i} " for i in range(6))
    assert natural["stats"]["stop_reason"] == "eosFound"


def test_lms_embeddings_report_no_token_counts(lms: FakeLMStudio, lms_client: openai.OpenAI) -> None:
    result = lms_client.embeddings.create(model=NOMIC, input=["hello", "world"])

    assert [e.index for e in result.data] == [0, 1]
    assert result.data[0].embedding != result.data[1].embedding
    assert result.model == NOMIC
    assert result.usage.model_dump() == {"prompt_tokens": 0, "total_tokens": 0}
    assert lms.loaded == (NOMIC,), "JIT loaded"


async def test_lms_v1_models_loads_and_unloads(lms: FakeLMStudio, lms_url: str, http: aiohttp.ClientSession) -> None:
    status, loaded = await post_json(
        http, f"{lms_url}/api/v1/models/load", {"model": QWEN, "context_length": 8192, "echo_load_config": True}
    )
    _, plain = await post_json(http, f"{lms_url}/api/v1/models/load", {"model": NOMIC})
    _, catalog = await get_json(http, f"{lms_url}/api/v1/models")
    unload_status, unloaded = await post_json(http, f"{lms_url}/api/v1/models/unload", {"instance_id": QWEN})
    missing, _ = await post_json(http, f"{lms_url}/api/v1/models/unload", {"instance_id": QWEN})

    assert status == 200
    assert list(loaded) == ["type", "instance_id", "load_time_seconds", "status", "load_config"]
    assert (loaded["type"], loaded["instance_id"], loaded["status"]) == ("llm", QWEN, "loaded")
    assert loaded["load_config"]["context_length"] == 8192
    assert list(plain) == ["type", "instance_id", "load_time_seconds", "status"]
    assert plain["type"] == "embedding"
    qwen, llama, nomic = catalog["models"]
    assert list(qwen) == [
        "type",
        "publisher",
        "key",
        "display_name",
        "architecture",
        "quantization",
        "size_bytes",
        "params_string",
        "loaded_instances",
        "max_context_length",
        "format",
        "capabilities",
        "description",
    ]
    assert (qwen["type"], qwen["key"], qwen["display_name"], qwen["params_string"]) == (
        "llm",
        QWEN,
        "Qwen2.5 7B Instruct",
        "7B",
    )
    assert qwen["quantization"] == {"name": "Q4_K_M", "bits_per_weight": 4}
    assert qwen["loaded_instances"] == [
        {
            "id": QWEN,
            "config": {
                "context_length": 8192,
                "eval_batch_size": 512,
                "parallel": 4,
                "flash_attention": True,
                "offload_kv_cache_to_gpu": True,
            },
        }
    ]
    assert qwen["capabilities"] == {"vision": False, "trained_for_tool_use": False}
    assert llama["loaded_instances"] == []
    assert (nomic["type"], nomic["params_string"]) == ("embedding", None)
    assert "architecture" not in nomic
    assert "capabilities" not in nomic
    assert nomic["loaded_instances"] == [{"id": NOMIC, "config": {"context_length": 2048}}]
    assert (unload_status, unloaded) == (200, {"instance_id": QWEN})
    assert missing == 404
    assert lms.loaded == (NOMIC,)
    # Tests of the agent prove it never calls these: every call is on record.
    assert [r.json for r in lms.find("/api/v1/models/load", method="POST")] == [
        {"model": QWEN, "context_length": 8192, "echo_load_config": True},
        {"model": NOMIC},
    ]
    assert len(lms.find("/api/v1/models/unload")) == 2
    assert [lms.method_of(r) for r in lms.records] == ["POST", "POST", "GET", "POST", "POST"]


async def test_lms_v1_models_match_the_documented_example(http: aiohttp.ClientSession) -> None:
    embedding_id = "text-embedding-nomic-embed-text-v1.5-embedding"
    fake = FakeLMStudio(
        [
            LMStudioModel(
                "gemma-3-270m-it-qat",
                arch="gemma3",
                quantization="Q4_0",
                size_bytes=241410208,
                params_string="270M",
                display_name="Gemma 3 270m Instruct Qat",
            ),
            LMStudioModel(
                embedding_id, publisher="gaianet", size_bytes=274290560, display_name="Nomic Embed Text v1.5"
            ),
        ],
        loaded=["gemma-3-270m-it-qat"],
    )
    with fake.running() as url:
        _, catalog = await get_json(http, f"{url}/api/v1/models")

    gemma, nomic = catalog["models"]
    assert gemma["loaded_instances"][0]["config"]["context_length"] == 4096
    gemma["loaded_instances"][0]["config"] = {"context_length": 4096}  # the example shows only this key
    assert in_order(gemma) == in_order(
        {
            "type": "llm",
            "publisher": "lmstudio-community",
            "key": "gemma-3-270m-it-qat",
            "display_name": "Gemma 3 270m Instruct Qat",
            "architecture": "gemma3",
            "quantization": {"name": "Q4_0", "bits_per_weight": 4},
            "size_bytes": 241410208,
            "params_string": "270M",
            "loaded_instances": [{"id": "gemma-3-270m-it-qat", "config": {"context_length": 4096}}],
            "max_context_length": 32768,
            "format": "gguf",
            "capabilities": {"vision": False, "trained_for_tool_use": False},
            "description": None,
        }
    )
    assert in_order(nomic) == in_order(
        {
            "type": "embedding",
            "publisher": "gaianet",
            "key": embedding_id,
            "display_name": "Nomic Embed Text v1.5",
            "quantization": {"name": "F16", "bits_per_weight": 16},
            "size_bytes": 274290560,
            "params_string": None,
            "loaded_instances": [],
            "max_context_length": 2048,
            "format": "gguf",
        }
    )


async def test_lms_unknown_endpoints_answer_200_with_an_error(
    lms: FakeLMStudio, lms_url: str, http: aiohttp.ClientSession
) -> None:
    status, health = await get_json(http, f"{lms_url}/health")
    async with asyncio.timeout(5), http.delete(f"{lms_url}/v1/models?x=1") as resp:
        wrong_method = (resp.status, await resp.json())

    assert (status, health) == (200, {"error": "Unexpected endpoint or method. (GET /health)"})
    assert wrong_method == (200, {"error": "Unexpected endpoint or method. (DELETE /v1/models?x=1)"})
    assert [(lms.method_of(r), r.path, r.status) for r in lms.records] == [
        ("GET", "/health", 200),
        ("DELETE", "/v1/models", 200),
    ]


async def test_lms_client_leaving_mid_stream_is_recorded(
    lms: FakeLMStudio, lms_url: str, http: aiohttp.ClientSession
) -> None:
    lms.load(QWEN)
    body = {"model": QWEN, "messages": HELLO, "stream": True, "fake": {"chunks": 100, "delay": 0.05}}
    async with asyncio.timeout(5), http.post(f"{lms_url}/v1/chat/completions", json=body) as resp:
        async for line in resp.content:
            if b"tok1 " in line:
                break
        resp.close()

    assert await lms.wait_for_async(lambda: lms.records[-1].disconnected, 1.0)
    assert not lms.records[-1].completed
    assert await lms.wait_for_async(lambda: lms.in_flight == 0, 1.0)


async def test_lms_client_leaving_during_a_jit_load_is_recorded_and_the_load_goes_on(
    http: aiohttp.ClientSession,
) -> None:
    fake = FakeLMStudio([QWEN], load_delay=0.3)
    with fake.running() as url:
        request = asyncio.create_task(post_json(http, f"{url}/v1/chat/completions", {"model": QWEN, "messages": HELLO}))
        assert await fake.wait_for_async(lambda: fake.loading == (QWEN,), 2.0)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request

        assert await fake.wait_for_async(lambda: fake.records[-1].disconnected, 1.0)
        assert await fake.wait_for_async(lambda: fake.loaded == (QWEN,), 2.0)


async def test_lms_runs_as_a_process() -> None:
    proc, url = await run_as_process(
        "testing.fake_lmstudio", "--models", f"{QWEN},{LLAMA}", "--no-jit", "--loaded", LLAMA
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            _, models = await get_json(session, f"{url}/v1/models")
            _, reply = await post_json(session, f"{url}/v1/chat/completions", {"model": "any", "messages": HELLO})
        assert [m["id"] for m in models["data"]] == [LLAMA]
        assert reply["model"] == LLAMA
    finally:
        await stop_process(proc)


# ====================================================================== vLLM


@pytest.fixture
def vllm() -> FakeVLLM:
    return FakeVLLM()


@pytest.fixture
def vllm_url(vllm: FakeVLLM) -> Iterator[str]:
    with vllm.running() as url:
        yield url


@pytest.fixture
def vllm_client(vllm_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{vllm_url}/v1", api_key="unused", max_retries=0, timeout=5) as sdk:
        yield sdk


async def test_vllm_health_is_an_empty_200_and_503_when_dead(
    vllm: FakeVLLM, vllm_url: str, http: aiohttp.ClientSession
) -> None:
    async with asyncio.timeout(5):
        async with http.get(f"{vllm_url}/health") as resp:
            alive = (resp.status, await resp.read())
        vllm.dead = True
        async with http.get(f"{vllm_url}/health") as resp:
            dead = (resp.status, await resp.read())
    status, error = await post_json(http, f"{vllm_url}/v1/chat/completions", {"model": "tiny", "messages": HELLO})

    assert alive == (200, b"")
    assert dead == (503, b"")
    assert status == 500
    assert error["error"]["type"] == "InternalServerError"
    assert error["error"]["code"] == 500


async def test_vllm_models_card_matches_the_measured_one(http: aiohttp.ClientSession) -> None:
    measured = {
        "object": "list",
        "data": [
            {
                "id": "tiny",
                "object": "model",
                "created": 1795315493,
                "owned_by": "vllm",
                "root": "models/tiny-hf",
                "parent": None,
                "max_model_len": 512,
                "permission": [
                    {
                        "id": "modelperm-952fa53926cb9e4e",
                        "object": "model_permission",
                        "created": 1795315493,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
        ],
    }
    fake = FakeVLLM(root="models/tiny-hf")
    with fake.running() as url:
        _, models = await get_json(http, f"{url}/v1/models")

    card = models["data"][0]
    permission = card["permission"][0]
    assert abs(card["created"] - time.time()) < 60
    assert permission["created"] == card["created"]
    assert re.fullmatch(r"modelperm-[0-9a-f]{16}", permission["id"])
    card["created"] = permission["created"] = 1795315493
    permission["id"] = "modelperm-952fa53926cb9e4e"
    assert in_order(models) == in_order(measured)


async def test_vllm_version_and_load(vllm: FakeVLLM, vllm_url: str, http: aiohttp.ClientSession) -> None:
    assert await get_json(http, f"{vllm_url}/version") == (200, {"version": "0.32.0"})
    assert await get_json(http, f"{vllm_url}/load") == (200, {"server_load": 0})
    assert FakeVLLM(version="0.11.0").system_fingerprint.startswith("vllm-0.11.0-")


async def test_vllm_chat_body_has_vllms_fields(vllm: FakeVLLM, vllm_url: str, http: aiohttp.ClientSession) -> None:
    status, reply = await post_json(
        http, f"{vllm_url}/v1/chat/completions", {"model": "tiny", "messages": HELLO, "fake": {"chunks": 3}}
    )

    assert status == 200
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{16}", reply["id"])
    assert re.fullmatch(r"vllm-0\.32\.0-[0-9a-f]{8}", reply["system_fingerprint"])
    assert list(reply) == [
        "id",
        "object",
        "created",
        "model",
        "choices",
        "service_tier",
        "system_fingerprint",
        "usage",
        "prompt_logprobs",
        "prompt_token_ids",
        "kv_transfer_params",
    ]
    assert in_order(reply["choices"]) == in_order(
        [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "tok0 tok1 tok2 ",
                    "refusal": None,
                    "annotations": None,
                    "audio": None,
                    "function_call": None,
                    "reasoning": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": None,
                "token_ids": None,
            }
        ]
    )
    # A natural stop counts the EOS token.
    assert in_order(reply["usage"]) == in_order(
        {"prompt_tokens": 4, "total_tokens": 8, "completion_tokens": 4, "prompt_tokens_details": None}
    )


async def test_vllm_stream_framing_on_the_wire(vllm: FakeVLLM, vllm_url: str, http: aiohttp.ClientSession) -> None:
    url = f"{vllm_url}/v1/chat/completions"
    natural = sse_events(
        await post_raw(http, url, {"model": "tiny", "messages": HELLO, "stream": True, "fake": {"chunks": 2}})
    )
    cut = sse_events(await post_raw(http, url, {"messages": HELLO, "stream": True, "max_tokens": 2}))
    fingerprint = vllm.system_fingerprint

    assert natural[-1] == "[DONE]"
    assert [e["choices"] for e in natural[:-1]] == [
        [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}],
        [{"index": 0, "delta": {"content": "tok0 "}, "logprobs": None, "finish_reason": None, "token_ids": None}],
        [{"index": 0, "delta": {"content": "tok1 "}, "logprobs": None, "finish_reason": None, "token_ids": None}],
        [
            {
                "index": 0,
                "delta": {"content": ""},
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": None,
                "token_ids": None,
            }
        ],
    ]
    assert list(natural[0]) == ["id", "object", "created", "model", "choices", "prompt_token_ids"]
    assert list(natural[1]) == ["id", "object", "created", "model", "choices"]
    assert natural[-2]["system_fingerprint"] == fingerprint, "only the terminal chunk carries it"
    assert {(e["id"], e["object"], e["created"], e["model"]) for e in natural[:-1]} == {
        (natural[0]["id"], "chat.completion.chunk", natural[0]["created"], "tiny")
    }
    # With max_tokens reached, the finish reason rides on the last token's chunk.
    assert [e["choices"][0]["delta"] for e in cut[:-1]] == [
        {"role": "assistant", "content": ""},
        {"content": "tok0 "},
        {"content": "tok1 "},
    ]
    assert cut[-2]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in e for e in natural[:-1] + cut[:-1])


async def test_vllm_stream_usage_only_with_include_usage(vllm: FakeVLLM, vllm_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{vllm_url}/v1", api_key="unused", max_retries=0, timeout=5) as sdk:
        async with asyncio.timeout(5):
            stream = await sdk.chat.completions.create(
                model="tiny", messages=HELLO, stream=True, stream_options={"include_usage": True}
            )
            chunks = [chunk async for chunk in stream]

    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(
        f"tok{i} " for i in range(6)
    )
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-2].system_fingerprint is None, "the usage chunk carries it instead"
    assert chunks[-1].choices == []
    assert chunks[-1].system_fingerprint == vllm.system_fingerprint
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 4,
        "completion_tokens": 7,
        "total_tokens": 11,
    }


def test_vllm_completions_and_embeddings_through_the_sdk(vllm: FakeVLLM, vllm_client: openai.OpenAI) -> None:
    whole = vllm_client.completions.create(model="tiny", prompt="once upon a time", max_tokens=3)
    parts = list(
        vllm_client.completions.create(
            model="tiny", prompt="once upon", stream=True, extra_body={"fake": {"chunks": 2}}
        )
    )
    vectors = vllm_client.embeddings.create(model="tiny", input=["a b", "c"])

    assert re.fullmatch(r"cmpl-[0-9a-f]{16}", whole.id)
    assert whole.choices[0].text == "tok0 tok1 tok2 "
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (4, 3)
    assert [p.choices[0].text for p in parts] == ["tok0 ", "tok1 ", ""]
    assert parts[-1].choices[0].finish_reason == "stop"
    assert re.fullmatch(r"embd-[0-9a-f]{16}", vectors.id)  # type: ignore[attr-defined]
    assert [len(e.embedding) for e in vectors.data] == [8, 8]
    assert vectors.usage.prompt_tokens == 3


async def test_vllm_return_token_ids(vllm: FakeVLLM, vllm_url: str, http: aiohttp.ClientSession) -> None:
    body = {"model": "tiny", "messages": HELLO, "return_token_ids": True, "fake": {"chunks": 2}}
    _, reply = await post_json(http, f"{vllm_url}/v1/chat/completions", body)
    events = sse_events(await post_raw(http, f"{vllm_url}/v1/chat/completions", {**body, "stream": True}))

    assert reply["choices"][0]["token_ids"] == [1000, 1001, 2]
    assert reply["prompt_token_ids"] == [1, 2, 3, 4]
    assert events[0]["prompt_token_ids"] == [1, 2, 3, 4]
    assert [e["choices"][0]["token_ids"] for e in events[1:-1]] == [[1000], [1001], [2]]


def test_vllm_unknown_model_is_its_404(vllm_client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        vllm_client.chat.completions.create(model="nope", messages=HELLO, stream=True)

    assert caught.value.response.json() == {
        "error": {
            "message": "The model `nope` does not exist. Valid aliases: tiny.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
    }


async def test_vllm_rejects_requests_beyond_the_context_window(vllm_url: str, http: aiohttp.ClientSession) -> None:
    url = f"{vllm_url}/v1/chat/completions"
    status, too_many = await post_json(http, url, {"model": "tiny", "messages": HELLO, "max_tokens": 600})
    long_prompt: list[dict[str, str]] = [{"role": "user", "content": "word " * 600}]
    long_status, too_long = await post_json(http, url, {"model": "tiny", "messages": long_prompt})
    bad_status, bad = await post_json(
        http, url, {"model": "tiny", "messages": HELLO, "stream_options": {"include_usage": True}}
    )

    assert status == 400
    assert too_many["error"] == {
        "message": "'max_tokens' or 'max_completion_tokens' is too large: 600. This model's maximum context length is "
        "512 tokens and your request has 4 input tokens (600 > 512 - 4). (parameter=max_tokens, value=600)",
        "type": "BadRequestError",
        "param": "max_tokens",
        "code": 400,
    }
    assert long_status == 400
    assert too_long["error"]["message"].startswith("This model's maximum context length is 512 tokens.")
    assert (bad_status, bad["error"]["type"]) == (400, "BadRequestError")


async def test_vllm_a_short_window_cuts_generation(http: aiohttp.ClientSession) -> None:
    fake = FakeVLLM(max_model_len=10, chunks=20)
    with fake.running() as url:
        _, reply = await post_json(http, f"{url}/v1/chat/completions", {"messages": HELLO})

    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 6


async def test_vllm_scripted_errors_use_vllms_envelope(vllm_url: str, http: aiohttp.ClientSession) -> None:
    body = {"model": "tiny", "messages": HELLO, "fake": {"status": 503}}
    status, error = await post_json(http, f"{vllm_url}/v1/chat/completions", body)
    status429, error429 = await post_json(http, f"{vllm_url}/v1/completions", {"prompt": "x", "fake": {"status": 429}})

    assert (status, error["error"]["type"], error["error"]["code"]) == (503, "ServiceUnavailableError", 503)
    assert (status429, error429["error"]["type"]) == (429, "TooManyRequestsError")


async def test_vllm_unknown_routes_are_fastapi_404s(vllm: FakeVLLM, vllm_url: str, http: aiohttp.ClientSession) -> None:
    assert await get_json(http, f"{vllm_url}/api/v0/models") == (404, {"detail": "Not Found"})
    assert await get_json(http, f"{vllm_url}/v1/chat/completions") == (405, {"detail": "Method Not Allowed"})
    assert [(vllm.method_of(r), r.path) for r in vllm.records] == [
        ("GET", "/api/v0/models"),
        ("GET", "/v1/chat/completions"),
    ]


async def test_vllm_metrics_are_prometheus_text_with_live_values(
    vllm: FakeVLLM, vllm_url: str, http: aiohttp.ClientSession
) -> None:
    async def scrape() -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
        async with asyncio.timeout(5), http.get(f"{vllm_url}/metrics") as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=")
            text = await resp.text()
        return text, metric_samples(text)

    vllm.waiting = 3
    vllm.kv_cache_usage = 0.25
    text, before = await scrape()
    for line in (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        "# TYPE vllm:kv_cache_usage_perc gauge",
        "# TYPE vllm:prompt_tokens_total counter",
        "# TYPE vllm:time_to_first_token_seconds histogram",
        'vllm:num_requests_running{engine="0",model_name="tiny"} 0.0',
        'vllm:num_requests_waiting{engine="0",model_name="tiny"} 3.0',
        'vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.25',
        'vllm:gpu_cache_usage_perc{engine="0",model_name="tiny"} 0.25',
    ):
        assert line in text.splitlines(), line
    assert (
        before[("vllm:e2e_request_latency_seconds_bucket", (("engine", "0"), ("le", "+Inf"), ("model_name", "tiny")))]
        == 0
    )

    # A slow stream runs: the gauge and /load see it, then it ends.
    body = {"model": "tiny", "messages": [{"role": "user", "content": "one two three"}], "stream": True}
    body["fake"] = {"chunks": 4, "delay": 0.1}
    async with asyncio.timeout(5), http.post(f"{vllm_url}/v1/chat/completions", json=body) as resp:
        await resp.content.readline()
        _, during = await scrape()
        assert await get_json(http, f"{vllm_url}/load") == (200, {"server_load": 1})
        await resp.read()
    assert await vllm.wait_for_async(lambda: vllm.server_load == 0, 1.0)
    _, after = await scrape()

    assert during[("vllm:num_requests_running", LABELS)] == 1
    assert after[("vllm:num_requests_running", LABELS)] == 0
    assert after[("vllm:prompt_tokens_total", LABELS)] - before[("vllm:prompt_tokens_total", LABELS)] == 3
    assert after[("vllm:generation_tokens_total", LABELS)] - before[("vllm:generation_tokens_total", LABELS)] == 5
    success = ("vllm:request_success_total", (*LABELS[:1], ("finished_reason", "stop"), *LABELS[1:]))
    assert after[success] - before[success] == 1
    assert after[("vllm:time_to_first_token_seconds_count", LABELS)] == 1
    assert after[("vllm:inter_token_latency_seconds_count", LABELS)] == 4
    assert after[("vllm:inter_token_latency_seconds_sum", LABELS)] >= 0.25
    assert after[("vllm:e2e_request_latency_seconds_count", LABELS)] == 1


async def test_vllm_client_leaving_is_recorded_and_counted_as_an_abort(
    vllm: FakeVLLM, vllm_url: str, http: aiohttp.ClientSession
) -> None:
    body = {"model": "tiny", "messages": HELLO, "stream": True, "fake": {"chunks": 100, "delay": 0.05}}
    async with asyncio.timeout(5), http.post(f"{vllm_url}/v1/chat/completions", json=body) as resp:
        async for line in resp.content:
            if b"tok1 " in line:
                break
        assert vllm.server_load == 1
        resp.close()

    assert await vllm.wait_for_async(lambda: vllm.records[-1].disconnected, 1.0)
    assert await vllm.wait_for_async(lambda: vllm.server_load == 0, 1.0)
    record = vllm.records[-1]
    assert (record.path, record.completed, vllm.method_of(record)) == ("/v1/chat/completions", False, "POST")
    abort = ("vllm:request_success_total", (*LABELS[:1], ("finished_reason", "abort"), *LABELS[1:]))
    assert metric_samples(vllm.metrics_text())[abort] == 1


def test_vllm_hang_until_the_client_gives_up(vllm: FakeVLLM, vllm_client: openai.OpenAI) -> None:
    with pytest.raises(openai.APITimeoutError):
        vllm_client.with_options(timeout=0.2).chat.completions.create(
            model="tiny", messages=HELLO, extra_body={"fake": {"hang": True}}
        )

    assert vllm.wait_for(lambda: vllm.records[-1].disconnected, 1.0)
    assert vllm.wait_for(lambda: vllm.server_load == 0, 1.0)


async def test_vllm_runs_as_a_process() -> None:
    proc, url = await run_as_process("testing.fake_vllm", "--model", "m", "--chunks", "3")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async with asyncio.timeout(5), session.get(f"{url}/health") as resp:
                assert (resp.status, await resp.read()) == (200, b"")
            body = {"model": "m", "messages": HELLO, "stream": True}
            events = sse_events(await post_raw(session, f"{url}/v1/chat/completions", body))
        assert len(events) == 1 + 3 + 1 + 1
    finally:
        await stop_process(proc)
