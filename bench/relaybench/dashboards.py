"""Open dashboards during a run: ``--dashboards N`` keeps N dashboard event streams open against the hub.

`DASH_TARGET` is Potluck again with N pages open on ``GET /api/dashboard/stream``, run right after the plain
``potluck`` target in every scenario, so the two rows compare the relay with and without them in one run.
The viewer is an admin, who sees every request in the live tail: the most the fan-out can cost.

The pages are a separate process (``python -m bench.relaybench.dashboards URL TOKEN N``): it opens the N
streams, prints ``ready N`` once each has delivered its first event, then reads and discards until stopped.
Its CPU is not the hub's; on a small machine it still competes with it, which the report says.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from bench.relaybench.services import ADMIN_TOKEN, Service, spawn

DASH_TARGET = "potluck+dash"
VIEWER = "bench-viewer"
VIEWER_PASSWORD = "bench-viewer-password"  # noqa: S105 - a throwaway hub on loopback


async def viewer_token(http: aiohttp.ClientSession, hub_url: str) -> str:
    """An admin user's session token (the dashboards' viewer)."""
    account = {"username": VIEWER, "password": VIEWER_PASSWORD, "role": "admin"}
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.post(hub_url + "/admin/users", json=account, headers=headers) as resp:
        if resp.status != 201:
            raise RuntimeError(f"POST /admin/users answered {resp.status}: {await resp.text()}")
    async with http.post(hub_url + "/api/login", json={"username": VIEWER, "password": VIEWER_PASSWORD}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"POST /api/login answered {resp.status}: {await resp.text()}")
        return str((await resp.json())["token"])


async def open_dashboards(hub_url: str, token: str, count: int, log_dir: Path, timeout: float = 60.0) -> Service:
    """Start the pages' process and wait until every stream delivered its first event."""
    argv = [sys.executable, "-m", "bench.relaybench.dashboards", hub_url, token, str(count)]
    service = spawn("dashboards", argv, log_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"ready {count}" in service.log_path.read_text(errors="replace"):
            return service
        if service.proc.poll() is not None:
            raise RuntimeError(f"the dashboards exited with {service.proc.returncode}:\n{service.log_tail()}")
        await asyncio.sleep(0.05)
    service.stop()
    raise TimeoutError(f"{count} dashboards did not open within {timeout:g} s:\n{service.log_tail()}")


async def _page(http: aiohttp.ClientSession, url: str, token: str, opened: asyncio.Queue[None]) -> None:
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"GET {url} answered {resp.status}")
        await resp.content.readuntil(b"\n\n")
        opened.put_nowait(None)
        while await resp.content.readany():
            pass


async def _pages(hub_url: str, token: str, count: int) -> None:
    opened: asyncio.Queue[None] = asyncio.Queue()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http, asyncio.TaskGroup() as group:
        for _ in range(count):
            group.create_task(_page(http, hub_url + "/api/dashboard/stream", token, opened))
        for _ in range(count):
            await opened.get()
        print(f"ready {count}", flush=True)  # the parent waits for this line


def main(argv: Sequence[str] | None = None) -> None:
    hub_url, token, count = (argv if argv is not None else sys.argv[1:])[:3]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_pages(hub_url, token, int(count)))


if __name__ == "__main__":
    main()
