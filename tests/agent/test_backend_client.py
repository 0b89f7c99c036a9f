"""The relay's HTTP/1.1 client against a real socket server that answers exactly what each test scripts."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from potluck.agent.backend_client import (
    _PAUSE_AT,
    BackendClient,
    BackendConnectError,
    BackendDisconnectedError,
    BackendPayloadError,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

CLOSE = b""
"""As an answer: close the connection without a word."""


@dataclass
class Received:
    connection: int
    head: bytes
    body: bytes


@dataclass
class ScriptedServer:
    """Reads whole requests and answers the i-th with ``answers[i]``: bytes to write (CLOSE: none), then the
    connection stays open for the next request unless ``close_after`` holds i."""

    answers: list[bytes]
    close_after: set[int] = field(default_factory=set)
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    client_closed: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = self.connections
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.client_closed.set()
                    return
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                index = len(self.received)
                self.received.append(Received(connection, head, body))
                answer = self.answers[index]
                if answer == CLOSE:
                    return
                writer.write(answer)
                await writer.drain()
                if index in self.close_after:
                    return
        finally:
            writer.close()


@pytest.fixture
async def client() -> AsyncIterator[BackendClient]:
    client = BackendClient()
    yield client
    client.close()


async def serve(answers: list[bytes], close_after: set[int] | None = None) -> tuple[ScriptedServer, asyncio.Server]:
    scripted = ScriptedServer(answers, close_after or set())
    server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
    scripted.port = server.sockets[0].getsockname()[1]
    return scripted, server


async def test_request_head_and_a_kept_alive_connection(client: BackendClient) -> None:
    scripted, server = await serve([OK, OK])
    async with server:
        base = f"http://127.0.0.1:{scripted.port}/prefix/"
        for _ in range(2):
            async with asyncio.timeout(2):
                resp = await client.post(base, "/v1/chat/completions", b'{"model":"m"}')
                async with resp:
                    assert (resp.status, resp.content_type) == (200, "application/json")
                    assert resp.raw_headers == [(b"Content-Type", b"application/json"), (b"Content-Length", b"2")]
                    assert await resp.read(1 << 20) == b"{}"
    assert [r.connection for r in scripted.received] == [0, 0]
    first = scripted.received[0]
    lines = first.head.split(b"\r\n")
    assert lines[0] == b"POST /prefix/v1/chat/completions HTTP/1.1"
    assert f"Host: 127.0.0.1:{scripted.port}".encode() in lines
    assert b"Content-Type: application/json" in lines
    assert b"Accept-Encoding: identity" in lines
    assert first.body == b'{"model":"m"}'


async def test_credentials_in_the_backend_url_are_sent_as_basic_auth(client: BackendClient) -> None:
    scripted, server = await serve([OK])
    async with server, asyncio.timeout(2):
        base = f"http://user:p%40ss@127.0.0.1:{scripted.port}"
        async with await client.post(base, "/v1/completions", b"{}") as resp:
            assert await resp.read(100) == b"{}"
    expected = b"Authorization: Basic " + base64.b64encode(b"user:p@ss")
    assert expected in scripted.received[0].head.split(b"\r\n")


async def test_a_pooled_connection_that_died_is_replaced_once(client: BackendClient) -> None:
    # The second request lands on the kept-alive connection, which the server closes without answering (as a
    # server does that closes an idle connection just as the request arrives); a fresh connection answers it.
    scripted, server = await serve([OK, CLOSE, OK])
    async with server, asyncio.timeout(2):
        for _ in range(2):
            async with await client.post(f"http://127.0.0.1:{scripted.port}", "/v1/completions", b"{}") as resp:
                assert await resp.read(100) == b"{}"
    assert [r.connection for r in scripted.received] == [0, 0, 1]


async def test_a_fresh_connection_closed_without_an_answer_is_not_retried(client: BackendClient) -> None:
    scripted, server = await serve([CLOSE, OK])
    async with server:
        with pytest.raises(BackendDisconnectedError):
            async with asyncio.timeout(2):
                await client.post(f"http://127.0.0.1:{scripted.port}", "/v1/completions", b"{}")
    assert len(scripted.received) == 1


async def test_connection_refused_is_a_connect_error(client: BackendClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(BackendConnectError) as caught:
            async with asyncio.timeout(2):
                await client.post(f"http://127.0.0.1:{port}", "/v1/completions", b"{}")
    assert isinstance(caught.value.os_error, ConnectionRefusedError)


async def test_chunked_body_arrives_whole_and_the_connection_is_kept(client: BackendClient) -> None:
    events = [b"data: {}\n\n", b"data: [DONE]\n\n"]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    scripted, server = await serve([head + chunked, OK])
    async with server, asyncio.timeout(2):
        base = f"http://127.0.0.1:{scripted.port}"
        async with await client.post(base, "/v1/chat/completions", b"{}") as resp:
            assert resp.content_type == "text/event-stream"
            pieces = []
            while piece := await resp.read_some():
                pieces.append(piece)
        assert b"".join(pieces) == b"".join(events)
        async with await client.post(base, "/v1/chat/completions", b"{}") as resp:
            assert await resp.read(100) == b"{}"
    assert [r.connection for r in scripted.received] == [0, 0]


async def test_a_body_without_length_ends_with_the_connection(client: BackendClient) -> None:
    unframed = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + b"x" * 5000
    scripted, server = await serve([unframed, OK], close_after={0})
    async with server, asyncio.timeout(2):
        base = f"http://127.0.0.1:{scripted.port}"
        async with await client.post(base, "/v1/completions", b"{}") as resp:
            assert await resp.read(1 << 20) == b"x" * 5000
        async with await client.post(base, "/v1/completions", b"{}") as resp:
            assert await resp.read(100) == b"{}"
    assert [r.connection for r in scripted.received] == [0, 1]


async def test_an_interim_answer_is_skipped(client: BackendClient) -> None:
    scripted, server = await serve([b"HTTP/1.1 100 Continue\r\n\r\n" + OK])
    async with (
        server,
        asyncio.timeout(2),
        await client.post(f"http://127.0.0.1:{scripted.port}", "/v1/completions", b"{}") as resp,
    ):
        assert resp.status == 200
        assert await resp.read(100) == b"{}"


async def test_a_body_broken_off_is_a_payload_error(client: BackendClient) -> None:
    short = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
    scripted, server = await serve([short], close_after={0})
    async with (
        server,
        asyncio.timeout(2),
        await client.post(f"http://127.0.0.1:{scripted.port}", "/v1/completions", b"{}") as resp,
    ):
        with pytest.raises(BackendPayloadError):
            await resp.read(1000)


async def test_garbage_instead_of_an_answer_is_a_payload_error(client: BackendClient) -> None:
    scripted, server = await serve([b"SSH-2.0-OpenSSH_9.6\r\n\r\n"])
    async with server, asyncio.timeout(2):
        with pytest.raises(BackendPayloadError):
            await client.post(f"http://127.0.0.1:{scripted.port}", "/v1/completions", b"{}")


async def test_bytes_after_the_answer_keep_it_but_not_the_connection(client: BackendClient) -> None:
    scripted, server = await serve([OK + b"HTTP/1.1 200 OK\r\n\r\n", OK])
    async with server, asyncio.timeout(2):
        base = f"http://127.0.0.1:{scripted.port}"
        async with await client.post(base, "/v1/completions", b"{}") as resp:
            assert await resp.read(100) == b"{}"
        async with await client.post(base, "/v1/completions", b"{}") as resp:
            assert await resp.read(100) == b"{}"
    assert [r.connection for r in scripted.received] == [0, 1]


async def test_leaving_before_the_end_closes_the_connection(client: BackendClient) -> None:
    # This is how a cancelled relay aborts the backend's request.
    long = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10
    scripted, server = await serve([long])
    async with server, asyncio.timeout(2):
        resp = await client.post(f"http://127.0.0.1:{scripted.port}", "/v1/completions", b"{}")
        async with resp:
            assert await resp.read_some() == b"x" * 10
        await scripted.client_closed.wait()


async def test_reading_pauses_while_the_body_is_not_taken(client: BackendClient) -> None:
    size = 16 * _PAUSE_AT
    big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    scripted, server = await serve([big])
    async with (
        server,
        asyncio.timeout(2),
        await client.post(f"http://127.0.0.1:{scripted.port}", "/v1/completions", b"{}") as resp,
    ):
        conn = resp._conn
        while not conn.paused:
            await asyncio.sleep(0)  # loop turns: the bytes come in until the client stops reading
        held = conn.buffered
        for _ in range(100):
            await asyncio.sleep(0)  # loop turns in which more would come in, were reading not paused
        assert conn.buffered == held < size
        assert len(await resp.read(2 * size)) == size
        assert not conn.paused
