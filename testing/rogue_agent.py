"""A hostile agent for tests: it speaks the real frame protocol (protocol/agent.py) and breaks its rules on purpose.

The stock agent filters its backend's headers, respects the hub's credit window and sends a well-formed
hello; an agent run by someone else need do none of that. `RogueAgent` enrols and connects like a real one
(its own Ed25519 key, an enrolment token), then lets a test answer each request by hand: any status and
headers (``Set-Cookie``, CORS, ``Location``, ``text/html``, a non-numeric ``content-length``, CR/LF in a
value), DATA pushed past the window (`RogueAgent.flood`), an END marked cancelled that nobody asked for.
The module's functions build the pre-authentication attacks: oversized, garbage and deeply nested
messages, and hellos with huge catalogs or bad signatures (`hello_frame`, `nested_msgpack`, `handshake`).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from potluck.protocol.agent import (
    PROTOCOL_VERSION,
    BackendInfo,
    CancelMessage,
    ChallengeMessage,
    EndMessage,
    ErrorInfo,
    Frame,
    FrameType,
    HeadMessage,
    HelloMessage,
    ModelInfo,
    ModelsMessage,
    PingMessage,
    PongMessage,
    RejectMessage,
    RequestMessage,
    Usage,
    WelcomeMessage,
    challenge_payload,
    encode_data,
    encode_frame,
    encode_hello,
    iter_frames,
)

_TIMEOUT = 10.0
_encode = msgspec.msgpack.Encoder().encode


def ws_url(hub_url: str) -> str:
    return hub_url.replace("http", "ws", 1) + "/agent/connect"


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def hello_frame(
    nonce: bytes,
    *,
    key: Ed25519PrivateKey | None = None,
    models: Sequence[str] = (),
    token: str | None = None,
    name: str = "rogue",
    bad_signature: bool = False,
    catalog: bytes | None = None,
    version: int = PROTOCOL_VERSION,
) -> bytes:
    """A HELLO answering ``nonce``: signed by ``key`` (a fresh one if None), or with a signature of zeros.

    ``catalog``: raw payload bytes in place of the encoded model list (garbage, or a huge one built by hand).
    """
    key = key or new_key()
    public = public_bytes(key)
    signature = b"\0" * 64 if bad_signature else key.sign(challenge_payload(nonce, public))
    hello = HelloMessage(version, "rogue", public, signature, name, 8, enrol_token=token)
    if catalog is not None:
        return encode_frame(hello, payload=catalog)
    return encode_hello(hello, ModelsMessage([ModelInfo(m) for m in models], [BackendInfo("http://127.0.0.1:9")]))


def nested_msgpack(depth: int) -> bytes:
    """A msgpack value nested ``depth`` arrays deep (one byte per level)."""
    return b"\x91" * depth + b"\xc0"


def raw_frame(ftype: FrameType, meta: bytes, payload: bytes = b"", stream_id: int = 0) -> bytes:
    """A frame whose meta is given as raw bytes (garbage, nested, oversized)."""
    return struct.pack("!IBII", 9 + len(meta) + len(payload), ftype, stream_id, len(meta)) + meta + payload


@dataclass(slots=True)
class HandshakeResult:
    """What the hub answered a hand-made hello: its REJECT or WELCOME (None if it sent neither), how it closed."""

    answer: object
    close_code: int | None


async def challenge(http: aiohttp.ClientSession, hub_url: str) -> tuple[aiohttp.ClientWebSocketResponse, bytes]:
    """Open an agent connection and read the hub's challenge; the caller closes the socket."""
    ws = await http.ws_connect(ws_url(hub_url), max_msg_size=0, autoping=True)
    msg = await ws.receive(timeout=_TIMEOUT)
    if msg.type is not aiohttp.WSMsgType.BINARY:
        await ws.close()
        raise AssertionError(f"expected a challenge, got {msg.type.name}")
    first = next(iter_frames(msg.data)).message
    if not isinstance(first, ChallengeMessage):
        await ws.close()
        if isinstance(first, RejectMessage):
            raise RejectedByHubError(first)
        raise AssertionError(f"expected a challenge, got {first!r}")
    return ws, first.nonce


class RejectedByHubError(Exception):
    def __init__(self, reject: RejectMessage) -> None:
        super().__init__(f"{reject.code}: {reject.message}")
        self.reject = reject


async def answer_of(ws: aiohttp.ClientWebSocketResponse) -> HandshakeResult:
    """Read until the hub closes: its first handshake message (REJECT/WELCOME) and the close code."""
    answer: object = None
    async with asyncio.timeout(_TIMEOUT):
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                if answer is None:
                    answer = next(iter_frames(msg.data)).message
                if isinstance(answer, WelcomeMessage):
                    break
                continue
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                break
            if msg.type is aiohttp.WSMsgType.ERROR:
                break
    await ws.close()
    return HandshakeResult(answer, ws.close_code)


async def handshake(http: aiohttp.ClientSession, hub_url: str, make: Callable[[bytes], bytes]) -> HandshakeResult:
    """Connect, answer the challenge with ``make(nonce)``, and report what the hub did."""
    ws, nonce = await challenge(http, hub_url)
    with contextlib.suppress(ConnectionError, aiohttp.ClientError):  # the hub may cut a huge message off
        await ws.send_bytes(make(nonce))
    return await answer_of(ws)


@dataclass(slots=True)
class _Inbox:
    requests: asyncio.Queue[tuple[int, RequestMessage, bytes]] = field(default_factory=asyncio.Queue)
    cancels: list[tuple[int, CancelMessage]] = field(default_factory=list)
    rejects: list[RejectMessage] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class RogueAgent:
    """An enrolled, connected agent whose every answer a test writes by hand (see the module docstring)."""

    def __init__(self, http: aiohttp.ClientSession, hub_url: str, token: str, models: Sequence[str], name: str):
        self._http = http
        self._hub_url = hub_url
        self._token = token
        self._models = list(models)
        self.name = name
        self.key = new_key()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.welcome: WelcomeMessage | None = None
        self.inbox = _Inbox()
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.close_code: int | None = None

    async def __aenter__(self) -> RogueAgent:
        ws, nonce = await challenge(self._http, self._hub_url)
        self.ws = ws
        await ws.send_bytes(hello_frame(nonce, key=self.key, models=self._models, token=self._token, name=self.name))
        msg = await ws.receive(timeout=_TIMEOUT)
        frames = list(iter_frames(msg.data))
        if not isinstance(frames[0].message, WelcomeMessage):
            raise AssertionError(f"expected a welcome, got {frames[0].message!r}")
        self.welcome = frames[0].message
        for frame in frames[1:]:
            self._on_frame(frame)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self.ws is not None:
            await self.ws.close()

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    for frame in iter_frames(msg.data):
                        self._on_frame(frame)
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            self.inbox.changed.set()

    def _on_frame(self, frame: Frame) -> None:
        message = frame.message
        if isinstance(message, RequestMessage):
            self.inbox.requests.put_nowait((frame.stream_id, message, frame.payload))
        elif isinstance(message, PingMessage):
            self.send(encode_frame(PongMessage(message.sent_at)))
        elif isinstance(message, CancelMessage):
            self.inbox.cancels.append((frame.stream_id, message))
        elif isinstance(message, RejectMessage):
            self.inbox.rejects.append(message)
        self.inbox.changed.set()

    # -- sending ----------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        assert self.ws is not None
        task = asyncio.ensure_future(self.ws.send_bytes(data))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def send_now(self, data: bytes) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(data)

    async def next_request(self) -> tuple[int, RequestMessage, bytes]:
        async with asyncio.timeout(_TIMEOUT):
            return await self.inbox.requests.get()

    async def head(self, stream_id: int, status: int, headers: list[tuple[str, str]]) -> None:
        await self.send_now(encode_frame(HeadMessage(status, headers), stream_id))

    async def data(self, stream_id: int, payload: bytes) -> None:
        await self.send_now(encode_data(stream_id, payload))

    async def end(
        self,
        stream_id: int,
        request_id: str,
        *,
        cancelled: bool = False,
        error: ErrorInfo | None = None,
        usage: Usage | None = None,
    ) -> None:
        await self.send_now(
            encode_frame(EndMessage(request_id, error=error, usage=usage, cancelled=cancelled), stream_id)
        )

    async def flood(self, stream_id: int, total: int, chunk: int = 64 << 10) -> int:
        """Push ``total`` bytes of DATA on a stream, ignoring every credit window; how many bytes went out
        before the hub closed the connection (all of them if it did not)."""
        assert self.ws is not None
        frame = encode_data(stream_id, b"x" * chunk)
        sent = 0
        batch = frame * 16  # sixteen frames per WebSocket message: a rogue need not coalesce politely
        try:
            while sent < total:
                await self.ws.send_bytes(batch)
                sent += chunk * 16
        except (ConnectionError, aiohttp.ClientError):
            pass
        return sent

    async def wait_cancel(self, stream_id: int) -> CancelMessage:
        """The hub's CANCEL for this stream."""
        async with asyncio.timeout(_TIMEOUT):
            while True:
                for sid, cancel in self.inbox.cancels:
                    if sid == stream_id:
                        return cancel
                self.inbox.changed.clear()
                await self.inbox.changed.wait()

    async def wait_closed(self) -> RejectMessage | None:
        """Wait until the hub closes the connection; its REJECT, if it sent one."""
        async with asyncio.timeout(_TIMEOUT):
            await self.closed.wait()
        return self.inbox.rejects[0] if self.inbox.rejects else None
