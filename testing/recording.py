"""What every fake server records and how a test waits on it: `RequestRecord` and `Recorder`.

A `Recorder` holds the `records`, a condition and the async waiters; the fake calls `_changed()` after every change
a waiter may look at, and tests block on `wait_for` (a thread) or `wait_for_async` (an event loop), from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypeVar

import msgspec
from aiohttp import web


@dataclass(eq=False)
class RequestRecord:
    """One request the fake received, updated while it is answered (from the server's thread)."""

    id: int
    method: str
    path: str
    headers: dict[str, str]
    """Request headers, names lower-cased (a repeated header keeps its last value)."""
    body: bytes
    json: dict[str, Any] | None
    """The body parsed, when it is a JSON object."""
    started_at: float
    """`time.monotonic()` when the request arrived."""
    status: int | None = None
    """The HTTP status answered, once the response started."""
    completed: bool = False
    """The whole response was written to the connection."""
    disconnected: bool = False
    """The client went away before the response was complete."""
    disconnected_at: float | None = None
    aborted: bool = False
    """The fake closed the connection on purpose (`fail_after`)."""

    @classmethod
    def of(cls, rec_id: int, request: web.Request, body: bytes) -> Self:
        """A record of `request` (with its body, already read), arriving now."""
        parsed: Any = None
        if body:
            with contextlib.suppress(msgspec.DecodeError):
                parsed = msgspec.json.decode(body)
        return cls(
            id=rec_id,
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            json=parsed if isinstance(parsed, dict) else None,
            started_at=time.monotonic(),
        )

    def mark_completed(self) -> None:
        self.completed = True

    def mark_disconnected(self) -> None:
        if not self.completed and not self.disconnected:
            self.disconnected_at = time.monotonic()
            self.disconnected = True


_R = TypeVar("_R", bound=RequestRecord)


@dataclass(slots=True, eq=False)
class _AsyncWaiter:
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)


class Recorder(Generic[_R]):
    """The records of a fake and the waits on its changes; `_lock` (re-entrant) guards the fake's state."""

    def __init__(self) -> None:
        self.records: list[_R] = []
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._async_waiters: set[_AsyncWaiter] = set()

    def wait_for(self, predicate: Callable[[], object], timeout: float) -> bool:
        """Block until `predicate()` is true (re-checked on every change); False after `timeout` seconds.

        Do not call it from the event loop the fake runs in (use `wait_for_async` there).
        """
        with self._cond:
            return bool(self._cond.wait_for(predicate, timeout))

    async def wait_for_async(self, predicate: Callable[[], object], timeout: float) -> bool:
        """Wait, without blocking the caller's event loop, until `predicate()` is true; False on timeout."""
        waiter = _AsyncWaiter(asyncio.get_running_loop())
        with self._cond:
            self._async_waiters.add(waiter)
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await waiter.event.wait()
                    waiter.event.clear()
        except TimeoutError:
            return bool(predicate())
        finally:
            with self._cond:
                self._async_waiters.discard(waiter)
        return True

    def clear_records(self) -> None:
        """Forget the recorded requests."""
        with self._cond:
            self.records.clear()
            self._cond.notify_all()

    def _changed(self) -> None:
        # Called after every change a waiter may look at, from any thread.
        with self._cond:
            self._cond.notify_all()
            waiters = list(self._async_waiters)
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for waiter in waiters:
            if waiter.loop is running:
                waiter.event.set()
            else:
                with contextlib.suppress(RuntimeError):  # that loop is closed: its waiter is gone
                    waiter.loop.call_soon_threadsafe(waiter.event.set)
