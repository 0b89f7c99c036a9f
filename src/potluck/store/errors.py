"""Store errors, translated from SQLAlchemy where they are caught."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

_OUTAGE_SQLSTATES = ("08", "57")
"""PostgreSQL's error classes "connection exception" and "operator intervention" (shutting down, starting up,
terminating the connection): the server, not the statement, is the problem."""


class StoreError(Exception):
    """A persistence operation failed."""


class NotFoundError(StoreError):
    """The row does not exist (or is not visible to the caller)."""


class ConflictError(StoreError):
    """A uniqueness or state rule refused the write (e.g. a used enrolment token)."""


class UnwritableError(StoreError, ValueError):
    """The data itself can never be stored (malformed, or a value out of the database's range).

    Unlike an outage or a lock, retrying the same write fails again, so a writer drops or
    corrects it instead of retrying it forever.
    """


class SchemaOutdatedError(StoreError):
    """The database's schema is not the newest migration and this store may not migrate it."""


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) says the database cannot be reached right now: refused or
    cut connections, a server shutting down or starting up. Such a failure is the server's, not the request's:
    the hub answers it with a retryable 503, not a 500. A failing statement on a live connection is not one."""
    seen: BaseException | None = exc
    for _ in range(8):  # StoreError from DBAPIError from the driver's error: a short chain
        if seen is None:
            return False
        if isinstance(seen, DBAPIError):
            sqlstate = str(getattr(seen.orig, "sqlstate", None) or "")
            refused = isinstance(getattr(seen.orig, "__cause__", None), OSError)  # while connecting (engine.py)
            return seen.connection_invalidated or refused or sqlstate[:2] in _OUTAGE_SQLSTATES
        seen = seen.__cause__
    return False
