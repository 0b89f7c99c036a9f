"""llama.cpp's server (port 8080): one model, always loaded; ``/slots`` gives the busy slots.

Builds since December 2025 (PR #17570) serve Anthropic's ``/v1/messages`` and
``/v1/messages/count_tokens`` themselves. Whether this one does is asked once, by counting the
tokens of a one-word prompt (no generation, and only while the model is loaded, so the probe never
wakes a sleeping server); until a definite answer, Messages requests are translated. Its
``/v1/responses`` is newer still and untested here: Responses requests are always translated.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from potluck.agent.backends.base import FETCH_ERRORS, Backend, get_json, probe_json
from potluck.protocol.openai import COUNT_TOKENS_PATH, MESSAGES_PATH

ANTHROPIC_PATHS = frozenset({MESSAGES_PATH, COUNT_TOKENS_PATH})


class LlamaCppBackend(Backend):
    kind = "llamacpp"

    async def _refresh(self, http: aiohttp.ClientSession) -> None:
        try:
            props = await get_json(http, self.base + "/props")
        except FETCH_ERRORS:
            props = None
        props = props if isinstance(props, dict) else {}
        total = props.get("total_slots")
        self.slots = total if isinstance(total, int) else None
        # --sleep-idle-seconds unloads the model: it is cold until the next request wakes it.
        self.models = await self.openai_models(http, hot=not props.get("is_sleeping", False))
        try:
            slots = await get_json(http, self.base + "/slots")
            self.running = sum(1 for s in slots if isinstance(s, dict) and s.get("is_processing"))
        except FETCH_ERRORS:  # /slots can be disabled with --no-slots
            self.running = None

    async def _native_paths(self, http: aiohttp.ClientSession) -> frozenset[str]:
        if self._probed is None:
            hot = next((m.id for m in self.models if m.hot), None)
            if hot is not None:
                self._probed = await _probe_messages(http, self.base, hot)
        return self._probed or frozenset()


async def _probe_messages(http: aiohttp.ClientSession, base: str, model: str) -> frozenset[str] | None:
    """The Anthropic paths if the server counts tokens itself, none if it has no such path, None if unsure."""
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}]}
    try:
        status, answer = await probe_json(http, base + COUNT_TOKENS_PATH, body)
    except (aiohttp.ClientError, TimeoutError):
        return None
    if status == 200 and isinstance(answer, dict) and isinstance(answer.get("input_tokens"), int):
        return ANTHROPIC_PATHS
    if status >= 500:  # loading, or a passing failure: ask again at the next refresh
        return None
    return frozenset()


def is_llamacpp(props: Any) -> bool:
    return isinstance(props, dict) and ("default_generation_settings" in props or "total_slots" in props)
