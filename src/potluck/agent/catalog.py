"""What the agent serves: its backends (configured and discovered), their models and their load.

Configured backends (``--backend``) are always kept. With auto-detection on, loopback ports are
re-scanned every ``rescan_interval``: a backend that appears is added, one that stops answering a
scan is dropped, without reconnecting to the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator

import aiohttp

from potluck.agent.backends import Backend, make_backend
from potluck.agent.discovery import scan
from potluck.protocol.agent import BackendInfo, ModelInfo

log = logging.getLogger(__name__)


class Catalog:
    def __init__(self, configured: Iterable[Backend], *, scan_ports: Iterable[int] = ()) -> None:
        self.configured = list(configured)
        self.discovered: list[Backend] = []
        self.scan_ports = sorted(set(scan_ports))
        self._route: dict[str, Backend] = {}
        self._hot: frozenset[str] = frozenset()
        """Models whose routed backend has them loaded."""
        self._snapshot: tuple[object, ...] = ()
        self.cold_waiters = 0
        """Requests waiting on a model that was cold when they started: refresh faster meanwhile."""
        self.wake = asyncio.Event()
        """Set when the catalog should be read now (a request started waiting on a cold model)."""

    @property
    def backends(self) -> list[Backend]:
        return self.configured + self.discovered

    async def rescan(self, http: aiohttp.ClientSession) -> None:
        """Probe the scan ports; keep backends still there (and their state), add new ones."""
        if not self.scan_ports:
            return
        taken = {b.base for b in self.configured}
        found = [d for d in await scan(http, self.scan_ports) if d.url not in taken]
        known = {(b.base, b.kind): b for b in self.discovered}
        discovered = [known.get((d.url, d.kind)) or make_backend(d.url, d.kind) for d in found]
        added = [b for b in discovered if (b.base, b.kind) not in known]
        gone = [b for b in self.discovered if b not in discovered]
        for backend in added:
            log.info("found %s backend at %s", backend.kind, backend.url)
        for backend in gone:
            log.info("%s backend at %s is gone", backend.kind, backend.url)
        self.discovered = discovered

    async def refresh(self, http: aiohttp.ClientSession) -> bool:
        """Re-read every backend; True if what the agent reports (models, hot/cold, health, native dialects) changed."""
        await asyncio.gather(*(b.refresh(http) for b in self.backends))
        route: dict[str, Backend] = {}
        for backend in self.backends:
            for model in backend.models:
                current = route.get(model.id)
                # Prefer a backend that has the model loaded already.
                if current is None or (model.hot and not _hot_on(current, model.id)):
                    route[model.id] = backend
        self._route = route
        self._hot = frozenset(model_id for model_id, backend in route.items() if _hot_on(backend, model_id))
        snapshot = (tuple(self.models()), tuple((b.url, b.kind, b.healthy, b.native_paths) for b in self.backends))
        changed = snapshot != self._snapshot
        self._snapshot = snapshot
        return changed

    def backend_for(self, model: str) -> Backend | None:
        return self._route.get(model)

    def waiting_on(self, model: str) -> contextlib.AbstractContextManager[None]:
        """Count a request on a cold model while it runs (the catalog then refreshes faster)."""
        return _NOT_WAITING if model in self._hot else self._waiting_on_cold()

    @contextlib.contextmanager
    def _waiting_on_cold(self) -> Iterator[None]:
        self.cold_waiters += 1
        self.wake.set()
        try:
            yield
        finally:
            self.cold_waiters -= 1

    def is_hot(self, model: str) -> bool:
        return model in self._hot

    def models(self) -> list[ModelInfo]:
        return [
            next(m for m in backend.models if m.id == model_id) for model_id, backend in sorted(self._route.items())
        ]

    def infos(self) -> list[BackendInfo]:
        return [b.info() for b in self.backends]


_NOT_WAITING = contextlib.nullcontext()


def _hot_on(backend: Backend, model_id: str) -> bool:
    return any(m.id == model_id and m.hot for m in backend.models)
