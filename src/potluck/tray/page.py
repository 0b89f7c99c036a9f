"""The tray's local status page, on 127.0.0.1 only: what the agent serves, its GPUs, today's requests.

Served from the daemon's own loop and read through `AgentDaemon.status()`. No script at all: the page
reloads itself every few seconds, and Pause/Resume are forms. The forms carry a token made at start
(a browser on another site cannot read it), the Host header must name this address (no DNS rebinding),
every string that came from a backend is escaped, and the CSP allows only the page's own inline style.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import html
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
from aiohttp import web

from potluck.agent.status import AgentStatus, Link
from potluck.tray.earnings import Earnings, credits_text

_STYLE = (
    "body{font:15px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:left}.ok{color:#1a7f37}.bad{color:#c62828}"
    ".hot{font-weight:600}.cold{color:#777}form{display:inline}button{font-size:1em;padding:.3em 1em}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
REFRESH_S = 5

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def state_line(status: AgentStatus) -> str:
    """The agent's state in a few words, as the tray shows it: connected, serving N, paused or offline."""
    if status.link is not Link.CONNECTED:
        return "offline" if status.link is Link.OFFLINE else "connecting"
    if status.paused:
        return f"paused, finishing {status.in_flight}" if status.in_flight else "paused"
    if status.in_flight:
        return f"serving {status.in_flight} request{'s' if status.in_flight != 1 else ''}"
    return "connected"


class StatusPage:
    def __init__(
        self,
        status: Callable[[], AgentStatus],
        set_paused: Callable[[bool], None],
        *,
        dashboard_url: str,
        port: int = 0,
        earnings: Earnings | None = None,
    ) -> None:
        self._status = status
        self._set_paused = set_paused
        self._dashboard_url = dashboard_url
        self._port = port
        self._earnings = earnings
        self._token = secrets.token_urlsafe(24)
        self._hosts: frozenset[str] = frozenset()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """Listen on 127.0.0.1 (the port given, or a free one); yields the page's URL."""
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._page)
        app.router.add_get("/status.json", self._json)
        app.router.add_post("/pause", self._pause)
        app.router.add_post("/resume", self._resume)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self._port))
            port = sock.getsockname()[1]
            await web.SockSite(runner, sock).start()
            self._hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})
            yield f"http://127.0.0.1:{port}/"
        finally:
            await runner.cleanup()

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.host not in self._hosts:
            return web.Response(status=421, text="this page answers only at its own address\n")
        response = await handler(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    async def _json(self, request: web.Request) -> web.Response:
        return web.Response(body=msgspec.json.encode(self._status()), content_type="application/json")

    async def _pause(self, request: web.Request) -> web.StreamResponse:
        return await self._control(request, paused=True)

    async def _resume(self, request: web.Request) -> web.StreamResponse:
        return await self._control(request, paused=False)

    async def _control(self, request: web.Request, *, paused: bool) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and origin.removeprefix("http://") not in self._hosts:
            return web.Response(status=403, text="cross-site request refused\n")
        form = await request.post()
        token = form.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self._token.encode()):
            return web.Response(status=403, text="missing or wrong form token: reload the page\n")
        self._set_paused(paused)
        raise web.HTTPSeeOther("/")

    async def _page(self, request: web.Request) -> web.Response:
        status = self._status()
        earned = None if self._earnings is None else await self._earnings.today(status.agent_id, status.day)
        return web.Response(text=self.render(status, earned), content_type="text/html")

    def render(self, status: AgentStatus, earned_micro: int | None = None) -> str:
        e = html.escape
        state = state_line(status)
        control = "resume" if status.paused else "pause"
        parts = [
            "<!doctype html><html lang=en><head><meta charset=utf-8>",
            f'<meta http-equiv="refresh" content="{REFRESH_S}">',
            f"<title>Potluck agent: {e(state)}</title><style>{_STYLE}</style></head><body>",
            f"<h1>Potluck agent: <span class={'ok' if state != 'offline' else 'bad'}>{e(state)}</span></h1>",
            f'<p>Hub <a href="{e(self._dashboard_url)}">{e(status.hub_url)}</a>',
            f", agent {e(status.agent_id)}" if status.agent_id else "",
            f"; {status.in_flight} of {status.max_concurrency} slots busy.</p>",
            f"<p class=bad>Last error: {e(status.last_error)}</p>" if status.last_error else "",
            f'<form method=post action="/{control}"><input type=hidden name=token value="{e(self._token)}">',
            f"<button type=submit>{control.capitalize()}</button></form>",
            "<h2>Today (UTC)</h2><table>",
            f"<tr><th>Requests</th><td>{status.requests_today} ({status.failed_today} failed)</td></tr>",
            "<tr><th>Tokens in / out</th>",
            f"<td>{status.prompt_tokens_today} / {status.completion_tokens_today}</td></tr>",
            f"<tr><th>Earned</th><td id=earned>{self._earned(earned_micro)}</td></tr>",
            "</table>",
            *self._backends(status),
            *self._gpus(status),
            "</body></html>",
        ]
        return "".join(parts)

    def _earned(self, micro: int | None) -> str:
        if micro is not None:
            return f"{credits_text(micro)} credits"
        link = f'<a href="{html.escape(self._dashboard_url)}">the hub\'s dashboard</a>'
        if self._earnings is None:
            return f"on {link} (or `potluck login` to that hub, and the tray shows it here)"
        return f"not available from the hub just now; see {link}"

    @staticmethod
    def _backends(status: AgentStatus) -> list[str]:
        e = html.escape
        rows = ["<h2>Backends</h2>"]
        if not status.backends:
            return [*rows, "<p class=bad>No backend found: start a local LLM server.</p>"]
        rows.append("<table><tr><th>URL</th><th>Kind</th><th>Answers</th><th>Models</th></tr>")
        for b in status.backends:
            models = ", ".join(
                f"<span class={'hot' if m.hot else 'cold'}>{e(m.id)} ({'hot' if m.hot else 'cold'})</span>"
                for m in sorted(b.models, key=lambda m: (not m.hot, m.id))
            )
            answers = "<span class=ok>yes</span>" if b.healthy else "<span class=bad>no</span>"
            version = f" {e(b.version)}" if b.version else ""
            rows.append(f"<tr><td>{e(b.url)}</td><td>{e(b.kind)}{version}</td><td>{answers}</td><td>{models}</td></tr>")
        rows.append("</table>")
        return rows

    @staticmethod
    def _gpus(status: AgentStatus) -> list[str]:
        e = html.escape
        rows = ["<h2>GPUs</h2>"]
        if status.host is None:
            return [*rows, "<p>Not sampled yet.</p>"]
        if not status.host.gpus:
            return [*rows, f"<p>No GPU visible (CPU {status.host.cpu_pct:.0f} %).</p>"]
        rows.append("<table><tr><th>GPU</th><th>Use</th><th>Memory</th><th>Temperature</th></tr>")
        for g in status.host.gpus:
            memory = f"{g.memory_used_bytes / (1 << 30):.1f} / {g.memory_total_bytes / (1 << 30):.1f} GiB"
            temperature = f"{g.temperature_c:.0f} °C" if g.temperature_c is not None else "—"
            rows.append(
                f"<tr><td>{e(g.name)}</td><td>{g.utilization_pct:.0f} %</td>"
                f"<td>{memory}</td><td>{temperature}</td></tr>"
            )
        rows.append("</table>")
        return rows
