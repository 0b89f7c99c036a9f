"""One adapter per kind of local LLM server: its catalog (models, hot/cold, load) and how to call it."""

from __future__ import annotations

from potluck.agent.backends.base import Backend, Upstream
from potluck.agent.backends.kinds import KINDS, make_backend

__all__ = ["KINDS", "Backend", "Upstream", "make_backend"]
