"""Ollama (port 11434): ``/api/tags`` lists pulled models, ``/api/ps`` the ones loaded in VRAM.

Requests go to Ollama's own OpenAI layer (``/v1/...``) untouched, unless they carry what that layer
drops (``options`` such as ``num_ctx``, ``keep_alive``, ``think``): those go to the native API
through `ollama_translate`, and the answer is translated back.

Ollama serves ``/v1/responses`` (stateless) since 0.13.3 and Anthropic's ``/v1/messages`` since
0.14.0, as its version (``/api/version``) tells: those requests pass through. It has no
``/v1/messages/count_tokens`` and no tokenizer endpoint, so a token count there is an estimate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import msgspec

from potluck.agent.backends.base import Backend, ResponseTranslator, Upstream, get_json
from potluck.agent.backends.ollama_translate import NATIVE_PATHS, TRANSLATORS, EmbeddingTranslator, native_request
from potluck.protocol.agent import ModelInfo, RequestMessage
from potluck.protocol.openai import MESSAGES_PATH, RESPONSES_PATH

NATIVE_ONLY_FIELDS = (b'"options"', b'"keep_alive"', b'"think"')
"""Top-level request fields Ollama's OpenAI layer ignores; their presence selects the native API."""

NATIVE_SINCE = {RESPONSES_PATH: (0, 13, 3), MESSAGES_PATH: (0, 14, 0)}
"""The Ollama release that first served each client dialect's path."""


def release(version: str | None) -> tuple[int, ...]:
    """``0.14.2`` (or ``0.14.2-rc0``) as (0, 14, 2); () when there is no version to read."""
    numbers: list[int] = []
    for part in (version or "").split("-", 1)[0].split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


class _Details(msgspec.Struct):
    families: list[str] | None = None
    family: str = ""


class _Tag(msgspec.Struct):
    name: str
    size: int = 0
    details: _Details | None = None
    capabilities: list[str] | None = None


class _Loaded(msgspec.Struct):
    name: str
    size: int = 0
    size_vram: int = 0
    context_length: int | None = None


class _Tags(msgspec.Struct):
    models: list[_Tag] = []


class _Ps(msgspec.Struct):
    models: list[_Loaded] = []


def _is_embedding(tag: _Tag) -> bool:
    if tag.capabilities is not None:
        return "embedding" in tag.capabilities and "completion" not in tag.capabilities
    families = (tag.details.families or []) if tag.details else []
    return any(f in ("bert", "nomic-bert") for f in families)


class OllamaBackend(Backend):
    kind = "ollama"

    async def _refresh(self, http: aiohttp.ClientSession) -> None:
        version = await get_json(http, self.base + "/api/version")
        self.version = version.get("version") if isinstance(version, dict) else None
        tags = msgspec.convert(await get_json(http, self.base + "/api/tags"), _Tags)
        loaded = {m.name: m for m in msgspec.convert(await get_json(http, self.base + "/api/ps"), _Ps).models}
        models = []
        for tag in tags.models:
            hot = loaded.get(tag.name)
            info = ModelInfo(
                id=tag.name,
                hot=hot is not None,
                backend=self.url,
                context_length=hot.context_length if hot else None,
                size_bytes=tag.size or None,
                vram_bytes=hot.size_vram if hot else None,
                kind="embedding" if _is_embedding(tag) else "llm",
            )
            models.append(info)
            if tag.name.endswith(":latest"):
                # Ollama answers to the bare name too; so does the hub.
                models.append(msgspec.structs.replace(info, id=tag.name.removesuffix(":latest")))
        self.models = models

    async def _native_paths(self, http: aiohttp.ClientSession) -> frozenset[str]:
        version = release(self.version)
        return frozenset(path for path, since in NATIVE_SINCE.items() if version and version >= since)

    def upstream(self, req: RequestMessage, body: bytes, fields: Mapping[str, Any] | None = None) -> Upstream:
        if req.path not in NATIVE_PATHS or not any(marker in body for marker in NATIVE_ONLY_FIELDS):
            return Upstream(path=req.path, body=body)
        try:
            obj = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return Upstream(path=req.path, body=body)  # let Ollama's /v1 answer the malformed body
        if not isinstance(obj, dict) or not any(k in obj for k in ("options", "keep_alive", "think")):
            return Upstream(path=req.path, body=body)
        if req.path == "/v1/embeddings":
            translator: ResponseTranslator = EmbeddingTranslator(req.model, encoding_format=obj.get("encoding_format"))
        else:
            translator = TRANSLATORS[req.path](req.model, stream=req.stream, include_usage=not req.strip_usage)
        native = native_request(req.path, obj)
        return Upstream(path=NATIVE_PATHS[req.path], body=msgspec.json.encode(native), translator=translator)
