"""The connection guard's phases: a request whose headers are in waits for a busy hub without counting as slow."""

from __future__ import annotations

import asyncio
from typing import Any

from potluck._shared.clock import ManualClock
from potluck.api.guard import ConnectionGuard, Phase, _GuardedProtocol


class _Transport(asyncio.Transport):
    def __init__(self, ip: str) -> None:
        super().__init__()
        self.ip = ip
        self.aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.ip, 50000) if name == "peername" else default

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True


class _App(asyncio.Protocol):
    """aiohttp's protocol stand-in: takes bytes, never answers (a hub too busy to get to them)."""

    def data_received(self, data: bytes) -> None:
        pass


def connect(guard: ConnectionGuard, ip: str = "127.0.0.1") -> tuple[_GuardedProtocol, _Transport]:
    protocol, transport = _GuardedProtocol(guard, _App), _Transport(ip)
    protocol.connection_made(transport)
    return protocol, transport


def test_complete_headers_waiting_for_a_busy_hub_are_neither_slow_nor_capped() -> None:
    clock = ManualClock()
    guard = ConnectionGuard(clock, header_timeout=10, body_timeout=30, max_pending_per_ip=2)
    waiting = [connect(guard) for _ in range(5)]
    for protocol, _ in waiting:
        protocol.data_received(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        protocol.data_received(b"Content-Length: 2\r\n\r\n{}")  # the blank line ends the headers
        assert protocol.conn is not None
        assert protocol.conn.phase is Phase.QUEUED
    trickling = [connect(guard) for _ in range(4)]
    for protocol, _ in trickling:
        protocol.data_received(b"POST /v1/chat/completions HTTP/1.1\r")
    clock.advance(guard.interval)
    guard.sweep()
    assert not any(transport.aborted for _, transport in trickling)  # a second pending is not yet slow
    clock.advance(guard.slow_after - guard.interval)
    guard.sweep()
    assert not any(transport.aborted for _, transport in waiting)
    # Of the four trickling connections, two are over the cap of two: closed.
    assert sum(transport.aborted for _, transport in trickling) == 2
    clock.advance(11)
    guard.sweep()
    assert all(transport.aborted for _, transport in trickling)  # past the header deadline
    assert not any(transport.aborted for _, transport in waiting)


def test_a_blank_line_split_across_reads_still_ends_the_headers() -> None:
    guard = ConnectionGuard(ManualClock(), header_timeout=10, body_timeout=30, max_pending_per_ip=2)
    protocol, _ = connect(guard)
    for piece in (b"GET / HTTP/1.1\r\nHost: x\r", b"\n\r", b"\n"):
        protocol.data_received(piece)
    assert protocol.conn is not None
    assert protocol.conn.phase is Phase.QUEUED
