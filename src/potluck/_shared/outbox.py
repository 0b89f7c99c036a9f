"""Coalescing writer: frames queued in the same event-loop turn go out as one message.

Under load many streams produce frames at once; joining them into one WebSocket message saves
a syscall and a frame header per chunk. An idle connection costs no task: a flush task exists
only while there is something to send.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1 << 20
"""Coalescing stops here, so one message never holds more than this plus one frame."""


class Outbox:
    __slots__ = ("_closed", "_flusher", "_loop", "_on_error", "_pending", "_pending_bytes", "_send")

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._send = send
        self._on_error = on_error
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        # Looked up once: asyncio.get_running_loop() costs a getpid() system call on every call.
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def put(self, frame: bytes) -> None:
        if self._closed:
            return
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        if self._flusher is None:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            self._flusher = loop.create_task(self._flush())

    def _take_batch(self) -> list[bytes]:
        """Frames from the head of the queue, up to MAX_MESSAGE_BYTES together (a bigger frame goes alone)."""
        pending = self._pending
        if self._pending_bytes <= MAX_MESSAGE_BYTES:
            self._pending, self._pending_bytes = [], 0
            return pending
        size = 0
        count = 0
        for frame in pending:
            if count and size + len(frame) > MAX_MESSAGE_BYTES:
                break
            size += len(frame)
            count += 1
        batch, self._pending = pending[:count], pending[count:]
        self._pending_bytes -= size
        return batch

    async def _flush(self) -> None:
        try:
            # The task's first step runs after every callback already scheduled in this loop turn,
            # so the frames they produce join the first batch without an extra yield.
            while self._pending and not self._closed:
                batch = self._take_batch()
                await self._send(batch[0] if len(batch) == 1 else b"".join(batch))
        except Exception as exc:  # noqa: BLE001 - any send failure means the connection is gone
            self._closed = True
            self._pending.clear()
            self._on_error(exc)
        finally:
            self._flusher = None

    def close(self) -> None:
        self._closed = True
        self._pending.clear()
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None

    async def drain(self, timeout: float) -> None:
        """Wait until everything queued has been handed to the transport (or the timeout)."""
        flusher = self._flusher
        if flusher is not None:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(flusher)
            except (TimeoutError, asyncio.CancelledError):
                log.debug("outbox drain gave up")
