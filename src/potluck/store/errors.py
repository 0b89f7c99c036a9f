"""Store errors, translated from SQLAlchemy where they are caught."""

from __future__ import annotations


class StoreError(Exception):
    """A persistence operation failed."""


class NotFoundError(StoreError):
    """The row does not exist (or is not visible to the caller)."""


class ConflictError(StoreError):
    """A uniqueness or state rule refused the write (e.g. a used enrolment token)."""
