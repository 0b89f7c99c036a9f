"""One WebSocket session with the hub: handshake, then requests in, responses out.

Each relayed request runs in its own task; the hub's CANCEL cancels that task, which closes the
backend connection. DATA frames for a stream go out only while the hub has granted credit, so a
slow client slows the backend read instead of filling the hub's memory.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp

from potluck import __version__
from potluck._shared.outbox import Outbox
from potluck._shared.waiting import wait_set
from potluck.agent.backend_client import BackendClient
from potluck.agent.catalog import Catalog
from potluck.agent.identity import Identity
from potluck.agent.relay import StreamSink, relay
from potluck.agent.settings import AgentSettings
from potluck.agent.status import Tally
from potluck.protocol.agent import (
    PROTOCOL_VERSION,
    CancelMessage,
    CancelReason,
    ChallengeMessage,
    CreditMessage,
    DrainMessage,
    EndMessage,
    ErrorInfo,
    Frame,
    FrameType,
    HeadMessage,
    HelloMessage,
    ModelsMessage,
    PingMessage,
    PongMessage,
    ProtocolError,
    RefreshMessage,
    RejectMessage,
    RequestMessage,
    StateMessage,
    Usage,
    WelcomeMessage,
    encode_data,
    encode_frame,
    encode_hello,
    iter_frames,
)

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0


class RejectedError(Exception):
    """The hub refused this agent. ``retry`` says whether reconnecting later can help."""

    def __init__(self, reject: RejectMessage) -> None:
        super().__init__(f"{reject.code}: {reject.message}")
        self.reject = reject


class _Outgoing(StreamSink):
    """The agent's end of one stream: frames to the hub, gated by the hub's credit."""

    __slots__ = ("_conn", "_credit", "_credit_event", "cancelled", "stream_id", "task", "usage")

    def __init__(self, conn: HubConnection, stream_id: int, window: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self._credit = window
        # Made only once a stream runs out of credit: most never do.
        self._credit_event: asyncio.Event | None = None
        self.usage: Usage | None = None
        self.task: asyncio.Task[None] | None = None
        self.cancelled = False

    def head(self, head: HeadMessage) -> None:
        self._conn.send(encode_frame(head, self.stream_id))

    async def data(self, payload: bytes) -> None:
        # The hub resets a stream that sends past its window, so a chunk bigger than the credit left is
        # split at the window's edge (rare: a window is far bigger than what a backend writes at once).
        while True:
            while self._credit <= 0:
                event = self._credit_event
                if event is None:
                    event = self._credit_event = asyncio.Event()
                event.clear()
                await event.wait()
            credit = self._credit
            if len(payload) <= credit:
                self._credit = credit - len(payload)
                self._conn.send(encode_data(self.stream_id, payload))
                return
            self._credit = 0
            self._conn.send(encode_data(self.stream_id, payload[:credit]))
            payload = payload[credit:]

    def grant(self, nbytes: int) -> None:
        self._credit += nbytes
        if self._credit > 0 and self._credit_event is not None:
            self._credit_event.set()


class HubConnection:
    """Lives as long as one WebSocket; the daemon makes a new one on every reconnect."""

    def __init__(
        self,
        settings: AgentSettings,
        identity: Identity,
        catalog: Catalog,
        client: BackendClient,
        ws: aiohttp.ClientWebSocketResponse,
        refresh_requested: asyncio.Event,
        *,
        tally: Tally | None = None,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.catalog = catalog
        self.client = client
        self.ws = ws
        self.agent_id: str | None = None
        self.heartbeat_interval = 5.0
        self.heartbeat_timeout = 15.0
        self.credit_window = 256 * 1024
        self.draining = False
        self.active: dict[int, _Outgoing] = {}
        self._running_count = 0
        """Entries of `active` not cancelled (kept as a count: the hot path asks for it per request)."""
        self.last_rx = time.monotonic()
        self.refresh_requested = refresh_requested
        self.tally = tally if tally is not None else Tally()
        self._outbox = Outbox(ws.send_bytes, self._on_send_error)
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing: asyncio.Task[bool] | None = None
        self._early_frames: list[Frame] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        """Looked up once: asyncio.get_running_loop() costs a getpid() system call on every call."""

    # -- handshake ------------------------------------------------------------------------------

    async def handshake(self, *, draining: bool) -> WelcomeMessage:
        challenge, _ = _handshake_frames(await self.ws.receive(timeout=HANDSHAKE_TIMEOUT))
        if isinstance(challenge, RejectMessage):  # e.g. the hub is shutting down
            raise RejectedError(challenge)
        if not isinstance(challenge, ChallengeMessage):
            raise ProtocolError("expected a challenge from the hub")
        if challenge.protocol_version != PROTOCOL_VERSION:
            log.warning("hub speaks protocol %d, this agent %d", challenge.protocol_version, PROTOCOL_VERSION)
        settings = self.settings
        enrolled = self.identity.enrolled_with(settings.hub_url)
        hello = HelloMessage(
            protocol_version=PROTOCOL_VERSION,
            agent_version=__version__,
            public_key=self.identity.public_key,
            signature=self.identity.sign_challenge(challenge.nonce),
            name=settings.name or "",
            max_concurrency=settings.max_concurrency,
            enrol_token=None if enrolled else settings.token,
            draining=draining,
        )
        # The catalog rides as the HELLO's payload: the hub decodes it only once the signature verifies.
        await self.ws.send_bytes(encode_hello(hello, ModelsMessage(self.catalog.models(), self.catalog.infos())))
        # The hub may send work in the same message as the welcome: keep those frames for serve().
        welcome, self._early_frames = _handshake_frames(await self.ws.receive(timeout=HANDSHAKE_TIMEOUT))
        if isinstance(welcome, RejectMessage):
            raise RejectedError(welcome)
        if not isinstance(welcome, WelcomeMessage):
            raise ProtocolError("expected a welcome or a reject from the hub")
        self.agent_id = welcome.agent_id
        self.heartbeat_interval = welcome.heartbeat_interval_s
        self.heartbeat_timeout = welcome.heartbeat_timeout_s
        self.credit_window = welcome.credit_window
        self.draining = draining
        if enrolled != welcome.agent_id:
            self.identity.remember_enrolment(settings.hub_url, welcome.agent_id)
        self.last_rx = time.monotonic()
        return welcome

    # -- serving --------------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        self._outbox.put(frame)

    def _on_send_error(self, exc: BaseException) -> None:
        log.warning("sending to the hub failed: %s", exc)
        # Closing ends serve()'s receive loop; keep a reference so the task is not collected early.
        self._closing = asyncio.get_running_loop().create_task(self.ws.close())

    async def serve(self) -> None:
        """Read frames until the WebSocket closes; heartbeats run alongside."""
        heartbeat = asyncio.create_task(self._heartbeat(), name="agent-heartbeat")
        try:
            early, self._early_frames = self._early_frames, []
            for frame in early:
                self._on_frame(frame.type, frame.stream_id, frame.message, frame.payload)
            while True:
                msg = await self.ws.receive()
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                        return
                    if msg.type is aiohttp.WSMsgType.ERROR:
                        log.warning("WebSocket error: %s", self.ws.exception())
                        return
                    continue
                self.last_rx = time.monotonic()
                for frame in iter_frames(msg.data):
                    self._on_frame(frame.type, frame.stream_id, frame.message, frame.payload)
        finally:
            heartbeat.cancel()
            self._outbox.close()
            self._abort_all()

    def _on_frame(self, ftype: int, stream_id: int, message: object, payload: bytes) -> None:
        if ftype == FrameType.REQUEST and isinstance(message, RequestMessage):
            self._start(stream_id, message, payload)
        elif ftype == FrameType.CREDIT and isinstance(message, CreditMessage):
            active = self.active.get(stream_id)
            if active is not None:
                active.grant(message.bytes)
        elif ftype == FrameType.CANCEL and isinstance(message, CancelMessage):
            self._cancel(stream_id, message)
        elif ftype == FrameType.PING and isinstance(message, PingMessage):
            self.send(encode_frame(PongMessage(message.sent_at)))
        elif ftype == FrameType.PONG:
            pass
        elif ftype == FrameType.DRAIN and isinstance(message, DrainMessage):
            log.info("the hub is draining (deadline %.0f s); finishing in-flight requests", message.deadline_s)
        elif ftype == FrameType.REFRESH and isinstance(message, RefreshMessage):
            self.refresh_requested.set()
        elif ftype == FrameType.REJECT and isinstance(message, RejectMessage):
            raise RejectedError(message)  # the hub closes the connection after it (e.g. a limit this agent broke)
        else:
            raise ProtocolError(f"unexpected frame type {ftype} from the hub")

    def _start(self, stream_id: int, req: RequestMessage, body: bytes) -> None:
        if self.draining or self._running_count >= self.settings.max_concurrency:
            reason = "draining" if self.draining else "at max concurrency"
            error = ErrorInfo(503, "server_overloaded", f"agent is {reason}", retriable=True)
            self.send(encode_frame(EndMessage(req.request_id, error=error), stream_id))
            return
        sink = _Outgoing(self, stream_id, self.credit_window)
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        sink.task = loop.create_task(self._run(stream_id, req, body, sink))
        self.active[stream_id] = sink
        self._running_count += 1
        self._idle.clear()

    async def _run(self, stream_id: int, req: RequestMessage, body: bytes, sink: _Outgoing) -> None:
        end: EndMessage | None = None
        try:
            end = await relay(self.client, self.catalog, req, body, sink)
        except asyncio.CancelledError:
            # The hub cancelled (its client left): report what the backend said it delivered so far.
            end = EndMessage(req.request_id, cancelled=True, usage=sink.usage)
        except Exception as exc:
            log.exception("relaying %s failed", req.request_id)
            end = EndMessage(req.request_id, error=ErrorInfo(502, "upstream_error", f"agent error: {exc!r}"))
        finally:
            if self.active.get(stream_id) is sink:
                del self.active[stream_id]
            if not sink.cancelled:
                self._running_count -= 1
            if end is not None:
                self.tally.record(failed=end.error is not None, usage=end.usage)
                self.send(encode_frame(end, stream_id))
                if end.error is not None and end.error.code == "backend_unavailable":
                    self.refresh_requested.set()
            if not self.active:
                self._idle.set()

    def _cancel(self, stream_id: int, cancel: CancelMessage) -> None:
        if cancel.reason == CancelReason.PROTOCOL_ERROR:
            log.warning("the hub reset request %s: %s", cancel.request_id, cancel.detail)
        active = self.active.get(stream_id)
        if active is not None and not active.cancelled:
            log.debug("cancelling stream %d: %s", stream_id, cancel.reason)
            self._mark_cancelled(active)

    def running(self) -> int:
        return self._running()

    def _running(self) -> int:
        # A cancelled request no longer holds a slot, even if its task has not unwound yet: the hub
        # already freed it and may send the next request right behind the cancel.
        return self._running_count

    def _mark_cancelled(self, active: _Outgoing) -> None:
        active.cancelled = True
        self._running_count -= 1
        if active.task is not None:
            active.task.cancel()

    def _abort_all(self) -> None:
        for active in self.active.values():
            if not active.cancelled:
                self._mark_cancelled(active)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            silent = time.monotonic() - self.last_rx
            if silent > self.heartbeat_timeout:
                log.warning("no frame from the hub for %.1f s; reconnecting", silent)
                await self.ws.close()
                return
            self.send(encode_frame(PingMessage(time.monotonic())))

    # -- notifications --------------------------------------------------------------------------

    def announce_models(self) -> None:
        self.send(encode_frame(ModelsMessage(self.catalog.models(), self.catalog.infos())))

    def announce_state(self) -> None:
        self.send(encode_frame(StateMessage(self._running(), self.draining, self.settings.max_concurrency)))

    def start_draining(self) -> None:
        self.draining = True
        self.announce_state()

    async def wait_idle(self, timeout: float) -> bool:
        return await wait_set(self._idle, timeout)

    async def close(self) -> None:
        await self._outbox.drain(2.0)
        await self.ws.close()


def _handshake_frames(msg: aiohttp.WSMessage) -> tuple[object, list[Frame]]:
    """The handshake message a WebSocket message starts with, and the frames that follow it."""
    if msg.type is not aiohttp.WSMsgType.BINARY:
        raise ProtocolError(f"expected a binary handshake frame, got {msg.type.name}")
    frames = list(iter_frames(msg.data))
    if not frames:
        raise ProtocolError("empty handshake message")
    return frames[0].message, frames[1:]
