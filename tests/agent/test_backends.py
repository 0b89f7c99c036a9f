"""Backend adapters, discovery and the catalog, against the faithful fakes of testing and llama.cpp's server."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from potluck.agent.backends import KINDS, Backend, make_backend
from potluck.agent.backends.llamacpp import LlamaCppBackend
from potluck.agent.backends.lmstudio import LMStudioBackend
from potluck.agent.backends.ollama import OllamaBackend
from potluck.agent.backends.ollama_translate import ChatTranslator, CompletionTranslator, EmbeddingTranslator
from potluck.agent.backends.vllm import VLLMBackend, parse_vllm_metrics
from potluck.agent.catalog import Catalog
from potluck.agent.discovery import Detected, fingerprint, scan
from potluck.protocol.agent import ModelInfo, RequestMessage
from testing.fake_backend import BackgroundServer, FakeBackend
from testing.fake_lmstudio import FakeLMStudio
from testing.fake_ollama import FakeOllama
from testing.fake_vllm import FakeVLLM
from testing.llama import start_llama_server

GIB = 1 << 30
QWEN = "qwen2.5-7b-instruct"
NOMIC = "text-embedding-nomic-embed-text-v1.5"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


@contextlib.contextmanager
def serve(app: web.Application) -> Iterator[BackgroundServer]:
    with BackgroundServer(app) as server:
        yield server


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def by_id(models: list[ModelInfo]) -> dict[str, ModelInfo]:
    return {m.id: m for m in models}


# -- parse_vllm_metrics --------------------------------------------------------------------------------

VLLM_METRICS = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12345.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 3.0
vllm:num_requests_running{engine="1",model_name="tiny"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 4.0
vllm:num_requests_waiting{engine="1",model_name="tiny"} NaN
# HELP vllm:num_requests_waiting_by_reason Number of requests waiting to be processed, by the reason they wait.
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{engine="0",model_name="tiny",reason="capacity"} 4.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="tiny",reason="deferred"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="tiny"} 1.5e-01
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="tiny"} 1.2e+03
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="tiny"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 7.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny"} 7.0
"""


def test_parse_vllm_metrics_sums_engines_and_ignores_nan() -> None:
    metrics = parse_vllm_metrics(VLLM_METRICS)
    assert metrics["vllm:num_requests_running"] == 5.0
    assert metrics["vllm:num_requests_waiting"] == 4.0
    assert metrics["vllm:kv_cache_usage_perc"] == pytest.approx(0.4)
    assert metrics["vllm:prompt_tokens_total"] == 1200.0
    assert metrics["vllm:num_requests_waiting_by_reason"] == 4.0
    assert not any(name.startswith("python_") for name in metrics)
    assert "vllm:gpu_cache_usage_perc" not in metrics


def test_parse_vllm_metrics_of_nothing_is_empty() -> None:
    assert parse_vllm_metrics("") == {}
    assert parse_vllm_metrics("# HELP vllm:num_requests_running x\n# TYPE vllm:num_requests_running gauge\n") == {}


def test_parse_vllm_metrics_reads_the_real_fake_exposition() -> None:
    fake = FakeVLLM()
    fake.waiting = 2
    fake.kv_cache_usage = 0.5
    metrics = parse_vllm_metrics(fake.metrics_text())
    assert metrics["vllm:num_requests_running"] == 0.0
    assert metrics["vllm:num_requests_waiting"] == 2.0
    assert metrics["vllm:kv_cache_usage_perc"] == 0.5
    assert metrics["vllm:gpu_cache_usage_perc"] == 0.5


def old_vllm_app(metrics: str) -> web.Application:
    """A vLLM from before `kv_cache_usage_perc`: only the deprecated `gpu_cache_usage_perc`."""

    async def models(request: web.Request) -> web.Response:
        card = {"id": "old", "object": "model", "owned_by": "vllm", "root": "old", "max_model_len": 1024}
        return web.json_response({"object": "list", "data": [card]})

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"version": "0.6.3"})

    async def metrics_route(request: web.Request) -> web.Response:
        return web.Response(text=metrics, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_get("/version", version)
    app.router.add_get("/metrics", metrics_route)
    return app


async def test_vllm_falls_back_to_the_deprecated_gpu_cache_gauge(http: aiohttp.ClientSession) -> None:
    text = (
        "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE vllm:gpu_cache_usage_perc gauge\n"
        'vllm:gpu_cache_usage_perc{engine="0",model_name="old"} 0.75\n'
        'vllm:num_requests_running{engine="0",model_name="old"} 1.0\n'
        'vllm:num_requests_waiting{engine="0",model_name="old"} 0.0\n'
    )
    with serve(old_vllm_app(text)) as server:
        backend = VLLMBackend(server.url)
        await backend.refresh(http)
    assert backend.healthy
    assert backend.version == "0.6.3"
    assert backend.kv_cache_usage == 0.75
    assert (backend.running, backend.waiting) == (1, 0)
    assert backend.models == [ModelInfo(id="old", hot=True, backend=server.url, context_length=1024)]


# -- OllamaBackend.upstream ----------------------------------------------------------------------------


def request(path: str = "/v1/chat/completions", *, stream: bool = False, strip_usage: bool = False) -> RequestMessage:
    return RequestMessage("req-1", "POST", path, "llama3.2", stream, strip_usage)


def encode(body: dict[str, Any]) -> bytes:
    return msgspec.json.encode(body)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.1},
        # The markers only inside a message: still a plain OpenAI request.
        {"model": "llama3.2", "messages": [{"role": "user", "content": "options"}]},
        {"model": "llama3.2", "messages": [{"role": "user", "content": 'set "options" and "keep_alive"'}]},
        {"model": "llama3.2", "messages": [{"role": "user", "content": "think", "name": "keep_alive"}]},
    ],
)
def test_ollama_passes_plain_requests_through_untouched(body: dict[str, Any]) -> None:
    raw = encode(body)
    upstream = OllamaBackend("http://127.0.0.1:11434").upstream(request(), raw)
    assert upstream.path == "/v1/chat/completions"
    assert upstream.body is raw
    assert upstream.translator is None


def test_ollama_passes_a_malformed_body_through_for_its_openai_layer_to_answer() -> None:
    raw = b'{"model": "llama3.2", "options": {'
    upstream = OllamaBackend("http://127.0.0.1:11434").upstream(request(), raw)
    assert (upstream.path, upstream.body, upstream.translator) == ("/v1/chat/completions", raw, None)


@pytest.mark.parametrize(
    ("extra", "native_field"),
    [
        ({"options": {"num_ctx": 8192}}, "options"),
        ({"keep_alive": "30m"}, "keep_alive"),
        ({"think": False}, "think"),
    ],
)
def test_ollama_native_fields_select_the_native_api_and_a_translator(extra: dict[str, Any], native_field: str) -> None:
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True, **extra}
    upstream = OllamaBackend("http://127.0.0.1:11434/v1").upstream(request(stream=True, strip_usage=True), encode(body))
    assert upstream.path == "/api/chat"
    assert isinstance(upstream.translator, ChatTranslator)
    assert upstream.translator.stream is True
    assert upstream.translator.include_usage is False  # the client did not ask for the usage chunk
    native = msgspec.json.decode(upstream.body)
    assert native["messages"] == [{"role": "user", "content": "hi"}]
    assert native["stream"] is True
    assert native[native_field] == extra[native_field]


def test_ollama_native_completions_and_embeddings() -> None:
    backend = OllamaBackend("http://127.0.0.1:11434")
    completion = backend.upstream(
        request("/v1/completions"), encode({"model": "llama3.2", "prompt": "Once", "keep_alive": 0})
    )
    assert completion.path == "/api/generate"
    assert isinstance(completion.translator, CompletionTranslator)
    assert completion.translator.content_type == "application/json"
    embedding = backend.upstream(
        request("/v1/embeddings"), encode({"model": "nomic", "input": "x", "options": {"num_ctx": 512}})
    )
    assert embedding.path == "/api/embed"
    assert isinstance(embedding.translator, EmbeddingTranslator)
    assert msgspec.json.decode(embedding.body) == {"model": "nomic", "input": "x", "options": {"num_ctx": 512}}


def test_ollama_never_translates_other_paths() -> None:
    raw = encode({"model": "llama3.2", "options": {"num_ctx": 1}})
    upstream = OllamaBackend("http://127.0.0.1:11434").upstream(request("/v1/responses"), raw)
    assert (upstream.path, upstream.body, upstream.translator) == ("/v1/responses", raw, None)


# -- refresh against the fakes -------------------------------------------------------------------------


async def assert_down_after_stop(http: aiohttp.ClientSession, backend: Backend, server: BackgroundServer) -> None:
    server.stop()
    await backend.refresh(http)
    assert backend.healthy is False
    assert backend.models == []
    assert backend.info().healthy is False


async def test_generic_refresh_lists_models_all_hot(http: aiohttp.ClientSession) -> None:
    server = BackgroundServer(FakeBackend(["a", "b"]).make_app())
    with server:
        backend = make_backend(server.url + "/v1")
        assert backend.base == server.url
        await backend.refresh(http)
        assert backend.healthy
        assert [(m.id, m.hot, m.backend, m.context_length) for m in backend.models] == [
            ("a", True, server.url + "/v1", None),
            ("b", True, server.url + "/v1", None),
        ]
        assert backend.info().kind == "openai"
        await assert_down_after_stop(http, backend, server)


async def test_ollama_refresh_reads_tags_ps_and_version(http: aiohttp.ClientSession) -> None:
    fake = FakeOllama(
        ["llama3.2:latest", "qwen2.5:7b", "nomic-embed-text:latest"],
        loaded=["llama3.2:latest"],
        version="0.12.9",
        size_bytes=2 * GIB,
        context_length=8192,
    )
    server = BackgroundServer(fake.make_app())
    with server:
        backend = OllamaBackend(server.url)
        await backend.refresh(http)
        assert backend.healthy
        assert backend.version == "0.12.9"
        models = by_id(backend.models)
        assert set(models) == {
            "llama3.2:latest",
            "llama3.2",
            "qwen2.5:7b",
            "nomic-embed-text:latest",
            "nomic-embed-text",
        }
        hot = models["llama3.2:latest"]
        assert (hot.hot, hot.context_length, hot.kind) == (True, 8192, "llm")
        assert (hot.size_bytes, hot.vram_bytes) == (2 * GIB, 2 * GIB)
        assert models["llama3.2"] == msgspec.structs.replace(hot, id="llama3.2")
        cold = models["qwen2.5:7b"]
        assert (cold.hot, cold.context_length, cold.size_bytes, cold.vram_bytes) == (False, None, 2 * GIB, None)
        assert models["nomic-embed-text:latest"].kind == "embedding"
        assert backend.running is None  # Ollama does not say how many requests it is running

        fake.load("qwen2.5:7b", context_length=2048)
        fake.unload("llama3.2:latest")
        await backend.refresh(http)
        models = by_id(backend.models)
        assert models["qwen2.5:7b"].hot is True
        assert models["qwen2.5:7b"].context_length == 2048
        assert models["llama3.2"].hot is False
        await assert_down_after_stop(http, backend, server)


async def test_lmstudio_refresh_reads_loaded_state_from_api_v0(http: aiohttp.ClientSession) -> None:
    fake = FakeLMStudio([QWEN, "llama-3.2-1b-instruct", NOMIC], loaded=[QWEN])
    server = BackgroundServer(fake.make_app())
    with server:
        backend = LMStudioBackend(server.url)
        await backend.refresh(http)
        assert backend.healthy
        models = by_id(backend.models)
        assert set(models) == {QWEN, "llama-3.2-1b-instruct", NOMIC}
        assert (models[QWEN].hot, models[QWEN].context_length, models[QWEN].kind) == (True, 32768, "llm")
        assert models["llama-3.2-1b-instruct"].hot is False
        assert (models[NOMIC].hot, models[NOMIC].kind, models[NOMIC].context_length) == (False, "embedding", 2048)

        fake.load(NOMIC)
        await backend.refresh(http)
        assert by_id(backend.models)[NOMIC].hot is True
        await assert_down_after_stop(http, backend, server)


def lmstudio_before_0_3_6() -> web.Application:
    """Only the OpenAI list: `/api/v0/models` is LM Studio's 200 "Unexpected endpoint" answer."""

    async def models(request: web.Request) -> web.Response:
        card = {"id": QWEN, "object": "model", "owned_by": "organization_owner"}
        return web.json_response({"data": [card], "object": "list"})

    async def unexpected(request: web.Request) -> web.Response:
        return web.json_response({"error": f"Unexpected endpoint or method. ({request.method} {request.path})"})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_route("*", "/{path:.*}", unexpected)
    return app


async def test_old_lmstudio_falls_back_to_the_openai_list(http: aiohttp.ClientSession) -> None:
    with serve(lmstudio_before_0_3_6()) as server:
        backend = LMStudioBackend(server.url)
        await backend.refresh(http)
    assert backend.healthy
    assert backend.models == [ModelInfo(id=QWEN, hot=True, backend=server.url)]


async def test_vllm_refresh_reads_models_version_and_metrics(http: aiohttp.ClientSession) -> None:
    fake = FakeVLLM("tiny", max_model_len=512, version="0.32.0")
    fake.waiting = 3
    fake.kv_cache_usage = 0.42
    server = BackgroundServer(fake.make_app())
    with server:
        backend = VLLMBackend(server.url)
        await backend.refresh(http)
        assert backend.healthy
        assert backend.version == "0.32.0"
        assert backend.models == [ModelInfo(id="tiny", hot=True, backend=server.url, context_length=512)]
        assert (backend.running, backend.waiting, backend.kv_cache_usage) == (0, 3, 0.42)
        info = backend.info()
        assert (info.kind, info.running, info.waiting, info.kv_cache_usage) == ("vllm", 0, 3, 0.42)
        await assert_down_after_stop(http, backend, server)


class LlamaCppServer:
    """llama.cpp's `/v1/models`, `/props` and `/slots` in their measured shapes (backends.md 5.1)."""

    def __init__(self, *, slots: int = 2, n_ctx: int = 2048, slots_endpoint: bool = True) -> None:
        self.busy = [False] * slots
        self.n_ctx = n_ctx
        self.slots_endpoint = slots_endpoint

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/props", self._props)
        app.router.add_get("/slots", self._slots)
        app.router.add_route("*", "/{path:.*}", self._not_found)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        meta = {"vocab_type": 2, "n_vocab": 459, "n_ctx": self.n_ctx, "n_ctx_train": 4096, "n_embd": 64}
        card = {"id": "tiny", "aliases": ["tiny"], "tags": [], "object": "model", "created": 1795316248}
        card |= {"owned_by": "llamacpp", "meta": meta}
        legacy = {"name": "tiny", "model": "tiny", "type": "model", "capabilities": ["completion"]}
        return web.json_response({"models": [legacy], "object": "list", "data": [card]})

    async def _props(self, request: web.Request) -> web.Response:
        settings = {"params": {"temperature": 0.8}, "n_ctx": self.n_ctx}
        return web.json_response(
            {
                "default_generation_settings": settings,
                "total_slots": len(self.busy),
                "model_alias": "tiny",
                "model_path": "/models/tiny.gguf",
                "modalities": {"vision": False, "video": False, "audio": False},
                "build_info": "b1-0c1e570",
                "is_sleeping": False,
            }
        )

    async def _slots(self, request: web.Request) -> web.Response:
        if not self.slots_endpoint:
            error = {
                "code": 501,
                "message": "This server does not support slots endpoint.",
                "type": "not_supported_error",
            }
            return web.json_response({"error": error}, status=501)
        return web.json_response(
            [
                {"id": i, "n_ctx": self.n_ctx, "speculative": False, "is_processing": busy, "id_task": -1}
                for i, busy in enumerate(self.busy)
            ]
        )

    async def _not_found(self, request: web.Request) -> web.Response:
        error = {"message": "File Not Found", "type": "not_found_error", "code": 404}
        return web.json_response({"error": error}, status=404)


async def test_llamacpp_refresh_reads_context_slots_and_busy_slots(http: aiohttp.ClientSession) -> None:
    fake = LlamaCppServer(slots=4, n_ctx=2048)
    fake.busy[1] = fake.busy[3] = True
    server = BackgroundServer(fake.make_app())
    with server:
        backend = LlamaCppBackend(server.url)
        await backend.refresh(http)
        assert backend.healthy
        assert backend.models == [ModelInfo(id="tiny", hot=True, backend=server.url, context_length=2048)]
        assert (backend.slots, backend.running) == (4, 2)
        fake.busy[1] = False
        await backend.refresh(http)
        assert backend.running == 1
        await assert_down_after_stop(http, backend, server)


async def test_llamacpp_without_the_slots_endpoint_reports_no_running_count(http: aiohttp.ClientSession) -> None:
    with serve(LlamaCppServer(slots=2, slots_endpoint=False).make_app()) as server:
        backend = LlamaCppBackend(server.url)
        await backend.refresh(http)
    assert backend.healthy
    assert (backend.slots, backend.running) == (2, None)
    assert [m.id for m in backend.models] == ["tiny"]


async def test_real_llamacpp_server_is_fingerprinted_and_refreshed(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    with start_llama_server(tmp_path, alias="tiny", parallel=2) as url:
        assert await fingerprint(http, url) == "llamacpp"
        backend = make_backend(url, "llamacpp")
        await backend.refresh(http)
        assert backend.healthy
        assert [(m.id, m.hot, m.context_length) for m in backend.models] == [("tiny", True, 2048)]
        assert (backend.slots, backend.running) == (2, 0)


# -- discovery -----------------------------------------------------------------------------------------


def not_an_llm_server(*, json_everywhere: bool) -> web.Application:
    async def anything(request: web.Request) -> web.Response:
        if json_everywhere:
            return web.json_response({"status": "ok"})
        return web.Response(text="<html><body>router admin</body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", anything)
    return app


FAKES: list[tuple[str, Callable[[], Any]]] = [
    ("openai", lambda: FakeBackend(["m"])),
    ("ollama", lambda: FakeOllama(["llama3.2:latest"])),
    ("lmstudio", lambda: FakeLMStudio([QWEN], loaded=[QWEN])),
    ("vllm", lambda: FakeVLLM()),
    ("llamacpp", lambda: LlamaCppServer()),
]


@pytest.mark.parametrize(("kind", "make"), FAKES, ids=[kind for kind, _ in FAKES])
async def test_fingerprint_names_each_kind(http: aiohttp.ClientSession, kind: str, make: Callable[[], Any]) -> None:
    with serve(make().make_app()) as server:
        assert await fingerprint(http, server.url) == kind


async def test_fingerprint_of_a_generic_server_follows_the_port_hint(http: aiohttp.ClientSession) -> None:
    with serve(FakeBackend(["m"]).make_app()) as server:
        assert await fingerprint(http, server.url, "jan") == "jan"
        assert await fingerprint(http, server.url, "koboldcpp") == "koboldcpp"
        assert await fingerprint(http, server.url, "llamacpp") == "localai"  # on 8080 but not llama.cpp's server
        # A hint never overrides a fingerprint, nor names a kind the port cannot be.
        assert await fingerprint(http, server.url, "vllm") == "openai"


async def test_fingerprint_is_none_for_a_closed_port(http: aiohttp.ClientSession) -> None:
    assert await fingerprint(http, f"http://127.0.0.1:{closed_port()}") is None


@pytest.mark.parametrize("json_everywhere", [False, True], ids=["html", "json"])
async def test_fingerprint_is_none_for_a_server_that_is_not_an_llm(
    http: aiohttp.ClientSession, json_everywhere: bool
) -> None:
    with serve(not_an_llm_server(json_everywhere=json_everywhere)) as server:
        assert await fingerprint(http, server.url) is None


async def test_scan_finds_each_backend_in_port_order(http: aiohttp.ClientSession) -> None:
    with (
        serve(FakeOllama(["llama3.2:latest"]).make_app()) as ollama,
        serve(FakeVLLM().make_app()) as vllm,
        serve(FakeBackend(["m"]).make_app()) as generic,
        serve(not_an_llm_server(json_everywhere=False)) as other,
    ):
        servers = {ollama.url: "ollama", vllm.url: "vllm", generic.url: "openai"}
        ports = [port_of(u) for u in servers] + [port_of(other.url), closed_port()]
        found = await scan(http, [*ports, ports[0]])
    expected = sorted((Detected(url, kind) for url, kind in servers.items()), key=lambda d: port_of(d.url))
    assert found == expected
    assert await scan(http, []) == []


# -- the catalog ---------------------------------------------------------------------------------------


async def test_catalog_prefers_a_backend_with_the_model_hot(http: aiohttp.ClientSession) -> None:
    first = FakeOllama(["llama3.2:latest", "only-here:latest"])
    second = FakeOllama(["llama3.2:latest"], loaded=["llama3.2:latest"])
    with serve(first.make_app()) as a, serve(second.make_app()) as b:
        backend_a, backend_b = OllamaBackend(a.url), OllamaBackend(b.url)
        catalog = Catalog([backend_a, backend_b])
        await catalog.refresh(http)
        assert catalog.backend_for("llama3.2:latest") is backend_b
        assert catalog.backend_for("llama3.2") is backend_b
        assert catalog.backend_for("only-here:latest") is backend_a
        assert catalog.backend_for("missing") is None
        assert catalog.is_hot("llama3.2")
        assert not catalog.is_hot("only-here")
        assert {m.id: m.backend for m in catalog.models()}["llama3.2:latest"] == b.url

        # Both hot: the first configured one keeps it.
        first.load("llama3.2:latest")
        await catalog.refresh(http)
        assert catalog.backend_for("llama3.2:latest") is backend_a

        first.unload("llama3.2:latest")
        await catalog.refresh(http)
        assert catalog.backend_for("llama3.2:latest") is backend_b


async def test_catalog_refresh_reports_only_real_changes(http: aiohttp.ClientSession) -> None:
    fake = FakeOllama(["llama3.2:latest", "qwen2.5:7b"], loaded=["llama3.2:latest"])
    vllm = FakeVLLM()
    server = BackgroundServer(fake.make_app())
    with server, serve(vllm.make_app()) as vllm_server:
        catalog = Catalog([OllamaBackend(server.url), VLLMBackend(vllm_server.url)])
        assert await catalog.refresh(http) is True
        assert await catalog.refresh(http) is False

        vllm.waiting = 7  # load is reported on its own schedule, not as a catalog change
        assert await catalog.refresh(http) is False
        assert catalog.infos()[1].waiting == 7

        fake.load("qwen2.5:7b")
        assert await catalog.refresh(http) is True
        assert await catalog.refresh(http) is False

        fake.pull("phi4:latest")
        assert await catalog.refresh(http) is True
        assert "phi4" in {m.id for m in catalog.models()}

        server.stop()
        assert await catalog.refresh(http) is True
        assert [b.healthy for b in catalog.backends] == [False, True]
        assert {m.id for m in catalog.models()} == {"tiny"}
        assert await catalog.refresh(http) is False


async def test_catalog_counts_waiters_on_cold_models(http: aiohttp.ClientSession) -> None:
    with serve(FakeOllama(["hot:latest", "cold:latest"], loaded=["hot:latest"]).make_app()) as server:
        catalog = Catalog([OllamaBackend(server.url)])
        await catalog.refresh(http)
    assert catalog.cold_waiters == 0
    with catalog.waiting_on("hot"):
        assert catalog.cold_waiters == 0
    assert not catalog.wake.is_set()
    with catalog.waiting_on("cold"), catalog.waiting_on("cold:latest"):
        assert catalog.cold_waiters == 2
        assert catalog.wake.is_set()  # the catalog loop reads again now, not after its interval
    assert catalog.cold_waiters == 0

    def fail_while_waiting() -> None:
        with catalog.waiting_on("cold"):
            assert catalog.cold_waiters == 1
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail_while_waiting()
    assert catalog.cold_waiters == 0


async def test_catalog_rescan_adds_keeps_and_drops_discovered_backends(http: aiohttp.ClientSession) -> None:
    configured = BackgroundServer(FakeBackend(["configured"]).make_app())
    found = BackgroundServer(FakeVLLM().make_app())
    with configured, found:
        configured_backend = make_backend(configured.url)
        catalog = Catalog([configured_backend], scan_ports=[port_of(configured.url), port_of(found.url)])
        await catalog.rescan(http)
        assert [(b.url, b.kind) for b in catalog.discovered] == [(found.url, "vllm")]
        discovered = catalog.discovered[0]
        await catalog.rescan(http)
        assert catalog.discovered == [discovered]  # the same object, with its state
        await catalog.refresh(http)
        assert {m.id for m in catalog.models()} == {"configured", "tiny"}
        found.stop()
        await catalog.rescan(http)
        assert catalog.discovered == []
        assert catalog.backends == [configured_backend]


# -- kinds ---------------------------------------------------------------------------------------------


def test_make_backend_builds_every_known_kind() -> None:
    for kind, cls in KINDS.items():
        backend = make_backend("http://127.0.0.1:1/", kind)
        assert type(backend) is cls
        assert backend.kind == kind
        assert backend.url == "http://127.0.0.1:1"
        assert backend.info().healthy is False
    assert make_backend("http://127.0.0.1:1").kind == "openai"


def test_make_backend_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match=r"unknown backend kind 'tgi'.*llamacpp.*ollama"):
        make_backend("http://127.0.0.1:1", "tgi")
