"""A strict HTTP/1.1 client over a raw socket: what a hub sends on the wire, framing checked byte by byte."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl as ssl_
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

READ_TIMEOUT = 10.0


@dataclass
class Answer:
    version: str
    status: int
    headers: list[tuple[str, str]]
    """Names lower-cased, in the order sent."""
    body: bytes
    chunked: bool
    """The body came in chunked framing (each chunk checked)."""
    interim: list[int]
    """1xx statuses that came before this answer."""

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None

    @property
    def request_id(self) -> str:
        rid = self.header("x-request-id")
        assert rid is not None, self.headers
        assert rid.startswith("req_"), rid
        return rid

    def json(self) -> Any:
        return json.loads(self.body)


class Conn:
    """One client connection to the hub, written and read raw."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, port: int, *, ssl: ssl_.SSLContext | None = None) -> AsyncIterator[Conn]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl)
        try:
            yield cls(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self) -> tuple[str, int, list[tuple[str, str]]]:
        """The next status line and headers (an interim 1xx answer included)."""
        async with asyncio.timeout(READ_TIMEOUT):
            raw = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = raw[:-4].decode("latin-1").split("\r\n")
        version, status, _reason = status_line.split(" ", 2)
        assert version in ("HTTP/1.0", "HTTP/1.1"), status_line
        headers = []
        for line in lines:
            name, colon, value = line.partition(":")
            assert colon, f"malformed header line {line!r}"
            assert name == name.strip(), f"malformed header line {line!r}"
            headers.append((name.lower(), value.strip()))
        return version, int(status), headers

    async def answer(self) -> Answer:
        """The next whole answer: interim 1xx answers, then the final one, its body read by its framing."""
        interim: list[int] = []
        version, status, headers = await self.head()
        while 100 <= status < 200:
            interim.append(status)
            version, status, headers = await self.head()
        names = dict(headers)
        async with asyncio.timeout(READ_TIMEOUT):
            if names.get("transfer-encoding") == "chunked":
                assert "content-length" not in names, headers
                return Answer(version, status, headers, await self._chunked(), True, interim)
            if "content-length" in names:
                body = await self.reader.readexactly(int(names["content-length"]))
            elif status in (204, 304):
                body = b""
            else:  # delimited by the end of the connection
                body = await self.reader.read()
        return Answer(version, status, headers, body, False, interim)

    async def _chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line[:-2].split(b";")[0], 16)
            if size == 0:
                assert await self.reader.readuntil(b"\r\n") == b"\r\n", "no trailers expected"
                return bytes(body)
            body += await self.reader.readexactly(size)
            assert await self.reader.readexactly(2) == b"\r\n", "a chunk ends with CRLF"

    async def rest(self, timeout: float = READ_TIMEOUT) -> bytes:
        """Whatever comes until the hub closes the connection (a reset counts as closed)."""
        received = b""
        async with asyncio.timeout(timeout):
            with contextlib.suppress(ConnectionError):
                while chunk := await self.reader.read(65536):
                    received += chunk
        return received


def request(
    method: str,
    target: str,
    body: bytes = b"",
    *headers: str,
    key: str | None,
    version: str = "HTTP/1.1",
    length: bool = True,
) -> bytes:
    """A request's bytes: ``headers`` as given, then ``Content-Length`` (with ``length``) and the body."""
    lines = [f"{method} {target} {version}", "Host: 127.0.0.1"]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    if body:
        lines.append("Content-Type: application/json")
    lines += headers
    if length and (body or method == "POST"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
