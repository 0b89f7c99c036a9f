"""Store errors, translated from SQLAlchemy where they are caught."""

from __future__ import annotations


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
