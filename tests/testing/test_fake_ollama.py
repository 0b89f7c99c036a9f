"""The fake Ollama server itself, driven by raw aiohttp and the official openai SDK (no Potluck involved)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec
import openai
import pytest
from aiohttp import web

from testing.fake_ollama import (
    BUSY_MESSAGE,
    KEEP_ALIVE_FOREVER_NS,
    RUNNER_ERROR,
    FakeOllama,
    normalize_name,
    parse_go_duration,
    parse_keep_alive,
    rfc3339,
)
from testing.helpers import HELLO, run_as_process, sse_events, stop_process

NATIVE_HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello to me"}]
RFC3339_NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")
METRICS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)
DETAILS_KEYS = {"parent_model", "format", "family", "families", "parameter_size", "quantization_level"}


def parse_time(text: str) -> float:
    """An RFC 3339 timestamp with up to nanoseconds, as Unix seconds."""
    match = RFC3339_NANO.match(text)
    assert match, text
    fraction = match[1] or ""
    whole = datetime.fromisoformat(text[:19] + (match[2] if match[2] != "Z" else "+00:00"))
    return whole.timestamp() + (float(fraction) if fraction else 0.0)


def ndjson(raw: bytes) -> list[dict[str, Any]]:
    """The objects of an NDJSON body; every line, the last one included, ends with a newline."""
    assert raw.endswith(b"\n"), raw[-80:]
    lines = raw.split(b"\n")[:-1]
    assert all(lines), "no blank lines"
    return [msgspec.json.decode(line) for line in lines]


@pytest.fixture
def fake() -> FakeOllama:
    return FakeOllama(["llama3.2", "qwen2.5:7b", "nomic-embed-text"])


@pytest.fixture
def url(fake: FakeOllama) -> Iterator[str]:
    with fake.running() as base:
        yield base


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
def client(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="ollama", max_retries=0, timeout=10) as sdk:
        yield sdk


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, str, bytes]:
    async with http.post(url, json=body) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200
        return await resp.json()


async def ps_names(http: aiohttp.ClientSession, url: str) -> list[str]:
    return [m["name"] for m in (await get_json(http, f"{url}/api/ps"))["models"]]


# ---------------------------------------------------------------------- helpers of the module


def test_names_default_to_the_latest_tag() -> None:
    assert normalize_name("llama3.2") == "llama3.2:latest"
    assert normalize_name("qwen2.5:7b") == "qwen2.5:7b"
    assert normalize_name("registry.ollama.ai/library/llama3.2") == "llama3.2:latest"
    assert normalize_name("library/llama3.2:1b") == "llama3.2:1b"
    assert normalize_name("someone/model") == "someone/model:latest"
    assert normalize_name("localhost:5000/ns/model") == "localhost:5000/ns/model:latest"


def test_durations_parse_like_go() -> None:
    assert parse_go_duration("5m") == 300 * 10**9
    assert parse_go_duration("1h30m") == 5400 * 10**9
    assert parse_go_duration("1.5s") == 1_500_000_000
    assert parse_go_duration("250ms") == 250_000_000
    assert parse_go_duration("0") == 0
    with pytest.raises(ValueError, match="missing unit"):
        parse_go_duration("10")
    with pytest.raises(ValueError, match="invalid duration"):
        parse_go_duration("soon")
    assert parse_keep_alive(None) is None
    assert parse_keep_alive(0) == 0
    assert parse_keep_alive(2.5) == 2_500_000_000
    assert parse_keep_alive("10m") == 600 * 10**9
    assert parse_keep_alive(-1) == KEEP_ALIVE_FOREVER_NS
    assert parse_keep_alive("-1s") == KEEP_ALIVE_FOREVER_NS


def test_timestamps_are_rfc3339_with_trimmed_nanoseconds() -> None:
    assert rfc3339(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert rfc3339(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"
    assert rfc3339(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    local = rfc3339(1_700_000_000_500_000_000, utc=False)
    assert RFC3339_NANO.match(local)
    assert parse_time(local) == pytest.approx(1_700_000_000.5)


def test_constructor_rejects_loading_what_is_not_pulled() -> None:
    with pytest.raises(KeyError):
        FakeOllama(["a"], loaded=["b"])
    with pytest.raises(ValueError, match="num_parallel"):
        FakeOllama(num_parallel=0)


# ---------------------------------------------------------------------- utility and model routes


async def test_root_and_version(http: aiohttp.ClientSession, url: str, fake: FakeOllama) -> None:
    async with http.get(f"{url}/") as resp:
        assert (resp.status, await resp.text()) == (200, "Ollama is running")
        assert resp.headers["Content-Type"].startswith("text/plain")
    async with http.head(f"{url}/") as resp:
        assert resp.status == 200
    assert await get_json(http, f"{url}/api/version") == {"version": "0.12.3"}
    fake.version = "0.13.0"
    assert await get_json(http, f"{url}/api/version") == {"version": "0.13.0"}
    assert [(r.method, r.path) for r in fake.records[:2]] == [("GET", "/"), ("HEAD", "/")]


async def test_tags_lists_every_pulled_model(http: aiohttp.ClientSession, url: str) -> None:
    models = (await get_json(http, f"{url}/api/tags"))["models"]

    assert [m["name"] for m in models] == ["llama3.2:latest", "qwen2.5:7b", "nomic-embed-text:latest"]
    for entry in models:
        assert set(entry) == {"name", "model", "modified_at", "size", "digest", "details"}
        assert entry["model"] == entry["name"]
        assert re.fullmatch(r"[0-9a-f]{64}", entry["digest"])
        assert entry["size"] == 2_000_000_000
        assert abs(parse_time(entry["modified_at"]) - time.time()) < 60
        assert set(entry["details"]) == DETAILS_KEYS
        assert entry["details"]["format"] == "gguf"
        assert entry["details"]["families"] == [entry["details"]["family"]]
    assert models[1]["details"]["parameter_size"] == "7B"
    assert models[2]["details"]["family"] == "nomic-bert"


async def test_ps_shows_loaded_models_longest_expiry_first(
    http: aiohttp.ClientSession, url: str, fake: FakeOllama
) -> None:
    assert await get_json(http, f"{url}/api/ps") == {"models": []}
    fake.load("llama3.2")
    fake.load("qwen2.5:7b", keep_alive="1h", context_length=8192)

    models = (await get_json(http, f"{url}/api/ps"))["models"]

    assert [m["name"] for m in models] == ["qwen2.5:7b", "llama3.2:latest"]
    assert list(models[1]) == [
        "name",
        "model",
        "size",
        "digest",
        "details",
        "expires_at",
        "size_vram",
        "context_length",
    ]
    assert models[1]["size_vram"] == models[1]["size"] == 2_000_000_000
    assert (models[0]["context_length"], models[1]["context_length"]) == (8192, 4096)
    assert parse_time(models[1]["expires_at"]) - time.time() == pytest.approx(300, abs=5)
    assert parse_time(models[0]["expires_at"]) - time.time() == pytest.approx(3600, abs=5)
    assert fake.loaded == ("qwen2.5:7b", "llama3.2:latest")


async def test_show_describes_a_model(http: aiohttp.ClientSession, url: str) -> None:
    status, content_type, raw = await post(http, f"{url}/api/show", {"model": "llama3.2"})
    show = msgspec.json.decode(raw)

    assert (status, content_type) == (200, "application/json; charset=utf-8")
    assert {"license", "modelfile", "parameters", "template", "details", "model_info", "capabilities"} <= set(show)
    assert show["capabilities"] == ["completion"]
    assert show["model_info"]["general.architecture"] == "llama"
    assert show["model_info"]["llama.context_length"] == 4096
    assert show["model_info"]["tokenizer.ggml.tokens"] == [], "token arrays are empty unless verbose"
    assert set(show["details"]) == DETAILS_KEYS
    assert RFC3339_NANO.match(show["modified_at"])
    assert "# FROM llama3.2:latest" in show["modelfile"]

    _, _, raw = await post(http, f"{url}/api/show", {"model": "nomic-embed-text", "verbose": True})
    embed = msgspec.json.decode(raw)
    assert embed["capabilities"] == ["embedding"]
    assert embed["model_info"]["general.architecture"] == "nomic-bert"
    assert embed["model_info"]["tokenizer.ggml.tokens"]

    assert await post(http, f"{url}/api/show", {"model": "nope"}) == (
        404,
        "application/json; charset=utf-8",
        b'{"error":"model \'nope\' not found"}',
    )
    status, _, raw = await post(http, f"{url}/api/show", {})
    assert (status, raw) == (400, b'{"error":"model is required"}')
    for path in ("/api/show", "/api/pull", "/api/delete"):
        async with http.post(f"{url}{path}") as resp:
            assert (resp.status, await resp.json()) == (400, {"error": "missing request body"})


async def test_unknown_routes_and_methods_answer_like_gin(
    http: aiohttp.ClientSession, url: str, fake: FakeOllama
) -> None:
    async with http.get(f"{url}/api/nothing") as resp:
        assert (resp.status, await resp.text()) == (404, "404 page not found")
    async with http.post(f"{url}/api/tags") as resp:
        assert (resp.status, await resp.text()) == (405, "405 method not allowed")
    assert [(r.method, r.path, r.status) for r in fake.records] == [
        ("GET", "/api/nothing", 404),
        ("POST", "/api/tags", 405),
    ]


# ---------------------------------------------------------------------- native generation


async def test_chat_streams_ndjson_then_a_done_line(http: aiohttp.ClientSession, url: str, fake: FakeOllama) -> None:
    body = {"model": "llama3.2", "messages": NATIVE_HELLO}
    status, content_type, raw = await post(http, f"{url}/api/chat", body)
    lines = ndjson(raw)

    assert (status, content_type) == (200, "application/x-ndjson")
    assert len(lines) == 6 + 1
    for index, line in enumerate(lines[:-1]):
        assert line == {
            "model": "llama3.2",
            "created_at": line["created_at"],
            "message": {"role": "assistant", "content": f"tok{index} "},
            "done": False,
        }
        assert RFC3339_NANO.match(line["created_at"])
    done = lines[-1]
    assert done["message"] == {"role": "assistant", "content": ""}
    assert (done["done"], done["done_reason"]) == (True, "stop")
    assert "context" not in done
    assert list(done)[-6:] == list(METRICS)
    assert all(isinstance(done[k], int) and done[k] > 0 for k in METRICS)
    assert (done["prompt_eval_count"], done["eval_count"]) == (6, 6)
    assert done["total_duration"] >= done["load_duration"] + done["prompt_eval_duration"] + done["eval_duration"]
    record = fake.records[-1]
    assert (record.method, record.path, record.model, record.completed, record.disconnected) == (
        "POST",
        "/api/chat",
        "llama3.2:latest",
        True,
        False,
    )
    assert record.completed_at is not None


async def test_generate_without_streaming_is_one_object(http: aiohttp.ClientSession, url: str) -> None:
    body = {"model": "llama3.2:latest", "prompt": "why is the sky blue", "system": "be brief", "stream": False}
    status, content_type, raw = await post(http, f"{url}/api/generate", body)
    reply = msgspec.json.decode(raw)

    assert (status, content_type) == (200, "application/json; charset=utf-8")
    assert not raw.endswith(b"\n")
    assert reply["model"] == "llama3.2:latest"
    assert reply["response"] == "tok0 tok1 tok2 tok3 tok4 tok5 "
    assert (reply["done"], reply["done_reason"]) == (True, "stop")
    assert (reply["prompt_eval_count"], reply["eval_count"]) == (7, 6)
    assert len(reply["context"]) == 13


async def test_generate_streams_response_pieces(http: aiohttp.ClientSession, url: str) -> None:
    _, _, raw = await post(http, f"{url}/api/generate", {"model": "qwen2.5:7b", "prompt": "hi"})
    lines = ndjson(raw)

    assert [line["response"] for line in lines] == [*(f"tok{i} " for i in range(6)), ""]
    assert [line["done"] for line in lines] == [False] * 6 + [True]
    assert "message" not in lines[0]
    assert lines[-1]["context"]


@pytest.mark.parametrize(("num_predict", "tokens", "reason"), [(3, 3, "length"), (6, 6, "stop"), (50, 6, "stop")])
async def test_num_predict_caps_tokens(
    http: aiohttp.ClientSession, url: str, fake: FakeOllama, num_predict: int, tokens: int, reason: str
) -> None:
    options = {"num_predict": num_predict, "temperature": 0.1, "num_ctx": 4096}
    body = {"model": "llama3.2", "messages": NATIVE_HELLO, "options": options}
    lines = ndjson((await post(http, f"{url}/api/chat", body))[2])

    assert len(lines) == tokens + 1
    assert (lines[-1]["eval_count"], lines[-1]["done_reason"]) == (tokens, reason)
    assert fake.records[-1].options == options


async def test_zero_metrics_are_left_out(http: aiohttp.ClientSession, url: str, fake: FakeOllama) -> None:
    fake.chunks = 0
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "  "}], "stream": False}
    reply = msgspec.json.decode((await post(http, f"{url}/api/chat", body))[2])

    assert reply["message"] == {"role": "assistant", "content": ""}
    assert set(METRICS) & set(reply) == {"total_duration", "load_duration"}


async def test_a_model_named_without_its_tag_is_found(http: aiohttp.ClientSession, url: str, fake: FakeOllama) -> None:
    reply = msgspec.json.decode(
        (await post(http, f"{url}/api/generate", {"model": "LLAMA3.2", "prompt": "x", "stream": False}))[2]
    )

    assert reply["model"] == "LLAMA3.2", "Ollama echoes the name as the client wrote it"
    assert fake.records[-1].model == "llama3.2:latest"
    assert await ps_names(http, url) == ["llama3.2:latest"]


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/api/embed", "/api/embeddings"])
async def test_request_errors_are_ollama_shaped(http: aiohttp.ClientSession, url: str, path: str) -> None:
    assert await post(http, f"{url}{path}", {"model": "nope", "prompt": "x", "messages": HELLO}) == (
        404,
        "application/json; charset=utf-8",
        b'{"error":"model \'nope\' not found"}',
    )
    status, _, raw = await post(http, f"{url}{path}", {"prompt": "x"})
    assert (status, raw) == (400, b'{"error":"model is required"}')
    async with http.post(f"{url}{path}") as resp:
        assert (resp.status, await resp.json()) == (400, {"error": "missing request body"})
    status, _, raw = await post(http, f"{url}{path}", {"model": "llama3.2", "keep_alive": "10"})
    assert (status, msgspec.json.decode(raw)) == (400, {"error": 'time: missing unit in duration "10"'})


async def test_an_embedding_model_does_not_chat(http: aiohttp.ClientSession, url: str) -> None:
    status, _, raw = await post(http, f"{url}/api/chat", {"model": "nomic-embed-text", "messages": NATIVE_HELLO})

    assert (status, msgspec.json.decode(raw)) == (400, {"error": '"nomic-embed-text" does not support chat'})


# ---------------------------------------------------------------------- loading, keep_alive, queueing


async def test_cold_start_waits_load_delay_then_the_model_is_in_ps(
    http: aiohttp.ClientSession, url: str, fake: FakeOllama
) -> None:
    fake.load_delay = 0.3
    body = {"model": "llama3.2", "messages": NATIVE_HELLO, "stream": False}

    started = time.monotonic()
    cold = msgspec.json.decode((await post(http, f"{url}/api/chat", body))[2])
    cold_s = time.monotonic() - started
    assert await ps_names(http, url) == ["llama3.2:latest"]
    started = time.monotonic()
    warm = msgspec.json.decode((await post(http, f"{url}/api/chat", body))[2])
    warm_s = time.monotonic() - started

    assert cold_s >= 0.3
    assert warm_s < 0.25
    assert cold["load_duration"] >= 300_000_000
    assert warm["load_duration"] < 100_000_000
    assert [r.cold_load for r in fake.records if r.path == "/api/chat"] == [True, False]


async def test_the_model_appears_in_ps_only_once_loaded(
    http: aiohttp.ClientSession, url: str, fake: FakeOllama
) -> None:
    fake.load_delay = 0.4
    request = asyncio.create_task(post(http, f"{url}/api/generate", {"model": "llama3.2", "prompt": "x"}))
    assert await fake.wait_for_async(lambda: fake.in_flight == 1, 2.0)

    assert await ps_names(http, url) == []
    assert fake.loaded == ()
    assert (await request)[0] == 200
    assert await ps_names(http, url) == ["llama3.2:latest"]


async def test_concurrent_cold_requests_share_one_load(http: aiohttp.ClientSession, url: str, fake: FakeOllama) -> None:
    fake.load_delay, fake.num_parallel = 0.3, 2
    body = {"model": "llama3.2", "prompt": "x", "stream": False}

    started = time.monotonic()
    results = await asyncio.gather(*(post(http, f"{url}/api/generate", body) for _ in range(2)))

    assert [status for status, _, _ in results] == [200, 200]
    assert time.monotonic() - started < 0.55
    assert sorted(r.cold_load for r in fake.records) == [False, True]


async def test_max_loaded_evicts_the_least_recently_used_idle_model(http: aiohttp.ClientSession) -> None:
    fake = FakeOllama(["a", "b", "c"], loaded=["a", "b"], max_loaded=2, load_delay=0.1)
    with fake.running() as url:
        assert (await post(http, f"{url}/api/generate", {"model": "a", "prompt": "x"}))[0] == 200
        assert await ps_names(http, url) == ["a:latest", "b:latest"]

        started = time.monotonic()
        assert (await post(http, f"{url}/api/generate", {"model": "c", "prompt": "x"}))[0] == 200

        assert time.monotonic() - started >= 0.1
        assert await ps_names(http, url) == ["c:latest", "a:latest"], "b was used least recently"
        assert fake.evictions == ["b:latest"]
        assert [r.cold_load for r in fake.records if r.path == "/api/generate"] == [False, True]


async def test_max_loaded_makes_a_cold_load_wait_until_a_model_is_idle(
    http: aiohttp.ClientSession, url: str, fake: FakeOllama
) -> None:
    fake.max_loaded, fake.load_delay = 1, 0.1
    fake.token_delay, fake.chunks = 0.1, 4  # the first answer holds its model for about 0.3 s
    fake.load("llama3.2")
    busy = asyncio.create_task(post(http, f"{url}/api/generate", {"model": "llama3.2", "prompt": "x"}))
    assert await fake.wait_for_async(lambda: fake.in_flight == 1, 2.0)

    started = time.monotonic()
    cold = asyncio.create_task(post(http, f"{url}/api/generate", {"model": "qwen2.5:7b", "prompt": "x"}))
    assert await fake.wait_for_async(lambda: fake.waiting == 1, 2.0)  # the cold load tried to make room
    assert await ps_names(http, url) == ["llama3.2:latest"], "nothing is evicted while it is in use"
    assert (await busy)[0] == 200
    assert (await cold)[0] == 200

    assert time.monotonic() - started >= 0.2 + 0.1
    assert await ps_names(http, url) == ["qwen2.5:7b"]
    assert fake.evictions == ["llama3.2:latest"]


async def test_max_loaded_never_evicts_a_model_its_waiting_requests_have_not_taken_yet(
    http: aiohttp.ClientSession,
) -> None:
    fake = FakeOllama(["a", "b"], max_loaded=1, load_delay=0.2, token_delay=0.05, chunks=3)
    with fake.running() as url:
        first = asyncio.create_task(post(http, f"{url}/api/generate", {"model": "a", "prompt": "x"}))
        assert await fake.wait_for_async(lambda: [r.cold_load for r in fake.records] == [True], 2.0)  # a is loading
        second = asyncio.create_task(post(http, f"{url}/api/generate", {"model": "b", "prompt": "x"}))
        assert [status for status, _, _ in await asyncio.gather(first, second)] == [200, 200]

        assert fake.evictions == ["a:latest"], "b waited for a's request, not for a's load only"
        assert [r.cold_load for r in fake.records] == [True, True]


def test_load_under_max_loaded_evicts_idle_models_first() -> None:
    fake = FakeOllama(["a", "b", "c"], loaded=["a", "b", "c"], max_loaded=2)

    assert sorted(fake.loaded) == ["b:latest", "c:latest"]
    assert fake.evictions == ["a:latest"]
    with pytest.raises(ValueError, match="max_loaded"):
        FakeOllama(max_loaded=0)


async def test_keep_alive_zero_unloads_after_answering(http: aiohttp.ClientSession, url: str, fake: FakeOllama) -> None:
    fake.load("llama3.2")
    body = {"model": "llama3.2", "messages": NATIVE_HELLO, "keep_alive": 0}
    lines = ndjson((await post(http, f"{url}/api/chat", body))[2])

    assert lines[-1]["done_reason"] == "stop"
    assert await ps_names(http, url) == []
    assert fake.loaded == ()


async def test_empty_prompt_loads_and_with_keep_alive_zero_unloads(
    http: aiohttp.ClientSession, url: str, fake: FakeOllama
) -> None:
    status, content_type, raw = await post(http, f"{url}/api/generate", {"model": "llama3.2"})
    load = msgspec.json.decode(raw)
    assert (status, content_type) == (200, "application/json; charset=utf-8"), "one object even when streaming"
    assert load == {
        "model": "llama3.2",
        "created_at": load["created_at"],
        "response": "",
        "done": True,
        "done_reason": "load",
    }
    assert await ps_names(http, url) == ["llama3.2:latest"]

    unload = msgspec.json.decode((await post(http, f"{url}/api/generate", {"model": "llama3.2", "keep_alive": 0}))[2])
    assert (unload["response"], unload["done_reason"]) == ("", "unload")
    assert await ps_names(http, url) == []

    chat_load = msgspec.json.decode((await post(http, f"{url}/api/chat", {"model": "qwen2.5:7b", "messages": []}))[2])
    assert (chat_load["message"], chat_load["done_reason"]) == ({"role": "assistant", "content": ""}, "load")
    assert await ps_names(http, url) == ["qwen2.5:7b"]


async def test_keep_alive_sets_expires_at_and_short_ones_expire(
    http: aiohttp.ClientSession, url: str, fake: FakeOllama
) -> None:
    await post(http, f"{url}/api/generate", {"model": "llama3.2", "keep_alive": "10m"})
    await post(http, f"{url}/api/generate", {"model": "qwen2.5:7b", "keep_alive": -1})
    await post(http, f"{url}/api/embed", {"model": "nomic-embed-text", "keep_alive": 0.2})
    models = (await get_json(http, f"{url}/api/ps"))["models"]

    assert [m["name"] for m in models] == ["qwen2.5:7b", "llama3.2:latest", "nomic-embed-text:latest"]
    assert int(models[0]["expires_at"][:4]) > 2200, "keep_alive < 0 pushes it centuries ahead"
    assert parse_time(models[1]["expires_at"]) - time.time() == pytest.approx(600, abs=5)
    async with asyncio.timeout(2):  # expiry is applied when /api/ps is read: there is no event to wait on
        while await ps_names(http, url) != ["qwen2.5:7b", "llama3.2:latest"]:
            await asyncio.sleep(0.05)


async def test_a_new_num_ctx_reloads_the_model(http: aiohttp.ClientSession, url: str, fake: FakeOllama) -> None:
    fake.load("llama3.2")
    body = {"model": "llama3.2", "prompt": "x", "stream": False, "options": {"num_ctx": 16384}}
    await post(http, f"{url}/api/generate", body)

    assert fake.records[-1].cold_load
    assert [m["context_length"] for m in (await get_json(http, f"{url}/api/ps"))["models"]] == [16384]


async def test_num_parallel_serialises_requests_in_order(
    http: aiohttp.ClientSession, url: str, fake: FakeOllama
) -> None:
    fake.token_delay, fake.chunks = 0.05, 4  # each answer takes about 0.15 s
    fake.load("llama3.2")
    body = {"model": "llama3.2", "prompt": "x", "stream": False}

    started = time.monotonic()
    await asyncio.gather(*(post(http, f"{url}/api/generate", body) for _ in range(3)))
    serial = time.monotonic() - started
    fake.num_parallel = 3
    started = time.monotonic()
    await asyncio.gather(*(post(http, f"{url}/api/generate", body) for _ in range(3)))
    parallel = time.monotonic() - started

    assert serial >= 0.45
    assert parallel < serial - 0.15


async def test_a_full_queue_answers_503(http: aiohttp.ClientSession, url: str, fake: FakeOllama) -> None:
    # The first request runs 1.6 s: it is still generating when the second queues behind it and the third
    # finds the queue full (the fake announces every change of `waiting`, so the waits below see it at once).
    fake.token_delay, fake.chunks, fake.max_queue = 0.2, 8, 1
    fake.load("llama3.2")
    body = {"model": "llama3.2", "prompt": "x", "stream": False}
    first = asyncio.create_task(post(http, f"{url}/api/generate", body))
    assert await fake.wait_for_async(lambda: fake.in_flight == 1, 4.0)
    second = asyncio.create_task(post(http, f"{url}/api/generate", body))
    assert await fake.wait_for_async(lambda: fake.in_flight == 2 and fake.waiting == 1, 4.0)

    status, _, raw = await post(http, f"{url}/api/generate", body)

    assert (status, msgspec.json.decode(raw)) == (503, {"error": BUSY_MESSAGE})
    assert [(await first)[0], (await second)[0]] == [200, 200]


# ---------------------------------------------------------------------- embeddings


async def test_embed_returns_one_vector_per_input(http: aiohttp.ClientSession, url: str) -> None:
    body = {"model": "nomic-embed-text", "input": ["hello world", "bye"]}
    status, content_type, raw = await post(http, f"{url}/api/embed", body)
    reply = msgspec.json.decode(raw)

    assert (status, content_type) == (200, "application/json; charset=utf-8")
    assert list(reply) == ["model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"]
    assert reply["model"] == "nomic-embed-text"
    assert reply["prompt_eval_count"] == 3
    assert len(reply["embeddings"]) == 2
    assert reply["embeddings"][0] != reply["embeddings"][1]
    assert sum(x * x for x in reply["embeddings"][0]) == pytest.approx(1.0, abs=1e-5)

    single = msgspec.json.decode((await post(http, f"{url}/api/embed", {**body, "input": "hello world"}))[2])
    assert single["embeddings"] == reply["embeddings"][:1]
    short = msgspec.json.decode((await post(http, f"{url}/api/embed", {**body, "dimensions": 3}))[2])
    assert [len(v) for v in short["embeddings"]] == [3, 3]
    status, _, raw = await post(http, f"{url}/api/embed", {**body, "input": 3})
    assert (status, msgspec.json.decode(raw)) == (400, {"error": "invalid input type"})


async def test_legacy_embeddings(http: aiohttp.ClientSession, url: str) -> None:
    reply = msgspec.json.decode(
        (await post(http, f"{url}/api/embeddings", {"model": "nomic-embed-text", "prompt": "hello world"}))[2]
    )
    loaded_only = msgspec.json.decode((await post(http, f"{url}/api/embeddings", {"model": "nomic-embed-text"}))[2])

    assert list(reply) == ["embedding"]
    assert len(reply["embedding"]) == 8
    assert loaded_only == {"embedding": []}


# ---------------------------------------------------------------------- model management


async def test_pull_and_delete_change_the_model_list(http: aiohttp.ClientSession, url: str, fake: FakeOllama) -> None:
    status, content_type, raw = await post(http, f"{url}/api/pull", {"model": "mistral"})
    assert (status, content_type) == (200, "application/x-ndjson")
    assert ndjson(raw)[-1] == {"status": "success"}
    assert "mistral:latest" in fake.models
    assert (await get_json(http, f"{url}/api/tags"))["models"][0]["name"] == "mistral:latest", "newest first"

    status, _, raw = await post(http, f"{url}/api/pull", {"model": "gemma3:1b", "stream": False})
    assert (status, msgspec.json.decode(raw)) == (200, {"status": "success"})

    async with http.delete(f"{url}/api/delete", json={"model": "mistral"}) as resp:
        assert (resp.status, await resp.read()) == (200, b"")
    async with http.delete(f"{url}/api/delete", json={"model": "mistral"}) as resp:
        assert (resp.status, await resp.json()) == (404, {"error": "model 'mistral' not found"})
    assert (await post(http, f"{url}/api/delete", {"model": "gemma3:1b"}))[0] == 200
    assert fake.models == ("llama3.2:latest", "qwen2.5:7b", "nomic-embed-text:latest")


async def test_create_copy_push_are_recorded_and_inert(http: aiohttp.ClientSession, url: str, fake: FakeOllama) -> None:
    before = fake.models
    assert (await post(http, f"{url}/api/create", {"model": "mine", "from": "llama3.2"}))[0] == 200
    assert (await post(http, f"{url}/api/copy", {"source": "llama3.2", "destination": "copy"}))[0] == 200
    assert (await post(http, f"{url}/api/push", {"model": "llama3.2", "stream": False}))[0] == 200

    assert fake.models == before
    assert [(r.method, r.path, r.json) for r in fake.records] == [
        ("POST", "/api/create", {"model": "mine", "from": "llama3.2"}),
        ("POST", "/api/copy", {"source": "llama3.2", "destination": "copy"}),
        ("POST", "/api/push", {"model": "llama3.2", "stream": False}),
    ]


async def test_state_changes_from_the_test_show_at_once(
    http: aiohttp.ClientSession, url: str, fake: FakeOllama
) -> None:
    assert fake.pull("phi4") == "phi4:latest"
    assert fake.load("phi4") == "phi4:latest"
    assert await ps_names(http, url) == ["phi4:latest"]
    assert fake.unload("phi4")
    assert not fake.unload("phi4")
    assert await ps_names(http, url) == []
    fake.delete("phi4")
    assert "phi4:latest" not in [m["name"] for m in (await get_json(http, f"{url}/api/tags"))["models"]]
    with pytest.raises(KeyError):
        fake.load("phi4")


def test_wait_for_sees_state_changes_from_another_thread(fake: FakeOllama) -> None:
    timer = threading.Timer(0.05, fake.load, args=("llama3.2",))
    timer.start()
    try:
        assert fake.wait_for(lambda: fake.loaded == ("llama3.2:latest",), 2.0)
    finally:
        timer.join()


# ---------------------------------------------------------------------- the OpenAI-compatible layer


def test_v1_models_lists_pulled_models(client: openai.OpenAI, fake: FakeOllama) -> None:
    fake.pull("someone/custom")
    models = client.models.list().data
    tags_time = int(time.time())

    assert [m.id for m in models] == [
        "someone/custom:latest",
        "llama3.2:latest",
        "qwen2.5:7b",
        "nomic-embed-text:latest",
    ]
    assert {m.object for m in models} == {"model"}
    assert [m.owned_by for m in models] == ["someone", "library", "library", "library"]
    assert all(abs(m.created - tags_time) < 60 for m in models)
    assert client.models.retrieve("llama3.2").id == "llama3.2"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


async def test_v1_models_wire_shape(http: aiohttp.ClientSession, url: str) -> None:
    async with http.get(f"{url}/v1/models") as resp:
        raw = await resp.read()
        assert resp.headers["Content-Type"] == "application/json"
    listing = msgspec.json.decode(raw)

    assert raw.endswith(b"}\n")
    assert listing["object"] == "list"
    assert listing["data"][0] == {
        "id": "llama3.2:latest",
        "object": "model",
        "created": listing["data"][0]["created"],
        "owned_by": "library",
    }


def test_v1_chat_completion(client: openai.OpenAI, fake: FakeOllama) -> None:
    reply = client.chat.completions.create(model="llama3.2", messages=HELLO, max_tokens=4, temperature=0.2)

    assert re.fullmatch(r"chatcmpl-\d{1,3}", reply.id)
    assert int(reply.id.split("-")[1]) <= 998
    assert (reply.object, reply.model, reply.system_fingerprint) == ("chat.completion", "llama3.2", "fp_ollama")
    assert reply.choices[0].message.content == "tok0 tok1 tok2 tok3 "
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (4, 4, 8)
    assert fake.records[-1].options == {"num_predict": 4, "temperature": 0.2, "top_p": 1.0}
    assert fake.records[-1].json is not None
    assert fake.records[-1].json["max_tokens"] == 4


def test_v1_chat_stream_role_tokens_finish_then_done(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="llama3.2", messages=HELLO, stream=True))

    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.content for c in chunks] == ["", *(f"tok{i} " for i in range(6)), None]
    assert [c.choices[0].finish_reason for c in chunks] == [None] * 7 + ["stop"]
    assert len({(c.id, c.created, c.model, c.system_fingerprint) for c in chunks}) == 1
    assert all(c.usage is None for c in chunks), "usage only with stream_options.include_usage"


async def test_v1_chat_stream_wire_shape_with_usage(http: aiohttp.ClientSession, url: str) -> None:
    body = {
        "model": "llama3.2",
        "messages": HELLO,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 2,
    }
    status, content_type, raw = await post(http, f"{url}/v1/chat/completions", body)
    events = sse_events(raw)

    assert (status, content_type) == (200, "text/event-stream")
    assert events[-1] == "[DONE]"
    assert [e["choices"][0]["delta"] if e["choices"] else None for e in events[:-1]] == [
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": "tok0 "},
        {"role": "assistant", "content": "tok1 "},
        {},
        None,
    ]
    assert events[3]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "length"}
    assert events[4]["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    assert events[4]["choices"] == []


def test_v1_completions(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="qwen2.5:7b", prompt="once upon a time", max_tokens=3)
    parts = list(
        client.completions.create(
            model="qwen2.5:7b", prompt="once upon a time", stream=True, stream_options={"include_usage": True}
        )
    )

    assert re.fullmatch(r"cmpl-\d{1,3}", whole.id)
    assert (whole.object, whole.system_fingerprint) == ("text_completion", "fp_ollama")
    assert whole.choices[0].text == "tok0 tok1 tok2 "
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (4, 3)
    assert "".join(p.choices[0].text for p in parts if p.choices) == "".join(f"tok{i} " for i in range(6))
    assert [p.choices[0].finish_reason for p in parts if p.choices][-1] == "stop"
    assert parts[-1].choices == []
    assert parts[-1].usage is not None
    assert parts[-1].usage.total_tokens == 10


def test_v1_embeddings(client: openai.OpenAI, fake: FakeOllama) -> None:
    packed = client.embeddings.create(model="nomic-embed-text", input=["hello world", "bye"])  # SDK asks base64
    floats = client.embeddings.create(model="nomic-embed-text", input="hello world", encoding_format="float")

    assert [e.index for e in packed.data] == [0, 1]
    assert packed.model == "nomic-embed-text"
    assert floats.data[0].embedding == pytest.approx(packed.data[0].embedding, abs=1e-6)
    assert packed.usage.model_dump() == {"prompt_tokens": 3, "total_tokens": 3}
    assert fake.records[0].json is not None
    assert fake.records[0].json["encoding_format"] == "base64"


@pytest.mark.parametrize(
    ("body", "status", "kind", "message"),
    [
        ({"model": "nope", "messages": HELLO}, 404, "not_found_error", "model 'nope' not found"),
        ({"model": "llama3.2", "messages": []}, 400, "invalid_request_error", "[] is too short - 'messages'"),
        ({"messages": HELLO}, 400, "invalid_request_error", "model is required"),
    ],
)
async def test_v1_errors_are_openai_shaped(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], status: int, kind: str, message: str
) -> None:
    got_status, content_type, raw = await post(http, f"{url}/v1/chat/completions", body)

    assert (got_status, content_type) == (status, "application/json")
    assert msgspec.json.decode(raw) == {"error": {"message": message, "type": kind, "param": None, "code": None}}


def test_v1_errors_raise_the_sdks_classes(client: openai.OpenAI, fake: FakeOllama) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="nope", messages=HELLO)
    assert not_found.value.type == "not_found_error"
    fake.status = 503
    with pytest.raises(openai.InternalServerError) as busy:
        client.chat.completions.create(model="llama3.2", messages=HELLO, stream=True)
    assert busy.value.status_code == 503
    assert busy.value.type == "api_error"
    assert isinstance(busy.value.body, dict)
    assert busy.value.body["message"] == BUSY_MESSAGE


async def test_v1_completions_with_an_empty_prompt_only_loads(http: aiohttp.ClientSession, url: str) -> None:
    reply = msgspec.json.decode((await post(http, f"{url}/v1/completions", {"model": "llama3.2", "prompt": ""}))[2])

    assert reply["choices"] == [{"text": "", "index": 0, "finish_reason": "load"}]
    assert reply["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert await ps_names(http, url) == ["llama3.2:latest"]


# ---------------------------------------------------------------------- failure knobs


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/api/embed"])
async def test_status_knob_answers_ollamas_error_shape(
    http: aiohttp.ClientSession, url: str, fake: FakeOllama, path: str
) -> None:
    fake.status = 500
    body = {"model": "llama3.2", "messages": HELLO, "prompt": "x", "input": "x"}
    assert await post(http, f"{url}{path}", body) == (
        500,
        "application/json; charset=utf-8",
        b'{"error":"fake error 500"}',
    )
    fake.status = 503
    assert msgspec.json.decode((await post(http, f"{url}{path}", body))[2]) == {"error": BUSY_MESSAGE}
    fake.status = None
    assert (await post(http, f"{url}{path}", body))[0] == 200
    assert (await get_json(http, f"{url}/api/tags"))["models"], "GET routes ignore the knobs"


async def test_fail_after_cuts_the_ndjson_stream(http: aiohttp.ClientSession, url: str, fake: FakeOllama) -> None:
    fake.fail_after = 2
    received: list[bytes] = []
    async with http.post(f"{url}/api/chat", json={"model": "llama3.2", "messages": HELLO}) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):  # noqa: PT012 - the stream breaks while it is read
            async for line in resp.content:
                received.append(line)

    assert [msgspec.json.decode(line)["message"]["content"] for line in received] == ["tok0 ", "tok1 "]
    record = fake.records[-1]
    assert (record.aborted, record.completed, record.disconnected) == (True, False, False)


async def test_fail_after_without_streaming_answers_nothing(
    http: aiohttp.ClientSession, url: str, fake: FakeOllama
) -> None:
    fake.fail_after = 1
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, f"{url}/api/generate", {"model": "llama3.2", "prompt": "x", "stream": False})

    assert (fake.records[-1].aborted, fake.records[-1].status) == (True, None)


async def test_error_after_ends_the_stream_with_an_error_line(
    http: aiohttp.ClientSession, url: str, fake: FakeOllama
) -> None:
    fake.error_after = 3
    status, _, raw = await post(http, f"{url}/api/generate", {"model": "llama3.2", "prompt": "x"})
    lines = ndjson(raw)

    assert status == 200
    assert [line.get("response") for line in lines[:-1]] == ["tok0 ", "tok1 ", "tok2 "]
    assert lines[-1] == {"error": RUNNER_ERROR}
    assert fake.records[-1].completed

    whole = await post(http, f"{url}/api/generate", {"model": "llama3.2", "prompt": "x", "stream": False})
    assert (whole[0], msgspec.json.decode(whole[2])) == (500, {"error": RUNNER_ERROR})


async def test_error_after_on_v1_stream_ends_without_done(
    http: aiohttp.ClientSession, url: str, fake: FakeOllama
) -> None:
    fake.error_after = 1
    body = {"model": "llama3.2", "messages": HELLO, "stream": True}
    events = sse_events((await post(http, f"{url}/v1/chat/completions", body))[2])

    assert "[DONE]" not in events
    assert [e["choices"][0]["delta"].get("content") for e in events] == ["", "tok0 ", ""]
    assert all(e["choices"][0]["finish_reason"] is None for e in events)
    assert events[-1]["model"] == ""


def test_v1_fail_after_breaks_the_sdk_stream(client: openai.OpenAI, fake: FakeOllama) -> None:
    fake.fail_after = 2
    stream = client.chat.completions.create(model="llama3.2", messages=HELLO, stream=True)
    received: list[str | None] = []
    with pytest.raises(openai.APIConnectionError):  # noqa: PT012 - the stream breaks while it is read
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)

    assert received == ["", "tok0 ", "tok1 "]
    assert fake.records[-1].aborted


async def test_hang_until_the_client_gives_up_is_a_disconnect(url: str, fake: FakeOllama) -> None:
    fake.hang = True
    async with aiohttp.ClientSession() as session:
        asked = asyncio.create_task(post(session, f"{url}/api/chat", {"model": "llama3.2", "messages": HELLO}))
        # Give up only once the fake holds the request (a client timer could fire before it even arrived).
        assert await fake.wait_for_async(lambda: fake.in_flight == 1, 5.0)
        record = fake.records[-1]
        assert not record.disconnected
        gave_up = time.monotonic()
        asked.cancel()  # aiohttp closes a connection whose response was not read
        with pytest.raises(asyncio.CancelledError):
            await asked

    assert await fake.wait_for_async(lambda: record.disconnected, 5.0)
    assert record.disconnected_at is not None
    assert record.disconnected_at >= gave_up
    assert not record.completed
    assert await fake.wait_for_async(lambda: fake.in_flight == 0, 5.0)


async def test_client_leaving_mid_stream_is_recorded_and_frees_the_slot(
    http: aiohttp.ClientSession, url: str, fake: FakeOllama
) -> None:
    fake.token_delay, fake.chunks = 0.05, 100
    async with http.post(f"{url}/api/chat", json={"model": "llama3.2", "messages": HELLO}) as resp:
        async for line in resp.content:
            if b"tok1 " in line:
                break
        resp.close()

    assert await fake.wait_for_async(lambda: fake.records[-1].disconnected, 1.0)
    assert not fake.records[-1].completed
    assert await fake.wait_for_async(lambda: fake.in_flight == 0, 1.0)
    fake.chunks = 1
    async with asyncio.timeout(2):
        status, _, _ = await post(http, f"{url}/api/generate", {"model": "llama3.2", "prompt": "x", "stream": False})
    assert status == 200, "the slot of the departed request was released"


async def test_client_leaving_during_a_cold_load_is_a_disconnect_and_the_load_completes(
    http: aiohttp.ClientSession, url: str, fake: FakeOllama
) -> None:
    fake.load_delay = 0.3
    request = asyncio.create_task(post(http, f"{url}/api/chat", {"model": "llama3.2", "messages": HELLO}))
    assert await fake.wait_for_async(lambda: fake.in_flight == 1, 2.0)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request

    assert await fake.wait_for_async(lambda: fake.records[-1].disconnected, 1.0)
    async with asyncio.timeout(2):  # a load completes when its time is up, read lazily: no event to wait on
        while fake.loaded != ("llama3.2:latest",):
            await asyncio.sleep(0.02)


async def test_disconnect_is_seen_without_handler_cancellation(fake: FakeOllama) -> None:
    """In aiohttp's default runner (no handler cancellation), as other suites' servers may run it."""
    fake.hang = True
    runner = web.AppRunner(fake.make_app())
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession() as session:
            request = asyncio.create_task(session.post(f"{base}/api/generate", json={"model": "llama3.2"}))
            assert await fake.wait_for_async(lambda: fake.in_flight == 1, 2.0)
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
        assert await fake.wait_for_async(lambda: fake.records[-1].disconnected, 1.0)
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------- as a process


async def test_runs_as_a_process_until_sigterm() -> None:
    proc, base = await run_as_process("testing.fake_ollama", "--models", "a,b:7b", "--loaded", "a")
    try:
        async with aiohttp.ClientSession() as session, asyncio.timeout(5):
            assert [m["name"] for m in (await get_json(session, f"{base}/api/tags"))["models"]] == [
                "a:latest",
                "b:7b",
            ]
            assert await ps_names(session, base) == ["a:latest"]
    finally:
        await stop_process(proc)


def test_parse_time_accepts_go_offsets() -> None:
    assert parse_time("2024-01-01T00:00:00.5+01:00") == pytest.approx(
        datetime(2023, 12, 31, 23, 0, 0, 500000, tzinfo=UTC).timestamp()
    )
