"""vLLM (port 8000): models always loaded; load from the Prometheus ``/metrics``.

vLLM serves ``/v1/responses`` and, in recent releases, Anthropic's ``/v1/messages`` (and
``/v1/messages/count_tokens``) itself. Which of them this one has is read once from the route list
of its ``/openapi.json`` (FastAPI's); a server started with ``--disable-fastapi-docs`` has none to
read, and every such request is then translated to chat completions.
"""

from __future__ import annotations

import re

import aiohttp

from potluck.agent.backends.base import FETCH_ERRORS, Backend, get_json, get_text, probe_json
from potluck.protocol.openai import DIALECT_PATHS

_SAMPLE = re.compile(r"^(vllm:[a-z_]+)(?:\{[^}]*\})?\s+([0-9.eE+-]+|NaN)\s*$", re.MULTILINE)


def parse_vllm_metrics(text: str) -> dict[str, float]:
    """Gauge values by name, summed over label sets (one per engine)."""
    values: dict[str, float] = {}
    for name, value in _SAMPLE.findall(text):
        if value != "NaN":
            values[name] = values.get(name, 0.0) + float(value)
    return values


class VLLMBackend(Backend):
    kind = "vllm"

    async def _refresh(self, http: aiohttp.ClientSession) -> None:
        self.models = await self.openai_models(http, hot=True)
        try:
            version = await get_json(http, self.base + "/version")
            self.version = version.get("version") if isinstance(version, dict) else None
        except FETCH_ERRORS:
            self.version = None
        try:
            metrics = parse_vllm_metrics(await get_text(http, self.base + "/metrics"))
        except FETCH_ERRORS:
            self.running = self.waiting = None
            self.kv_cache_usage = None
            return
        running = metrics.get("vllm:num_requests_running")
        waiting = metrics.get("vllm:num_requests_waiting")
        usage = metrics.get("vllm:kv_cache_usage_perc", metrics.get("vllm:gpu_cache_usage_perc"))
        self.running = None if running is None else int(running)
        self.waiting = None if waiting is None else int(waiting)
        self.kv_cache_usage = usage

    async def _native_paths(self, http: aiohttp.ClientSession) -> frozenset[str]:
        if self._probed is None:
            self._probed = await _documented_paths(http, self.base)
        return self._probed or frozenset()


async def _documented_paths(http: aiohttp.ClientSession, base: str) -> frozenset[str] | None:
    """The dialect paths vLLM's OpenAPI document lists; None when it could not be read this time."""
    try:
        status, document = await probe_json(http, base + "/openapi.json")
    except (aiohttp.ClientError, TimeoutError):
        return None
    if status >= 500:
        return None
    paths = document.get("paths") if status == 200 and isinstance(document, dict) else None
    return frozenset(p for p in DIALECT_PATHS if p in paths) if isinstance(paths, dict) else frozenset()
