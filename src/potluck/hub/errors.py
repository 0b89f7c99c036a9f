"""Hub errors. Each carries the HTTP status and OpenAI error code that api/errors.py renders."""

from __future__ import annotations

from potluck.protocol.errors import PotluckError


class HubError(PotluckError):
    pass


class AuthError(HubError):
    code = "invalid_api_key"
    status = 401


class AdminAuthError(HubError):
    code = "invalid_api_key"
    status = 401


class PermissionDeniedError(HubError):
    code = "permission_denied"
    status = 403


class ConflictError(HubError):
    code = "conflict"
    status = 409


class InvalidInviteError(HubError):
    code = "invalid_invite"
    status = 400


class InvalidRequestError(HubError):
    code = "invalid_request_error"
    status = 400

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class NotFoundError(HubError):
    code = "not_found"
    status = 404


class ModelNotFoundError(HubError):
    code = "model_not_found"
    status = 404

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist or no agent serves it")
        self.param = "model"


class OverloadedError(HubError):
    """All capable agents are busy and the request cannot wait (queue full or wait expired)."""

    code = "server_overloaded"
    status = 503

    def __init__(self, message: str, *, retry_after: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = headers or {}


class InsufficientQuotaError(HubError):
    """The request could cost more than the user's credit, and no free (mutual) route serves it."""

    code = "insufficient_quota"
    status = 402


class ShuttingDownError(HubError):
    code = "shutting_down"
    status = 503
    retry_after = 5


class UpstreamError(HubError):
    """The agent or its backend failed. ``retriable``: nothing reached a model; another agent may serve it."""

    code = "upstream_error"
    status = 502

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, retriable: bool = False):
        super().__init__(message, code=code, status=status)
        self.retriable = retriable
        self.agent_id: str | None = None
        """The agent that failed, once the dispatcher knows it."""


class AgentLostError(UpstreamError):
    """The agent's connection went away while the request was with it."""

    def __init__(self, message: str = "the agent serving this request disconnected") -> None:
        super().__init__(message, retriable=True)


class UpstreamTimeoutError(HubError):
    code = "upstream_timeout"
    status = 504
