"""CORS for the client API (``/v1/*``), off unless ``--cors-origin`` names browser origins.

Preflights get 204 with what the browser asked for (methods, headers) when the origin is allowed;
answers, streams included, carry ``Access-Control-Allow-Origin`` and expose the headers a client
reads (request id, rate limits, Retry-After). Other routes (admin, accounts) never answer CORS.
"""

from __future__ import annotations

from aiohttp import web

from potluck.hub.settings import HubSettings

_PREFIX = "/v1/"
_METHODS = "GET, POST, OPTIONS"
_EXPOSED = ", ".join(
    (
        "x-request-id",
        "request-id",
        "retry-after",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "x-potluck-queue-position",
        "x-potluck-queue-wait-ms",
    )
)
_MAX_AGE = "600"


class Cors:
    def __init__(self, origins: tuple[str, ...]) -> None:
        self._any = "*" in origins
        self._origins = frozenset(o.rstrip("/") for o in origins)

    def allowed(self, origin: str | None) -> str | None:
        """The value of Access-Control-Allow-Origin for this origin, or None if it may not call."""
        if origin is None:
            return None
        if self._any:
            return "*"
        return origin if origin in self._origins else None

    async def preflight(self, request: web.Request) -> web.Response:
        allow = self.allowed(request.headers.get("Origin"))
        if allow is None or "Access-Control-Request-Method" not in request.headers:
            # Not a preflight from an allowed origin: the browser gets no permission.
            return web.Response(status=403, headers={"Vary": "Origin"})
        headers = {
            "Access-Control-Allow-Origin": allow,
            "Access-Control-Allow-Methods": _METHODS,
            "Access-Control-Max-Age": _MAX_AGE,
            "Vary": "Origin",
        }
        asked = request.headers.get("Access-Control-Request-Headers")
        if asked:
            headers["Access-Control-Allow-Headers"] = asked
        return web.Response(status=204, headers=headers)

    def answer_headers(self, origin: str | None) -> list[tuple[str, str]]:
        """The CORS headers of an answer on /v1/* to a request from ``origin`` (none if it may not call)."""
        allow = self.allowed(origin)
        if allow is None:
            return []
        return [("Access-Control-Allow-Origin", allow), ("Access-Control-Expose-Headers", _EXPOSED), ("Vary", "Origin")]

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith(_PREFIX):
            for name, value in self.answer_headers(request.headers.get("Origin")):
                if name == "Vary":
                    response.headers.add(name, value)  # next to any Vary the answer has
                else:
                    response.headers[name] = value


def cors_of(settings: HubSettings) -> Cors | None:
    """The hub's CORS policy, or None when no origin is configured (CORS off)."""
    return Cors(settings.cors_origins) if settings.cors_origins else None


def add_cors(app: web.Application, settings: HubSettings) -> None:
    """Answer preflights on /v1/* and add CORS headers to its answers, when origins are configured."""
    cors = cors_of(settings)
    if cors is None:
        return
    app.router.add_route("OPTIONS", "/v1/{tail:.*}", cors.preflight)
    app.on_response_prepare.append(cors.on_prepare)
