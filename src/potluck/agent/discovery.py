"""Finding local backends: probe well-known ports on loopback and fingerprint what answers.

Only 127.0.0.1 is probed. Each port is asked the questions that tell the servers apart, most
specific first: Ollama (``/api/version`` and ``/api/tags``), LM Studio (``/api/v0/models`` with a
``state`` per model), llama.cpp (``/props``), vLLM (``/version`` and ``vllm:`` metrics), SGLang
(``/get_model_info``); anything else with ``/v1/models`` is a generic OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp

from potluck.agent.backends.base import FETCH_ERRORS, get_json, get_text
from potluck.agent.backends.llamacpp import is_llamacpp
from potluck.agent.backends.lmstudio import is_lmstudio
from potluck.agent.backends.sglang import is_sglang

WELL_KNOWN_PORTS: dict[int, str] = {
    11434: "ollama",
    1234: "lmstudio",
    8000: "vllm",
    8080: "llamacpp",  # LocalAI uses it too; the fingerprint decides
    30000: "sglang",
    5000: "tgwui",
    5001: "koboldcpp",
    1337: "jan",
}
"""Ports probed by default, with the server usually found there (a hint only: fingerprints decide)."""


@dataclass(frozen=True, slots=True)
class Detected:
    url: str
    kind: str


async def _answers(http: aiohttp.ClientSession, url: str) -> object | None:
    try:
        answer: object = await get_json(http, url)
        return answer
    except FETCH_ERRORS:
        return None


async def fingerprint(http: aiohttp.ClientSession, base: str, port_hint: str | None = None) -> str | None:
    """The kind of server at ``base``, or None if nothing OpenAI-compatible answers there."""
    version = await _answers(http, base + "/api/version")
    if isinstance(version, dict) and "version" in version and await _answers(http, base + "/api/tags") is not None:
        return "ollama"
    v0 = await _answers(http, base + "/api/v0/models")
    if v0 is not None and is_lmstudio(v0):
        return "lmstudio"
    if is_llamacpp(await _answers(http, base + "/props")):
        return "llamacpp"
    vllm_version = await _answers(http, base + "/version")
    if isinstance(vllm_version, dict) and "version" in vllm_version:
        try:
            if "vllm:" in await get_text(http, base + "/metrics"):
                return "vllm"
        except FETCH_ERRORS:
            pass
    if is_sglang(await _answers(http, base + "/get_model_info")):
        return "sglang"
    models = await _answers(http, base + "/v1/models")
    if isinstance(models, dict) and isinstance(models.get("data"), list):
        if port_hint == "llamacpp":
            return "localai"  # an OpenAI server on 8080 that is not llama.cpp's
        return port_hint if port_hint in ("tgwui", "koboldcpp", "jan") else "openai"
    return None


async def _port_open(port: int, host: str) -> bool:
    try:
        async with asyncio.timeout(0.5):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def scan(http: aiohttp.ClientSession, ports: Iterable[int], host: str = "127.0.0.1") -> list[Detected]:
    """Every backend answering on ``host`` at one of ``ports``, fingerprinted, in port order."""

    async def probe(port: int) -> Detected | None:
        if not await _port_open(port, host):
            return None
        base = f"http://{host}:{port}"
        kind = await fingerprint(http, base, WELL_KNOWN_PORTS.get(port))
        return Detected(base, kind) if kind else None

    found = await asyncio.gather(*(probe(p) for p in sorted(set(ports))))
    return [d for d in found if d is not None]
