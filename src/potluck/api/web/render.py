"""Rendering a page: the template environment (autoescape always on) and the headers every page answer carries."""

from __future__ import annotations

from importlib import resources
from typing import Any

import jinja2
from aiohttp import web

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

TEMPLATES = web.AppKey("potluck_templates", jinja2.Environment)


def environment() -> jinja2.Environment:
    # autoescape=True for every template, whatever its name: agent-supplied strings reach them.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("potluck.api.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def secured(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.update(SECURITY_HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def html(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    body = request.app[TEMPLATES].get_template(template).render(**context)
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    secured(response)
    return response


def redirect(location: str) -> web.Response:
    response = web.Response(status=303, headers={"Location": location})
    secured(response)
    return response


STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def load_static() -> dict[str, tuple[bytes, str]]:
    """Every shipped asset by file name, read once: no path from a request ever reaches the file system."""
    assets: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files("potluck.api.web").joinpath("static").iterdir():
        kind = STATIC_TYPES.get("." + entry.name.rsplit(".", 1)[-1])
        if entry.is_file() and kind is not None:
            assets[entry.name] = (entry.read_bytes(), kind)
    return assets
