"""llama.cpp's server (port 8080): one model, always loaded; ``/slots`` gives the busy slots."""

from __future__ import annotations

from typing import Any

import aiohttp

from potluck.agent.backends.base import FETCH_ERRORS, Backend, get_json


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


def is_llamacpp(props: Any) -> bool:
    return isinstance(props, dict) and ("default_generation_settings" in props or "total_slots" in props)
