"""The hub hands out its own agent: ``GET /install.sh`` and the wheel it installs, ``GET /download/<wheel>``.

The script is package data (``install.sh`` beside this module) with the hub's URL and the wheel's name
baked in. The URL is ``--public-url`` when set, else the scheme and ``Host`` of the request: that Host
goes back only to the client that sent it, is checked to be a bare host and port (so nothing can break
out of the shell quoting), and the answer is never cached. The hub fetches nothing and redirects nowhere.
"""

from __future__ import annotations

import asyncio
import re
from importlib.resources import files

from aiohttp import web

from potluck.hub.errors import InvalidRequestError
from potluck.hub.settings import PUBLIC_URL, HubSettings
from potluck.hub.wheel import Wheel, WheelError, read_wheel, running_wheel

SCRIPT = files("potluck.api").joinpath("install.sh")
HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")
NO_STORE = {"Cache-Control": "no-store"}


class AgentWheel:
    """The wheel served at /download/: read or packed once, on the first request, then kept in memory."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self._wheel: Wheel | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Wheel:
        async with self._lock:
            if self._wheel is None:
                path = self.settings.agent_wheel
                # Packing reads and compresses a few hundred files: off the event loop.
                self._wheel = await asyncio.to_thread(running_wheel if path is None else lambda: read_wheel(path))
            return self._wheel


AGENT_WHEEL = web.AppKey("agent_wheel", AgentWheel)


def hub_url(request: web.Request, settings: HubSettings) -> str:
    """The URL the script joins: ``--public-url``, else this request's scheme and checked Host."""
    if settings.public_url is not None:
        return settings.public_url.rstrip("/")
    host = request.headers.get("Host", "")
    if not HOST.fullmatch(host):
        raise InvalidRequestError("the Host header must be a plain host[:port] (or set --public-url on the hub)")
    url = f"{request.scheme}://{host}"
    if not PUBLIC_URL.fullmatch(url):  # pragma: no cover - HOST and the two schemes make it one
        raise InvalidRequestError("cannot name this hub in a script")
    return url


async def install_script(request: web.Request) -> web.Response:
    url = hub_url(request, request.app[AGENT_WHEEL].settings)
    wheel = await _wheel(request)
    text = SCRIPT.read_text().replace("@@HUB_URL@@", url).replace("@@WHEEL@@", wheel.filename)
    return web.Response(text=text, content_type="text/x-shellscript", headers=NO_STORE)


async def download(request: web.Request) -> web.Response:
    wheel = await _wheel(request)
    name = request.match_info["filename"]
    if name == wheel.filename:
        return web.Response(
            body=wheel.data,
            content_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{wheel.filename}"', **NO_STORE},
        )
    if name == wheel.filename + ".sha256":
        return web.Response(text=wheel.sha256_line, content_type="text/plain", headers=NO_STORE)
    raise web.HTTPNotFound(reason=f"Not Found: this hub serves {wheel.filename}")


async def _wheel(request: web.Request) -> Wheel:
    try:
        return await request.app[AGENT_WHEEL].get()
    except WheelError as exc:
        raise web.HTTPServiceUnavailable(reason=str(exc)) from exc


def add_routes(app: web.Application, settings: HubSettings) -> None:
    app[AGENT_WHEEL] = AgentWheel(settings)
    app.router.add_get("/install.sh", install_script)
    app.router.add_get("/download/{filename}", download)
