"""Signing in and out, signing up through an invite link (``/join/<code>``) or ``/signup``, changing a password.

These are plain HTML forms (they work without scripts). Forms shown before signing in carry a
double-submit token; those shown after, the session's CSRF token; all must come from this hub's origin.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from potluck.api.browser import (
    CSRF_FIELD,
    check_csrf,
    check_origin,
    check_presession,
    clear_session,
    csrf_token,
    presession_token,
    set_presession,
    set_session,
)
from potluck.api.context import HUB
from potluck.api.web.pages import HOME, base_context, viewer
from potluck.api.web.render import html, redirect
from potluck.hub.accounts import SESSION_TTL
from potluck.hub.services import HubServices
from potluck.hub.settings import SignupMode
from potluck.hub.signup import Signup
from potluck.protocol.errors import PotluckError

SESSION_MAX_AGE = int(SESSION_TTL.total_seconds())


def signup_of(hub: HubServices) -> Signup:
    return Signup(hub.accounts, hub.invites, SignupMode(hub.settings.signup))


def local_path(target: str | None) -> str:
    """Where to go after signing in: a path on this hub only (never ``//elsewhere`` or a full URL)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return HOME


async def _form(request: web.Request) -> dict[str, str]:
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


def _anonymous_form(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    token, fresh = presession_token(request)
    response = html(request, template, status, csrf=token, **context)
    if fresh:
        set_presession(response, request, token)
    return response


def _signup_context(hub: HubServices) -> dict[str, Any]:
    return {"open_signup": signup_of(hub).open}


async def login_page(request: web.Request) -> web.Response:
    if await viewer(request) is not None:
        return redirect(local_path(request.query.get("next")))
    return _anonymous_form(
        request,
        "login.html",
        next=local_path(request.query.get("next")),
        error=None,
        **_signup_context(request.app[HUB]),
    )


async def login(request: web.Request) -> web.Response:
    form = await _form(request)
    target = local_path(form.get("next"))
    hub = request.app[HUB]
    try:
        check_presession(request, form.get(CSRF_FIELD))
        secret, _ = await hub.accounts.login(form.get("username", ""), form.get("password", ""), address=request.remote)
    except PotluckError as exc:
        return _anonymous_form(
            request, "login.html", exc.status, next=target, error=exc.message, **_signup_context(hub)
        )
    response = redirect(target)
    set_session(response, request, secret, SESSION_MAX_AGE)
    return response


async def logout(request: web.Request) -> web.Response:
    signed_in = await viewer(request)
    if signed_in is not None:
        _, secret = signed_in
        form = await _form(request)
        check_origin(request)
        check_csrf(csrf_token(secret), form.get(CSRF_FIELD))
        await request.app[HUB].accounts.logout(secret)
    response = redirect("/login")
    clear_session(response, request)
    return response


async def join_page(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    code = request.match_info["code"]
    signup = signup_of(hub)
    try:
        group = await signup.group_of(code)
    except PotluckError as exc:
        return html(request, "message.html", 404, title="Invite not valid", message=exc.message, user=None, pages=[])
    signed_in = await viewer(request)
    if signed_in is not None:
        user, secret = signed_in
        return html(request, "join.html", group=group, code=code, error=None, **base_context(request, user, secret))
    return _anonymous_form(
        request,
        "join.html",
        group=group,
        code=code,
        error=None,
        user=None,
        pages=[],
        can_sign_up=signup.invite_creates_accounts,
    )


async def join(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    code = request.match_info["code"]
    form = await _form(request)
    signup = signup_of(hub)
    signed_in = await viewer(request)
    if signed_in is not None:
        user, secret = signed_in
        check_origin(request)
        check_csrf(csrf_token(secret), form.get(CSRF_FIELD))
        try:
            await hub.invites.redeem(user, code)
        except PotluckError as exc:
            group = await _group_or_none(signup, code)
            return html(
                request,
                "join.html",
                exc.status,
                group=group,
                code=code,
                error=exc.message,
                **base_context(request, user, secret),
            )
        return redirect("/ui/groups")
    try:
        check_presession(request, form.get(CSRF_FIELD))
        new_user, _ = await signup.join(form.get("username", ""), form.get("password", ""), code)
    except PotluckError as exc:
        group = await _group_or_none(signup, code)
        return _anonymous_form(
            request,
            "join.html",
            exc.status,
            group=group,
            code=code,
            error=exc.message,
            user=None,
            pages=[],
            can_sign_up=signup.invite_creates_accounts,
        )
    secret, _ = await hub.accounts.start_session(new_user)
    response = redirect(HOME)
    set_session(response, request, secret, SESSION_MAX_AGE)
    return response


async def _group_or_none(signup: Signup, code: str) -> str | None:
    try:
        return await signup.group_of(code)
    except PotluckError:
        return None


async def signup_page(request: web.Request) -> web.Response:
    if not signup_of(request.app[HUB]).open:
        return html(request, "message.html", 404, title="No sign-up here", message=CLOSED, user=None, pages=[])
    return _anonymous_form(request, "signup.html", error=None, user=None, pages=[])


CLOSED = "This hub takes new accounts only through a group's invite link."


async def signup(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    form = await _form(request)
    try:
        check_presession(request, form.get(CSRF_FIELD))
        user = await signup_of(hub).sign_up(form.get("username", ""), form.get("password", ""))
    except PotluckError as exc:
        return _anonymous_form(request, "signup.html", exc.status, error=exc.message, user=None, pages=[])
    secret, _ = await hub.accounts.start_session(user)
    response = redirect(HOME)
    set_session(response, request, secret, SESSION_MAX_AGE)
    return response


async def password_page(request: web.Request) -> web.Response:
    signed_in = await viewer(request)
    if signed_in is None:
        return redirect("/login?next=/password")
    user, secret = signed_in
    return html(
        request, "password.html", error=None, done=False, title="Password", **base_context(request, user, secret)
    )


async def change_password(request: web.Request) -> web.Response:
    signed_in = await viewer(request)
    if signed_in is None:
        return redirect("/login?next=/password")
    user, secret = signed_in
    form = await _form(request)
    check_origin(request)
    check_csrf(csrf_token(secret), form.get(CSRF_FIELD))
    context = base_context(request, user, secret)
    try:
        await request.app[HUB].accounts.change_password(
            user, form.get("current", ""), form.get("password", ""), keep_session=secret
        )
    except PotluckError as exc:
        return html(request, "password.html", exc.status, error=exc.message, done=False, title="Password", **context)
    return html(request, "password.html", error=None, done=True, title="Password", **context)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/join/{code}", join_page)
    app.router.add_post("/join/{code}", join)
    app.router.add_get("/signup", signup_page)
    app.router.add_post("/signup", signup)
    app.router.add_get("/password", password_page)
    app.router.add_post("/password", change_password)
