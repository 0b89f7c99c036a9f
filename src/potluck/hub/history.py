"""Request history: one user's own requests with their ids, newest first, a page at a time.

What ``GET /api/requests`` and ``potluck requests`` show, so that a user can find the id of a request
and fetch its receipt. It reads the usage records only: prompts and completions are never stored, so
they are never shown. Whose requests are listed is the caller's decision (the API adapter lists the
caller's own, or, for an admin, the user asked for); this service never mixes two users' records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from potluck.hub.errors import InvalidRequestError, NotFoundError
from potluck.store import errors as store_errors

if TYPE_CHECKING:
    from potluck.hub.access import AccessMap
    from potluck.hub.metering import UsageJournal
    from potluck.hub.services import HubServices
    from potluck.store.database import Store
    from potluck.store.usage import UsageRecord

DEFAULT_PAGE = 50
MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class RequestEntry:
    """One request as its consumer sees it."""

    request_id: str
    created_at: datetime
    model: str
    agent_id: str | None
    """The agent that served it; None when none did (it never reached one)."""
    key_id: str | None
    group_id: str | None
    outcome: str
    status: int
    """The HTTP status the client got."""
    prompt_tokens: int
    completion_tokens: int
    tokens_estimated: bool
    """The backend reported no usage, so the hub estimated the tokens."""
    charged: int
    """Micro-credits charged."""

    @classmethod
    def of(cls, record: UsageRecord) -> RequestEntry:
        return cls(
            request_id=record.request_id,
            created_at=record.created_at,
            model=record.model,
            agent_id=record.agent_id,
            key_id=record.key_id,
            group_id=record.group_id,
            outcome=record.outcome,
            status=record.status,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            tokens_estimated=record.tokens_estimated,
            charged=record.charged,
        )


@dataclass(frozen=True, slots=True)
class RequestPage:
    entries: list[RequestEntry]
    """Newest first."""
    next_before: str | None
    """The ``before`` of the next (older) page; None when this one is the last."""


class RequestHistory:
    """Pages of one user's requests, read from the usage records once the journal is written out."""

    def __init__(self, store: Store, journal: UsageJournal, access: AccessMap) -> None:
        self._store = store
        self._journal = journal
        self._access = access

    @classmethod
    def of(cls, services: HubServices) -> RequestHistory:
        return cls(services.store, services.journal, services.access)

    async def page(self, user_id: str, *, limit: int = DEFAULT_PAGE, before: str | None = None) -> RequestPage:
        """Up to ``limit`` (1 to `MAX_PAGE`) of ``user_id``'s requests, newest first, older than the request
        ``before`` (one of this user's request ids, the ``next_before`` of the previous page)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequestError(f"`limit` must be 1 to {MAX_PAGE}", param="limit")
        if user_id not in self._access.usernames:
            raise NotFoundError(f"No user {user_id}")
        # Requests that just finished wait in the journal's next batch; a user looking for one expects it.
        await self._journal.flush()
        try:
            records = await self._store.history.page(user_id, limit=limit + 1, before=before)
        except store_errors.NotFoundError:
            raise InvalidRequestError(
                f"`before`: {before} is not one of the listed requests (pass the `next_before` of the previous page)",
                param="before",
            ) from None
        entries = [RequestEntry.of(r) for r in records[:limit]]
        return RequestPage(entries, entries[-1].request_id if len(records) > limit else None)
