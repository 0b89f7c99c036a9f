"""SGLang (port 30000): one model, always loaded."""

from __future__ import annotations

from typing import Any

from potluck.agent.backends.base import Backend


class SGLangBackend(Backend):
    kind = "sglang"


def is_sglang(model_info: Any) -> bool:
    return isinstance(model_info, dict) and "model_path" in model_info
