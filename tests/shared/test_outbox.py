"""The coalescing writer: one message per loop turn, capped in size, no task while idle."""

from __future__ import annotations

import asyncio

from potluck._shared.outbox import MAX_MESSAGE_BYTES, Outbox


class Sink:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.sent = asyncio.Event()

    async def send(self, data: bytes) -> None:
        self.messages.append(data)
        self.sent.set()


def _no_error(exc: BaseException) -> None:
    raise AssertionError(f"unexpected send error {exc!r}")


async def test_frames_put_in_one_turn_leave_as_one_message() -> None:
    sink = Sink()
    outbox = Outbox(sink.send, _no_error)
    for i in range(5):
        outbox.put(bytes([i]))
    await outbox.drain(1)
    assert sink.messages == [b"\x00\x01\x02\x03\x04"]


async def test_batches_are_capped_in_size_and_keep_order() -> None:
    sink = Sink()
    outbox = Outbox(sink.send, _no_error)
    frame = b"x" * (MAX_MESSAGE_BYTES // 3 + 1)
    big = b"y" * (MAX_MESSAGE_BYTES + 10)
    for _ in range(5):
        outbox.put(frame)
    outbox.put(big)
    outbox.put(b"z")
    await outbox.drain(1)
    assert b"".join(sink.messages) == frame * 5 + big + b"z"
    assert all(len(m) <= MAX_MESSAGE_BYTES or m == big for m in sink.messages)
    assert big in sink.messages, "a frame larger than the cap goes alone"
    assert outbox.pending_bytes == 0


async def test_send_failure_closes_the_outbox_and_reports_once() -> None:
    errors: list[BaseException] = []

    async def broken(_data: bytes) -> None:
        raise ConnectionResetError("gone")

    outbox = Outbox(broken, errors.append)
    outbox.put(b"a")
    await outbox.drain(1)
    outbox.put(b"b")
    await outbox.drain(1)  # waits for a flush, had the closed outbox started one
    assert len(errors) == 1
    assert isinstance(errors[0], ConnectionResetError)


async def test_closed_outbox_drops_frames() -> None:
    sink = Sink()
    outbox = Outbox(sink.send, _no_error)
    outbox.close()
    outbox.put(b"late")
    await outbox.drain(1)
    assert sink.messages == []
