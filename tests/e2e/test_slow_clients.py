"""Slowloris against a real hub process, over real sockets: header and body deadlines, the per-address cap,
and a real client served while hundreds of slow connections are open. Every client is on loopback;
the per-address tests use other loopback addresses (127.0.0.x) as sources."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from testing.processes import HubProcess, http_json

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="needs the whole 127.0.0.0/8 on loopback (Linux)"),
]

HEADER_TIMEOUT = 3.0
BODY_TIMEOUT = 1.0
CAP = 16
SLOW_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 2000
"""A request whose headers never end: sent a byte at a time, it would take minutes."""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    hub = HubProcess(
        tmp_path_factory.mktemp("hub"),
        *("--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT)),
        *("--max-pending-connections-per-ip", str(CAP)),
    )
    yield hub
    hub.stop()


class SlowClient:
    """One connection that sends its bytes slowly and notes when the hub closes it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, opened: float) -> None:
        self.reader, self.writer = reader, writer
        self.opened = opened
        """When the connect began: the hub's deadline runs from its accept, which cannot come earlier (taken
        after the connect returned, on a loaded machine it came after the hub's clock had started)."""
        self.closed = asyncio.get_running_loop().create_future()
        self._tasks = [asyncio.create_task(self._wait_closed())]

    @classmethod
    async def open(cls, hub: HubProcess, source: str = "127.0.0.1") -> SlowClient:
        opened = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", urlsplit(hub.url).port, local_addr=(source, 0))
        return cls(reader, writer, opened)

    def send_slowly(self, data: bytes, pause: float, step: int = 1) -> None:
        self._tasks.append(asyncio.create_task(self._send(data, pause, step)))

    async def _send(self, data: bytes, pause: float, step: int) -> None:
        for start in range(0, len(data), step):
            if self.closed.done():
                return
            try:
                self.writer.write(data[start : start + step])
                await self.writer.drain()
            except ConnectionError:
                return
            await asyncio.sleep(pause)  # the pace of a slow client, not a synchronisation

    async def _wait_closed(self) -> None:
        received = b""
        try:
            while chunk := await self.reader.read(65536):
                received += chunk
        except ConnectionError:
            pass
        self.closed.set_result((time.monotonic() - self.opened, received))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.writer.close()


async def healthz(hub: HubProcess) -> int:
    status, body, _ = await asyncio.to_thread(http_json, "GET", hub.url + "/healthz", None, None, 5)
    assert body == {"status": "ok"}
    return status


async def test_slow_and_silent_headers_are_closed_at_the_deadline(hub: HubProcess) -> None:
    clients = [await SlowClient.open(hub) for _ in range(8)]
    for client in clients[:5]:
        client.send_slowly(SLOW_HEADERS, pause=0.1)
    try:
        async with asyncio.timeout(HEADER_TIMEOUT + 5):
            results = await asyncio.gather(*(c.closed for c in clients))
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    for elapsed, received in results:
        assert elapsed >= HEADER_TIMEOUT
        assert received == b""  # closed, not answered: the request never ended


async def test_a_stalled_body_is_closed_and_a_slow_but_steady_one_is_answered(hub: HubProcess) -> None:
    body = b'{"username":"nobody","password":"wrong password"}'
    head = (
        b"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    stalled, steady = await SlowClient.open(hub), await SlowClient.open(hub)
    stalled.writer.write(head + body[:10])
    steady.writer.write(head)
    # 5 bytes every 0.4 s: more than twice the body deadline in all, never a second without a byte.
    steady.send_slowly(body, pause=0.4, step=5)
    try:
        async with asyncio.timeout(HEADER_TIMEOUT + 5):
            (stalled_after, stalled_got), (steady_after, answer) = await asyncio.gather(stalled.closed, steady.closed)
    finally:
        await asyncio.gather(stalled.close(), steady.close())
    assert stalled_after >= BODY_TIMEOUT
    assert stalled_got == b""
    assert steady_after >= 2 * BODY_TIMEOUT
    assert answer.startswith(b"HTTP/1.1 401 "), answer


async def test_an_address_over_its_cap_is_cut_back_and_refused_while_others_are_served(hub: HubProcess) -> None:
    attackers = [await SlowClient.open(hub, "127.0.0.2") for _ in range(40)]
    for client in attackers:
        client.send_slowly(SLOW_HEADERS, pause=0.2)
    try:
        async with asyncio.timeout(HEADER_TIMEOUT - 0.5):  # well before any header deadline
            done, still_open = await asyncio.wait([c.closed for c in attackers], return_when=asyncio.FIRST_COMPLETED)
            while len(still_open) > CAP:
                more, still_open = await asyncio.wait(still_open, return_when=asyncio.FIRST_COMPLETED)
                done |= more
            late = await SlowClient.open(hub, "127.0.0.2")
            attackers.append(late)
            refused_after, _ = await late.closed
            assert await healthz(hub) == 200  # another address is served all along
        assert len(still_open) == CAP
        assert refused_after < HEADER_TIMEOUT - 0.5
        async with asyncio.timeout(HEADER_TIMEOUT + 5):
            await asyncio.gather(*still_open)
    finally:
        await asyncio.gather(*(c.close() for c in attackers))


async def test_a_real_client_is_served_while_300_slow_connections_are_open(hub: HubProcess) -> None:
    # 30 addresses with 10 slow connections each: under the cap, so the hub keeps all 300 open until
    # their header deadline.
    slow = [await SlowClient.open(hub, f"127.0.0.{2 + n // 10}") for n in range(300)]
    for client in slow:
        client.send_slowly(SLOW_HEADERS, pause=0.5)
    try:
        for _ in range(3):
            assert await healthz(hub) == 200
        status, _, _ = await asyncio.to_thread(
            http_json, "POST", hub.url + "/api/login", {"username": "x", "password": "y"}, None, 5
        )
        assert status == 401
        assert not any(c.closed.done() for c in slow), "the slow connections were closed before the real client"
        async with asyncio.timeout(HEADER_TIMEOUT + 10):
            results = await asyncio.gather(*(c.closed for c in slow))
        assert all(elapsed >= HEADER_TIMEOUT for elapsed, _ in results)
    finally:
        await asyncio.gather(*(c.close() for c in slow))


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


async def test_keep_alive_connections_may_idle_but_each_request_has_its_own_header_deadline(hub: HubProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", urlsplit(hub.url).port)
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    try:
        writer.write(request * 2)  # pipelined
        async with asyncio.timeout(5):
            for _ in range(2):
                assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
        # Idle between requests for longer than the header deadline: keep-alive, not a slow request.
        await asyncio.sleep(HEADER_TIMEOUT + 1)
        writer.write(request)
        async with asyncio.timeout(5):
            assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
        # The next request's headers trickle in: closed at its own deadline, counted from its first byte.
        slow = SlowClient(reader, writer, time.monotonic())  # before its first byte, which starts the deadline
        slow.send_slowly(SLOW_HEADERS, pause=0.1)
        async with asyncio.timeout(HEADER_TIMEOUT + 5):
            elapsed, received = await slow.closed
        await slow.close()
        assert elapsed >= HEADER_TIMEOUT
        assert received == b""
    finally:
        writer.close()
