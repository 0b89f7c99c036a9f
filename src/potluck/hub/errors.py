"""Hub errors. Each carries the HTTP status and OpenAI error code that api/errors.py renders."""

from __future__ import annotations

from potluck.protocol.errors import ErrorCode, PotluckError
from potluck.store.errors import is_database_unavailable


class HubError(PotluckError):
    pass


class AuthError(HubError):
    code = ErrorCode.INVALID_API_KEY


class AdminAuthError(HubError):
    code = ErrorCode.INVALID_API_KEY


class PermissionDeniedError(HubError):
    code = ErrorCode.PERMISSION_DENIED


class ConflictError(HubError):
    code = ErrorCode.CONFLICT


class InvalidInviteError(HubError):
    code = ErrorCode.INVALID_INVITE


class InvalidRequestError(HubError):
    code = ErrorCode.INVALID_REQUEST

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class NotFoundError(HubError):
    code = ErrorCode.NOT_FOUND


class ModelNotFoundError(HubError):
    code = ErrorCode.MODEL_NOT_FOUND

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist or no agent serves it")
        self.param = "model"


class OverloadedError(HubError):
    """All capable agents are busy and the request cannot wait (queue full or wait expired)."""

    code = ErrorCode.SERVER_OVERLOADED

    def __init__(self, message: str, *, retry_after: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = headers or {}


class ModelUnavailableError(HubError):
    """The agents that serve the model are reconnecting after a hub restart: retry shortly."""

    code = ErrorCode.MODEL_UNAVAILABLE

    def __init__(self, model: str, *, retry_after: int) -> None:
        super().__init__(f"The model `{model}` is not available yet: its agents are reconnecting; retry shortly")
        self.retry_after = retry_after


class InsufficientQuotaError(HubError):
    """The request could cost more than the user's credit, and no free (mutual) route serves it."""

    code = ErrorCode.INSUFFICIENT_QUOTA


class ShuttingDownError(HubError):
    code = ErrorCode.SHUTTING_DOWN
    retry_after = 5


class UpstreamError(HubError):
    """The agent or its backend failed. ``retriable``: nothing reached a model; another agent may serve it."""

    code = ErrorCode.UPSTREAM_ERROR

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, retriable: bool = False):
        super().__init__(message, code=code, status=status)
        self.retriable = retriable
        self.agent_id: str | None = None
        """The agent that failed, once the dispatcher knows it."""
        self.terminal_sent = False
        """The agent already ended the client's stream with its dialect's terminal error event."""


class AgentLostError(UpstreamError):
    """The agent's connection went away while the request was with it."""

    def __init__(self, message: str = "the agent serving this request disconnected") -> None:
        super().__init__(message, retriable=True)


class ReplicaRefusedError(UpstreamError):
    """Cluster mode: the replica holding the agent did not start the request on it (no slot within its queue
    timeout, the agent draining, paused or gone there). Nothing reached the agent, so another agent may serve
    it; and it is no failure of the agent's, so it does not count toward ejecting it."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message, code=code, status=status, retriable=True)


class UpstreamTimeoutError(HubError):
    code = ErrorCode.UPSTREAM_TIMEOUT


class DatabaseUnavailableError(HubError):
    """The database cannot be reached (restarting, failing over): nothing was done; retry shortly."""

    code = ErrorCode.SERVER_OVERLOADED

    def __init__(self) -> None:
        super().__init__("The database cannot be reached right now; retry shortly")
        self.retry_after = 1


def as_hub_error(exc: Exception) -> HubError | None:
    """The hub error an unexpected exception stands for, when it stands for one (None: a bug, a 500).

    Only a database outage, for now: every read or write of the store may meet one, and a client is owed a
    retryable 503 for it rather than an internal error."""
    return DatabaseUnavailableError() if is_database_unavailable(exc) else None
