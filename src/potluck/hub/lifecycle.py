"""The hub's life: one shutdown flag, and every background loop owned by one TaskGroup.

A background loop that crashes must not die silently (a dead ledger writer would lose money without a
word): the TaskGroup cancels the other loops, `Lifecycle.crashed` holds the error, and `stopped` is
set, so `serve` stops the process loudly with a non-zero exit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

Loop = Callable[[], Coroutine[Any, Any, None]]


class Lifecycle:
    def __init__(self) -> None:
        self.closing = False
        """The hub is shutting down: new requests get 503 and new agents are turned away. The one flag."""
        self.crashed: BaseException | None = None
        """The error that ended a background loop, if one did."""
        self.stopped = asyncio.Event()
        """Set when a background loop crashed: the process must stop."""
        self._task: asyncio.Task[None] | None = None

    def start(self, loops: dict[str, Loop]) -> None:
        """Run the loops (name -> coroutine function) until `close`, all in one TaskGroup."""
        if self._task is not None:
            raise RuntimeError("the background loops are already running")
        self._task = asyncio.get_running_loop().create_task(self._supervise(loops), name="hub-loops")

    async def _supervise(self, loops: dict[str, Loop]) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for name, loop in loops.items():
                    group.create_task(loop(), name=name)
        except Exception as exc:  # an ExceptionGroup: one loop crashed and the group cancelled the rest
            self.crashed = exc
            failures = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
            for failure in failures:
                log.critical("a background loop of the hub crashed; stopping", exc_info=failure)
            self.stopped.set()

    async def close(self) -> None:
        """Cancel the loops and wait for them to end."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
