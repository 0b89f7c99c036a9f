"""Peer links between hub replicas: a request placed on one replica, served by an agent tunnelled to another.

Replica A (where the client's request arrived) keeps one outbound link to each other replica B. A sees
B's agents in its scheduler as ordinary `AgentSession`s whose channel is a `PeerChannel`: dispatch,
retries, cancellation, credit and the relay to the client are exactly the one-process path, and the
`RequestOwner` on A stays the request's one owner. B's end of the link (`InboundLink`) opens a stream
on its real session with the agent and passes the agent's frames back.

The link carries the agent frame format (protocol/agent.py) unchanged, with the link's own stream ids:
the forwarding replica only relabels them. A→B, a request is a ``ROUTE`` pseudo-frame (the agent's id
as its meta) followed by the agent's ``REQUEST`` frame; ``CANCEL`` and ``CREDIT`` follow as they are.
B→A carries ``HEAD``, ``DATA`` and ``END`` frames, and ``REFUSED`` (an END's meta) for a request B did
not start. Credit is end to end: B credits the agent only when A's client has taken the bytes, so a slow
client slows the backend as on one process.

B arbitrates its agents' slots. A counts only its own requests on B's agent, so A and B (and C) may
each see a slot free; the request A sends takes one in B's registry, pinned to that agent (`Want.pinned`).
When the agent is full there, a request A could place elsewhere is ``REFUSED`` at once and A tries its
other agents; one that no other agent could take (``ROUTE_WAITING``, a `WaitingStream` at A) waits in B's
queue, as B's own clients' requests do, each placing replica one user of B's fair queue (A's own queue
already took turns among A's users). One that gets no slot within B's queue timeout, or whose agent is
draining, paused or gone at B, is ``REFUSED`` too. A refusal is a `ReplicaRefusedError` at A: retried on
another agent, and not counted against the agent.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from potluck._shared.clock import Clock
from potluck.hub.errors import HubError, ReplicaRefusedError, UpstreamError
from potluck.hub.registry import Queued, Registry, Slot
from potluck.hub.scoring import Want
from potluck.hub.session import AgentSession, SessionState
from potluck.hub.stream import Stream
from potluck.protocol.agent import (
    HEADER_SIZE,
    CancelMessage,
    CreditMessage,
    EndMessage,
    ErrorInfo,
    FrameType,
    HeadMessage,
    ProtocolError,
    RequestMessage,
    encode_data,
    encode_frame,
    frame_decoders,
    iter_frames,
)
from potluck.protocol.errors import ErrorCode

log = logging.getLogger(__name__)

ROUTE = 64
"""Link-only pseudo-frame type: the next REQUEST on this link stream id is for the agent named in its meta; if
every slot of the agent is taken, refuse it at once (the placing replica has other agents to try)."""
ROUTE_WAITING = 66
"""`ROUTE`, for a request that waits in the holding replica's queue when the agent is full (no other agent
could take it: `WaitingStream`)."""

REFUSED = 65
"""Link-only frame type, B→A: the END (its meta) of a request B did not start on its agent."""
_LINK_DECODERS = frame_decoders({REFUSED: EndMessage})

_HEADER = struct.Struct("!IBII")
_SID = struct.Struct("!I")
_REST = HEADER_SIZE - 4
FORWARD_LINGER_S = 5.0
"""How long B keeps a cancelled forwarded stream for the agent's END (its usage goes back to A)."""


class PeerTransport(Protocol):
    """One WebSocket between two replicas (api/peer.py implements it)."""

    def send(self, data: bytes) -> None:
        """Queue bytes; what is queued in one loop turn leaves as one message."""

    def close(self) -> None:
        """Close the link."""


def relabel(frame: bytes, stream_id: int) -> bytes:
    """The same frame under another stream id (the bytes after the header are not touched)."""
    return frame[:5] + _SID.pack(stream_id) + frame[9:]


def relabel_type(frame: bytes, ftype: int) -> bytes:
    """The same frame as another type (the link's own types carry an agent frame's meta)."""
    return frame[:4] + bytes((ftype,)) + frame[5:]


def route_frame(stream_id: int, agent_id: str, *, may_wait: bool = False) -> bytes:
    meta = agent_id.encode()
    return _HEADER.pack(_REST + len(meta), ROUTE_WAITING if may_wait else ROUTE, stream_id, len(meta)) + meta


# -- replica A: the requests it sends ------------------------------------------------------------------------------


class PeerChannel:
    """`AgentChannel` of a remote agent: frames go over the link to the replica that holds the agent."""

    __slots__ = ("agent_id", "link", "session")

    def __init__(self, link: OutboundLink, agent_id: str) -> None:
        self.link = link
        self.agent_id = agent_id
        self.session: AgentSession | None = None

    def send(self, frame: bytes) -> None:
        self.link.send_from(self, frame)

    def close(self) -> None:
        """The registry dropped the proxy (the agent connected here, or left): nothing to close on the link."""
        self.link.forget(self)


class OutboundLink:
    """Replica A's end of its link to replica B: A's requests to B's agents, and their answers."""

    def __init__(self, replica_id: str, transport: PeerTransport, clock: Clock) -> None:
        self.replica_id = replica_id
        self.transport = transport
        self.clock = clock
        self.channels: dict[str, PeerChannel] = {}
        self._routes: dict[int, tuple[AgentSession, int]] = {}
        self._link_ids: dict[tuple[str, int], int] = {}
        self._next = 1
        self.closed = False

    def channel(self, agent_id: str) -> PeerChannel:
        channel = self.channels.get(agent_id)
        if channel is None:
            channel = self.channels[agent_id] = PeerChannel(self, agent_id)
        return channel

    def forget(self, channel: PeerChannel) -> None:
        if self.channels.get(channel.agent_id) is channel:
            del self.channels[channel.agent_id]

    def send_from(self, channel: PeerChannel, frame: bytes) -> None:
        if self.closed:
            return
        _length, ftype, sid, _meta = _HEADER.unpack_from(frame)
        session = channel.session
        if sid == 0:
            # Heartbeats and drains are for the agent's own replica; the link's liveness stands for the agent.
            if ftype == FrameType.PING and session is not None:
                session.last_rx = self.clock.now()
            return
        key = (channel.agent_id, sid)
        if ftype == FrameType.REQUEST:
            if session is None:
                return
            link_sid = self._next
            self._next = (link_sid + 1) & 0xFFFFFFFF or 1
            self._routes[link_sid] = (session, sid)
            self._link_ids[key] = link_sid
            stream = session.streams.get(sid)
            route = route_frame(link_sid, channel.agent_id, may_wait=stream is not None and stream.may_wait)
            self.transport.send(route + relabel(frame, link_sid))
            return
        link_sid = self._link_ids.get(key, 0)
        if link_sid:
            self.transport.send(relabel(frame, link_sid))

    def receive(self, data: bytes) -> None:
        """Frames from B: each goes to the proxy session's stream under its own stream id."""
        routes = self._routes
        receiving: list[AgentSession] = []
        for frame in iter_frames(data, _LINK_DECODERS):
            route = routes.get(frame.stream_id)
            if route is None:
                continue
            session, sid = route
            ftype = frame.type
            if ftype == REFUSED:
                _refused(session, sid, frame.message)
                ftype = FrameType.END
            if ftype == FrameType.END:
                del routes[frame.stream_id]
                self._link_ids.pop((session.agent_id, sid), None)
            if ftype in (FrameType.DATA, FrameType.HEAD, FrameType.END):
                session.on_frame(ftype, sid, frame.message, frame.payload)
                if session.delivering and session not in receiving:
                    receiving.append(session)
        for session in receiving:
            session.deliver()

    def close(self) -> list[AgentSession]:
        """The link is gone: the proxies' streams fail (retriably before their first byte); returns the proxies."""
        self.closed = True
        self._routes.clear()
        self._link_ids.clear()
        sessions = [c.session for c in self.channels.values() if c.session is not None]
        self.channels.clear()
        return sessions


def _refused(session: AgentSession, sid: int, message: object) -> None:
    """B did not start the request: its stream fails with a `ReplicaRefusedError`, which the END handled right
    after (the refusal's meta) leaves in place."""
    stream = session.streams.get(sid)
    if stream is not None and isinstance(message, EndMessage) and message.error is not None:
        info = message.error
        stream.on_lost(ReplicaRefusedError(info.message, code=info.code, status=info.status))


# -- replica B: the requests it serves for A -----------------------------------------------------------------------


class ForwardedStream(Stream):
    """B's end of a request forwarded from A: every frame of the agent goes back over the link.

    B holds the agent to its credit window as A does (A's CREDITs pass through it): an agent that sends
    past it is reset here, before the excess crosses the link, and the failure counts toward its ejection
    on B as well."""

    __slots__ = ("inbound", "link_sid", "model")

    inbound: InboundLink
    link_sid: int
    model: str

    def on_head(self, head: HeadMessage) -> None:
        self.inbound.transport.send(encode_frame(head, self.link_sid))

    def on_data(self, data: bytes) -> None:
        if not self.within_window(len(data)):
            return
        self.bytes_received += len(data)
        self.inbound.transport.send(encode_data(self.link_sid, data))

    def on_reset(self, error: UpstreamError) -> None:
        self.cancelled = True
        self.inbound.agent_failed(self.session.agent_id, self.model)
        if self.end is None:
            self.on_end(EndMessage(self.request_id, error=ErrorInfo(error.status, str(error.code), error.message)))

    def on_end(self, end: EndMessage) -> None:
        self.end = end
        self.inbound.ended(self, end)

    def on_lost(self, error: HubError) -> None:
        if self.end is None:
            info = ErrorInfo(error.status, "agent_lost", str(error) or "the agent disconnected", retriable=True)
            self.on_end(EndMessage(self.request_id, error=info))


class InboundLink:
    """Replica B's end of a link from replica A: A's requests take a slot of B's agent (waiting for one in
    B's queue) and are opened on B's agent sessions."""

    def __init__(
        self,
        replica_id: str,
        transport: PeerTransport,
        registry: Registry,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        on_idle: Callable[[], None] = lambda: None,
        agent_failed: Callable[[str, str], None] = lambda _agent_id, _model: None,
    ) -> None:
        """``spawn``: starts a request's wait for a slot, in the task group of the link's socket (api/peer.py)."""
        self.on_idle = on_idle
        """Called when the last forwarded request ends (a draining replica waits for it)."""
        self.agent_failed = agent_failed
        """Called with (agent id, model) when an agent broke the protocol on a forwarded stream."""
        self.replica_id = replica_id
        self.requester = "replica:" + replica_id
        """Who A's requests are in B's fair queue: one user per placing replica."""
        self.transport = transport
        self._registry = registry
        self._spawn = spawn
        self._streams: dict[int, ForwardedStream] = {}
        self._waiting: dict[int, tuple[Queued, asyncio.Task[None]]] = {}
        """A's requests waiting in B's queue for a slot of their agent, by link stream id."""
        self._routes: dict[int, tuple[str, bool]] = {}
        """Link stream id -> (agent id, whether the request may wait for a slot), from its ROUTE frame."""
        self.forwarded_total = 0

    @property
    def running(self) -> int:
        """A's requests running on this replica's agents, or waiting for a slot of one."""
        return len(self._streams) + len(self._waiting)

    def receive(self, data: bytes) -> None:
        """A's frames: route, request, cancel, credit. Raises ProtocolError on garbage."""
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos < end:
            if end - pos < HEADER_SIZE:
                raise ProtocolError("truncated frame header")
            length, ftype, sid, meta_len = _HEADER.unpack_from(data, pos)
            frame_end = pos + 4 + length
            if length < _REST or frame_end > end or pos + HEADER_SIZE + meta_len > frame_end:
                raise ProtocolError("frame length out of bounds")
            if ftype in (ROUTE, ROUTE_WAITING):
                agent_id = bytes(view[pos + HEADER_SIZE : pos + HEADER_SIZE + meta_len]).decode()
                self._routes[sid] = (agent_id, ftype == ROUTE_WAITING)
            else:
                for frame in iter_frames(bytes(view[pos:frame_end])):
                    self._on_frame(frame.type, frame.stream_id, frame.message, frame.payload)
            pos = frame_end

    def _on_frame(self, ftype: int, sid: int, message: object, payload: bytes) -> None:
        if ftype == FrameType.REQUEST and isinstance(message, RequestMessage):
            self._open(sid, message, payload)
            return
        stream = self._streams.get(sid)
        if stream is None:
            if ftype == FrameType.CANCEL and isinstance(message, CancelMessage):
                self._withdraw(sid, message)
            return
        session = stream.session
        if ftype == FrameType.CREDIT and isinstance(message, CreditMessage):
            stream.granted(message.bytes)
            session.send(message, stream.stream_id)
        elif ftype == FrameType.CANCEL and isinstance(message, CancelMessage):
            session.send(message, stream.stream_id)
            session.clock.call_later(FORWARD_LINGER_S, self._linger_over, stream)

    def _open(self, sid: int, request: RequestMessage, body: bytes) -> None:
        agent_id, may_wait = self._routes.pop(sid, ("", False))
        session = self._registry.sessions.get(agent_id)
        if session is None or isinstance(session.channel, PeerChannel) or session.state is SessionState.CLOSED:
            self._refuse(sid, request.request_id, 503, "agent_lost", "the agent is no longer connected to this replica")
            return
        want = Want((request.model,), requester=self.requester, pinned=agent_id)
        registry = self._registry
        try:
            slot = registry.try_acquire(want, queue=request.model)
            queued = registry.join(want, queue=request.model) if slot is None and may_wait else None
        except HubError as exc:
            self._refuse(sid, request.request_id, exc.status, str(exc.code), exc.message)
            return
        if slot is not None:
            self._start(sid, slot, request, body)
        elif queued is not None:
            self._waiting[sid] = (queued, self._spawn(self._wait(sid, queued, want, request, body)))
        else:
            message = "every slot of the agent is taken; another agent may serve it"
            self._refuse(sid, request.request_id, 503, str(ErrorCode.SERVER_OVERLOADED), message)

    async def _wait(self, sid: int, queued: Queued, want: Want, request: RequestMessage, body: bytes) -> None:
        """Wait in B's queue for the agent's slot, then start the request on it (a CANCEL or the link's close
        withdraws it)."""
        try:
            slot = await self._registry.granted(queued, want, queue=request.model)
        except HubError as exc:
            self._waiting.pop(sid, None)
            self._refuse(sid, request.request_id, exc.status, str(exc.code), exc.message)
            self._idle_check()
            return
        self._waiting.pop(sid, None)
        self._start(sid, slot, request, body)

    def _start(self, sid: int, slot: Slot, request: RequestMessage, body: bytes) -> None:
        def forwarded(owner: AgentSession, stream_id: int, request_id: str, window: int) -> Stream:
            stream = ForwardedStream(owner, stream_id, request_id, window)
            stream.inbound = self
            stream.link_sid = sid
            stream.model = request.model
            stream.lingering = True  # the session forgets it at its END
            return stream

        stream = slot.session.open_stream(request, body, factory=forwarded)
        assert isinstance(stream, ForwardedStream)  # noqa: S101 - made by the factory above
        self._streams[sid] = stream
        self.forwarded_total += 1

    def _refuse(self, sid: int, request_id: str, status: int, code: str, message: str) -> None:
        error = ErrorInfo(status, code, message, retriable=True)
        self.transport.send(relabel_type(encode_frame(EndMessage(request_id, error=error), sid), REFUSED))

    def _withdraw(self, sid: int, cancel: CancelMessage) -> None:
        """A cancelled a request still waiting for a slot here: it leaves the queue, and A gets its END."""
        waiting = self._waiting.pop(sid, None)
        if waiting is not None:
            queued, task = waiting
            self._registry.withdraw(queued)  # a slot granted in this turn goes back
            task.cancel()
            self.transport.send(encode_frame(EndMessage(cancel.request_id, cancelled=True), sid))
            self._idle_check()

    def ended(self, stream: ForwardedStream, end: EndMessage) -> None:
        if self._streams.get(stream.link_sid) is stream:
            del self._streams[stream.link_sid]
            self._registry.release(stream.session)
            self.transport.send(encode_frame(end, stream.link_sid))
            self._idle_check()

    def _idle_check(self) -> None:
        if not self._streams and not self._waiting:
            self.on_idle()

    def _linger_over(self, stream: ForwardedStream) -> None:
        """The agent never ended a cancelled stream: forget it on both sides."""
        if stream.end is None:
            session = stream.session
            if session.streams.get(stream.stream_id) is stream:
                del session.streams[stream.stream_id]
            stream.on_end(EndMessage(stream.request_id, cancelled=True))

    def close(self) -> None:
        """A is gone: cancel what it had running or waiting here (its clients are gone with it)."""
        waiting, self._waiting = self._waiting, {}
        for queued, task in waiting.values():
            self._registry.withdraw(queued)
            task.cancel()
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            session = stream.session
            if stream.end is None and session.streams.get(stream.stream_id) is stream:
                session.send(CancelMessage(stream.request_id, "client_disconnect"), stream.stream_id)
                del session.streams[stream.stream_id]
            self._registry.release(session)
        self.on_idle()
