"""LM Studio (port 1234): ``/api/v0/models`` says which models are loaded (hot) and their context.

Recent LM Studio releases document ``/v1/responses`` and Anthropic's ``/v1/messages``, but its API
tells no version, and older ones answer an unknown path with 200 and an error object, so neither can
be told apart safely: requests in those dialects are translated to chat completions, which every
release speaks. Token counts are estimates (no tokenizer endpoint).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec

from potluck.agent.backends.base import FETCH_ERRORS, Backend, get_json
from potluck.protocol.agent import ModelInfo


class _V0Model(msgspec.Struct):
    id: str
    type: str = "llm"
    state: str = "not-loaded"
    max_context_length: int | None = None


class _V0List(msgspec.Struct):
    # Required: LM Studio answers unknown paths (v0 on old versions) with 200 and an error object.
    data: list[_V0Model]


class LMStudioBackend(Backend):
    kind = "lmstudio"

    async def _refresh(self, http: aiohttp.ClientSession) -> None:
        try:
            listing = msgspec.convert(await get_json(http, self.base + "/api/v0/models"), _V0List)
        except FETCH_ERRORS:
            # Older LM Studio (before 0.3.6) has only the OpenAI list: no loaded state to read.
            self.models = await self.openai_models(http)
            return
        self.models = [_model(m, self.url) for m in listing.data]


def _model(m: _V0Model, url: str) -> ModelInfo:
    kind = "embedding" if m.type == "embeddings" else "llm"
    return ModelInfo(id=m.id, hot=m.state == "loaded", backend=url, context_length=m.max_context_length, kind=kind)


def is_lmstudio(v0_models: Any) -> bool:
    """LM Studio's v0 list: ``{"object":"list","data":[{"id", "state", "type", ...}]}``."""
    data = v0_models.get("data") if isinstance(v0_models, dict) else None
    return isinstance(data, list) and all(isinstance(m, dict) and "state" in m for m in data)
