"""The dashboard: server-rendered pages (Jinja2, autoescaped) and their small scripts, served by the hub.

Pages read the JSON API with the browser's session cookie (`potluck.api.browser`); templates and static
files ship inside the package. Every page answer carries a strict Content-Security-Policy.
"""

from __future__ import annotations

from aiohttp import web

from potluck.api.web import account, pages


def add_routes(app: web.Application) -> None:
    pages.add_routes(app)
    account.add_routes(app)
