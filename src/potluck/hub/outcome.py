"""How a client request ended: one enum, decided in one place (`outcome_of_failure`, `outcome_of_exchange`).

The outcome drives everything after the request: what the usage record says, whether anything is
charged, what the scheduler learns about the agent, and the ``potluck_hub_requests_total`` label.
"""

from __future__ import annotations

import asyncio
import enum

from potluck.hub.errors import (
    ModelNotFoundError,
    ModelUnavailableError,
    OverloadedError,
    ShuttingDownError,
    UpstreamError,
    UpstreamTimeoutError,
)
from potluck.protocol.agent import CancelReason


class Outcome(enum.StrEnum):
    OK = "ok"
    """The client got the whole answer (a hang-up right after a stream's ``[DONE]`` included)."""
    CLIENT_CANCELLED = "client_cancelled"
    """The client went away first; it pays for what reached it."""
    UPSTREAM_ERROR = "upstream_error"
    """The backend answered an error status (a 4xx it refused, a 5xx it failed with): nothing was served."""
    AGENT_FAILED = "agent_failed"
    """The agent or its backend failed (lost, refused, garbage), before or after the first byte."""
    TIMEOUT = "timeout"
    """No first byte within the first-byte timeout, or nothing for the idle timeout."""
    MODEL_NOT_FOUND = "model_not_found"
    """No agent this key reaches serves the model: it never reached an agent."""
    OVERLOADED = "overloaded"
    """Every capable agent was busy and the queue was full or the wait expired, the hub was shutting down, or
    the model's agents were still reconnecting after a restart."""
    ERROR = "error"
    """Anything else the hub refused after admission."""

    @property
    def agent_fault(self) -> bool:
        """The agent is to blame (counts toward outlier ejection)."""
        return self in (Outcome.AGENT_FAILED, Outcome.TIMEOUT)

    @property
    def cancel_reason(self) -> CancelReason:
        """What the agent is told when the request is cut short with this outcome."""
        return CancelReason.TIMEOUT if self is Outcome.TIMEOUT else CancelReason.CLIENT_DISCONNECT


def outcome_of_failure(exc: BaseException) -> Outcome:
    """The outcome of a request that failed before its response started (or of a failure mid-response)."""
    if isinstance(exc, asyncio.CancelledError):
        return Outcome.CLIENT_CANCELLED
    if isinstance(exc, ModelNotFoundError):
        return Outcome.MODEL_NOT_FOUND
    if isinstance(exc, OverloadedError | ShuttingDownError | ModelUnavailableError):
        return Outcome.OVERLOADED
    if isinstance(exc, UpstreamTimeoutError):
        return Outcome.TIMEOUT
    if isinstance(exc, UpstreamError):
        return Outcome.AGENT_FAILED
    return Outcome.ERROR


def outcome_of_response(*, status: int, failure: BaseException | None, client_gone: bool, done_sent: bool) -> Outcome:
    """The outcome of a request whose response head came back from an agent.

    ``failure``: the agent failed mid-response; ``client_gone``: the client left before the end;
    ``done_sent``: a stream's ``[DONE]`` reached it (then a hang-up is the SDK closing, not a cancel).
    """
    if failure is not None:
        return outcome_of_failure(failure)
    if client_gone and not done_sent:
        return Outcome.CLIENT_CANCELLED
    if status >= 400:
        return Outcome.UPSTREAM_ERROR
    return Outcome.OK
