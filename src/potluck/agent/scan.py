"""`potluck agent scan`: what the agent would serve, found without connecting to any hub."""

from __future__ import annotations

import aiohttp

from potluck.agent.backends import Backend, make_backend
from potluck.agent.catalog import Catalog
from potluck.agent.discovery import WELL_KNOWN_PORTS, fingerprint
from potluck.agent.settings import parse_backend


async def scan_local(
    extra_ports: tuple[int, ...], configured: tuple[str, ...] = (), *, detect: bool = True
) -> list[Backend]:
    """Configured backends (typed by fingerprint) and, when ``detect``, every backend answering on loopback,
    refreshed."""
    async with aiohttp.ClientSession() as http:
        typed = []
        for url, kind in map(parse_backend, configured):
            typed.append(make_backend(url, kind or await fingerprint(http, url.rstrip("/")) or "openai"))
        catalog = Catalog(typed, scan_ports=[*WELL_KNOWN_PORTS, *extra_ports] if detect else [])
        await catalog.rescan(http)
        await catalog.refresh(http)
        return catalog.backends
