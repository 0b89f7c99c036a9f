"""Potluck: pool GPUs running local LLM servers behind one OpenAI-compatible endpoint."""

__version__ = "0.1.0"
