"""Bodies of ``GET /api/requests``: one user's requests with their ids, newest first, a page at a time."""

from __future__ import annotations

from typing import Annotated

import msgspec

from potluck.api.schemas.common import Reply, Timestamp
from potluck.hub.reports import DEFAULT_REQUEST_PAGE, MAX_REQUEST_PAGE


class RequestsQuery(msgspec.Struct):
    """Query of ``GET /api/requests``."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_REQUEST_PAGE)] = DEFAULT_REQUEST_PAGE
    """How many requests, 1 to 500."""
    before: str | None = None
    """Only requests older than this one (the ``next_before`` of the previous page)."""
    user: str | None = None
    """Another user's id: for the admin token or an admin user's token."""


class RequestInfo(Reply):
    """One request, as its consumer sees it (never its prompt or completion: the hub stores neither)."""

    request_id: str
    """The request's id (``req_…``), as in its ``x-request-id``: what ``GET /api/receipts/{request_id}`` takes."""
    created_at: Timestamp
    """When it ended."""
    model: str
    """The model asked for."""
    agent_id: str | None
    """The agent that served it; null when none took it."""
    key_id: str | None
    """The API key used."""
    group_id: str | None
    """The group it was served through and billed in."""
    outcome: str
    """How it ended: ``ok``, ``client_cancelled``, ``upstream_error``, ``model_not_found``..."""
    status: int
    """The HTTP status the client got."""
    prompt_tokens: int
    """Prompt tokens (the backend's count, or the hub's estimate)."""
    completion_tokens: int
    """Completion tokens."""
    tokens_estimated: bool
    """The backend reported no usage, so the hub estimated the tokens."""
    charged: float
    """Credits paid (0 in a mutual group)."""
    charged_micro: int
    """The same in micro-credits, exactly."""
    ttft_ms: int | None
    """Milliseconds from its arrival to the first byte of the answer; null when no byte came."""
    duration_ms: int
    """Milliseconds from its arrival to its end, time in the queue included."""


class RequestList(Reply):
    """A page of one user's requests."""

    data: list[RequestInfo]
    """Newest first (by time, then by request id)."""
    next_before: str | None
    """Pass as ``before`` for the next, older page; null when this is the last."""
