"""The dashboard's pages: one shell per page, filled and kept live by its script from the JSON API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from potluck.api.browser import csrf_token, session_secret
from potluck.api.context import HUB
from potluck.api.web.render import TEMPLATES, environment, html, load_static, redirect, secured
from potluck.hub.accounts import User
from potluck.hub.errors import AuthError
from potluck.protocol.accounts import UserRole


@dataclass(frozen=True, slots=True)
class Page:
    slug: str
    title: str
    admin_only: bool = False


PAGES = (
    Page("now", "Now"),
    Page("models", "Models"),
    Page("machines", "Machines"),
    Page("requests", "Requests"),
    Page("usage", "Usage & credits"),
    Page("keys", "Keys"),
    Page("groups", "Groups"),
    Page("add-gpu", "Add a GPU"),
    Page("admin", "Admin", admin_only=True),
)
BY_SLUG = {page.slug: page for page in PAGES}
HOME = "/ui/now"
STATIC = web.AppKey("potluck_static", dict[str, tuple[bytes, str]])


async def viewer(request: web.Request) -> tuple[User, str] | None:
    """The user signed in with this browser and their session secret; None without a live session."""
    secret = session_secret(request)
    if secret is None:
        return None
    try:
        return await request.app[HUB].accounts.authenticate(secret), secret
    except AuthError:
        return None


def hub_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def to_login(request: web.Request) -> web.Response:
    return redirect("/login?next=" + quote(request.path_qs, safe="/"))


def base_context(request: web.Request, user: User, secret: str) -> dict[str, Any]:
    return {
        "user": user,
        "is_admin": user.role == UserRole.ADMIN,
        "csrf": csrf_token(secret),
        "pages": [p for p in PAGES if not p.admin_only or user.role == UserRole.ADMIN],
        "hub": hub_origin(request),
    }


async def home(request: web.Request) -> web.Response:
    return redirect(HOME)


async def page(request: web.Request) -> web.Response:
    signed_in = await viewer(request)
    if signed_in is None:
        return to_login(request)
    user, secret = signed_in
    found = BY_SLUG.get(request.match_info["page"])
    context = base_context(request, user, secret)
    if found is None or (found.admin_only and user.role != UserRole.ADMIN):
        return html(request, "message.html", 404, title="Not found", message="There is no such page.", **context)
    return html(request, f"pages/{found.slug}.html", page=found, title=found.title, **context)


async def static(request: web.Request) -> web.StreamResponse:
    asset = request.app[STATIC].get(request.match_info["name"])
    if asset is None:
        raise web.HTTPNotFound()
    body, kind = asset
    response = web.Response(body=body, content_type=kind, headers={"Cache-Control": "no-cache"})
    return secured(response)


def add_routes(app: web.Application) -> None:
    app[TEMPLATES] = environment()
    app[STATIC] = load_static()
    for path in ("/", "/dashboard", "/ui"):
        app.router.add_get(path, home)
    app.router.add_get("/ui/{page}", page)
    app.router.add_get("/static/{name}", static)
