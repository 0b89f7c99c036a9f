"""Every kind of backend the agent knows, by name."""

from __future__ import annotations

from potluck.agent.backends.base import Backend
from potluck.agent.backends.llamacpp import LlamaCppBackend
from potluck.agent.backends.lmstudio import LMStudioBackend
from potluck.agent.backends.ollama import OllamaBackend
from potluck.agent.backends.sglang import SGLangBackend
from potluck.agent.backends.vllm import VLLMBackend


def _generic(name: str) -> type[Backend]:
    """OpenAI-compatible servers with nothing of their own to read (yet): named for diagnostics."""
    return type(f"{name.title()}Backend", (Backend,), {"kind": name})


KINDS: dict[str, type[Backend]] = {
    "openai": Backend,
    "ollama": OllamaBackend,
    "lmstudio": LMStudioBackend,
    "llamacpp": LlamaCppBackend,
    "vllm": VLLMBackend,
    "sglang": SGLangBackend,
    "tgwui": _generic("tgwui"),
    "koboldcpp": _generic("koboldcpp"),
    "jan": _generic("jan"),
    "localai": _generic("localai"),
}


def make_backend(url: str, kind: str = "openai") -> Backend:
    try:
        return KINDS[kind](url)
    except KeyError:
        raise ValueError(f"unknown backend kind {kind!r}; known: {', '.join(sorted(KINDS))}") from None
