"""Browser sessions: the session cookie, and the CSRF checks every state change made with it must pass.

A signed-in browser holds the same kind of session token that ``POST /api/login`` returns (stored only
as a hash), in an HttpOnly, SameSite=Strict cookie (Secure over TLS). A request that changes state with
that cookie must also come from the hub's own origin (``Origin``, else ``Referer``) and carry the
session's CSRF token: ``X-CSRF-Token`` from the pages' scripts, a ``csrf`` form field from their forms.
The token is an HMAC of the session secret, so a page can be given it while the secret stays HttpOnly,
and it dies with the session. Before signing in (login and signup forms) a random token in a second
cookie is compared with the form's (double submit). Bearer tokens are untouched by all of this.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from aiohttp import web

from potluck.api.context import HUB
from potluck.api.payloads import bearer
from potluck.hub.errors import PermissionDeniedError

SESSION_COOKIE = "potluck-session"
PRESESSION_COOKIE = "potluck-csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(session_secret: str) -> str:
    """The CSRF token of a session: derived from its secret, so it needs no storage and ends with it."""
    return hmac.new(session_secret.encode(), b"potluck csrf token", hashlib.sha256).hexdigest()


def session_secret(request: web.Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE) or None


def check_origin(request: web.Request) -> None:
    """A state change must come from a page of this hub: its ``Origin`` (or ``Referer``) names this host."""
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    if not source or source == "null" or urlsplit(source).netloc != request.host:
        raise PermissionDeniedError("Cross-origin request refused: it must come from this hub's own pages")


def check_csrf(expected: str, sent: str | None) -> None:
    if not sent or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise PermissionDeniedError(f"Missing or wrong CSRF token: send the page's token as `{CSRF_HEADER}`")


def credential(request: web.Request) -> str | None:
    """The user or admin token a request authenticates with: its bearer token, else its session cookie.

    With the cookie, a request that changes state must pass the origin and CSRF checks (403 otherwise).
    """
    token = bearer(request)
    if token is not None:
        return token
    secret = session_secret(request)
    if secret is not None and request.method not in SAFE_METHODS:
        check_origin(request)
        check_csrf(csrf_token(secret), request.headers.get(CSRF_HEADER))
    return secret


def _secure(request: web.Request) -> bool:
    """Cookies are Secure over TLS, and behind a TLS-terminating proxy that `--public-url` names as https."""
    public_url = request.app[HUB].settings.public_url
    return request.secure or (public_url is not None and public_url.startswith("https://"))


def set_session(response: web.StreamResponse, request: web.Request, secret: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )


def clear_session(response: web.StreamResponse, request: web.Request) -> None:
    response.del_cookie(SESSION_COOKIE, path="/", secure=_secure(request), httponly=True, samesite="Strict")


def presession_token(request: web.Request) -> tuple[str, bool]:
    """The double-submit token for a form shown before signing in, and whether it is new (to set as a cookie)."""
    token = request.cookies.get(PRESESSION_COOKIE)
    return (token, False) if token else (secrets.token_urlsafe(32), True)


def set_presession(response: web.StreamResponse, request: web.Request, token: str) -> None:
    response.set_cookie(PRESESSION_COOKIE, token, path="/", httponly=True, samesite="Strict", secure=_secure(request))


def check_presession(request: web.Request, sent: str | None) -> None:
    """A login or signup form: from this hub, carrying the token its cookie holds."""
    check_origin(request)
    check_csrf(request.cookies.get(PRESESSION_COOKIE) or "", sent)
