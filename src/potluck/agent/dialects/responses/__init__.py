"""OpenAI's Responses API (``POST /v1/responses``) served by a chat completions backend.

`translate_request` turns the client's body into a chat body (or refuses it with a 400); `translator_for`
gives the object that turns the backend's answer back into a Response, streamed or whole. Both translators
have the agent's `ResponseTranslator` shape (``feed``/``finish``/``usage``/``error``/``translate_error``).
"""

from __future__ import annotations

from potluck.agent.dialects.responses.answer import ResponsesJSONTranslator, translate_error
from potluck.agent.dialects.responses.request import ChatTranslation, translate_request
from potluck.agent.dialects.responses.stream import ResponsesStreamTranslator

__all__ = [
    "ChatTranslation",
    "ResponsesJSONTranslator",
    "ResponsesStreamTranslator",
    "translate_error",
    "translate_request",
    "translator_for",
]


def translator_for(
    translation: ChatTranslation, *, response_id: str | None = None, created_at: int | None = None
) -> ResponsesStreamTranslator | ResponsesJSONTranslator:
    """The translator of the backend's answer to this request."""
    if translation.stream:
        return ResponsesStreamTranslator(translation.echo, response_id=response_id, created_at=created_at)
    return ResponsesJSONTranslator(translation.echo, response_id=response_id, created_at=created_at)
