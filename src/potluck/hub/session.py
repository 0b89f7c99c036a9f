"""One connected agent: its state, its streams, and the frames between them.

An `AgentSession` turns frames from its agent into per-stream events (hub/stream.py `Stream`), and
requests into frames through an `AgentChannel`. It never touches a socket. It resets a stream whose
agent broke the protocol on it (`reset`), and hands each stream the bytes of one agent message at a
time (`deliver`).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

from potluck._shared.clock import Clock
from potluck.hub.channel import AgentChannel
from potluck.hub.errors import AgentLostError, HubError, UpstreamError
from potluck.hub.stream import Stream
from potluck.protocol.agent import (
    BackendInfo,
    CancelMessage,
    CancelReason,
    CreditMessage,
    EndMessage,
    FrameType,
    HeadMessage,
    ModelInfo,
    PingMessage,
    PongMessage,
    ProtocolError,
    RequestMessage,
    encode_frame,
)
from potluck.protocol.metrics import HostMetrics

log = logging.getLogger(__name__)

LINGER_S = 5.0
"""How long a cancelled stream waits for the agent's END before it is forgotten."""


class SessionState(enum.Enum):
    ACTIVE = "active"
    DRAINING = "draining"
    CLOSED = "closed"


_ALLOWED = {
    SessionState.ACTIVE: {SessionState.DRAINING, SessionState.CLOSED},
    SessionState.DRAINING: {SessionState.ACTIVE, SessionState.CLOSED},
    SessionState.CLOSED: set(),
}


class IllegalTransitionError(HubError):
    pass


class AgentSession:
    """A connected, authenticated agent."""

    def __init__(
        self,
        *,
        agent_id: str,
        name: str,
        channel: AgentChannel,
        clock: Clock,
        models: list[ModelInfo],
        backends: list[BackendInfo],
        max_concurrency: int,
        credit_window: int,
        version: str,
        remote: bool = False,
    ) -> None:
        self.agent_id = agent_id
        self.remote = remote
        """A proxy of an agent another replica holds (cluster mode, hub/cluster_link.py)."""
        self.name = name
        self.channel = channel
        self.version = version
        self.clock = clock
        self.models = models
        self.backends = backends
        self.max_concurrency = max(1, max_concurrency)
        self.credit_window = credit_window
        self.state = SessionState.ACTIVE
        self.streams: dict[int, Stream] = {}
        self.delivering: list[Stream] = []
        """Streams holding DATA of the message being read, for their sinks (`deliver`)."""
        self._next_stream_id = 1
        self.connected_at = clock.now()
        self.last_rx = clock.now()
        self.rtt_s: float | None = None
        self.agent_in_flight = 0
        self.linger_s = LINGER_S
        self.host: HostMetrics | None = None
        self.requests_total = 0
        self.protocol_errors = 0
        """Streams reset because the agent broke the protocol on them."""
        self.control_budget = 0.0
        self.control_at = clock.now()
        """The gate's token bucket for the agent's connection-level frames: tokens left, and when last spent."""

    def transition(self, new: SessionState) -> None:
        if new is self.state:
            return
        if new not in _ALLOWED[self.state]:
            raise IllegalTransitionError(f"agent session cannot go from {self.state.value} to {new.value}")
        self.state = new

    def send(self, message: CreditMessage | CancelMessage | PingMessage | PongMessage, stream_id: int = 0) -> None:
        if self.state is not SessionState.CLOSED:
            self.channel.send(encode_frame(message, stream_id))

    def open_stream(
        self, request: RequestMessage, body: bytes, *, factory: Callable[[AgentSession, int, str, int], Stream] = Stream
    ) -> Stream:
        """Send ``request`` on a new stream; ``factory`` makes the hub's end of it (a peer replica's forwarded
        request is a `Stream` that passes the agent's frames on, hub/cluster_link.py)."""
        if self.state is SessionState.CLOSED:
            raise AgentLostError
        stream_id = self._next_stream_id
        self._next_stream_id = (stream_id + 1) & 0xFFFFFFFF or 1
        stream = factory(self, stream_id, request.request_id, self.credit_window)
        self.streams[stream_id] = stream
        self.requests_total += 1
        self.channel.send(encode_frame(request, stream_id, body))
        return stream

    def close_stream(self, stream: Stream, *, cancel_reason: str | None) -> None:
        """Forget a stream; tell the agent to stop it first if it has not ended.

        A cancelled stream lingers for up to `LINGER_S` so the agent's END (with the usage it saw,
        e.g. when the client hung up right after the last event) still reaches `after_cancel`.
        """
        stream.stop_deadline()
        if self.streams.get(stream.stream_id) is not stream:
            stream.settle(None)
            return
        if cancel_reason is not None and stream.end is None and self.state is not SessionState.CLOSED:
            stream.cancelled = True
            self.send(CancelMessage(stream.request_id, cancel_reason), stream.stream_id)
            if stream.after_cancel is not None:
                stream.lingering = True
                self.clock.call_later(self.linger_s, self._forget, stream)
                return
        del self.streams[stream.stream_id]
        stream.settle(None)

    def reset(self, stream: Stream, error: UpstreamError) -> None:
        """The agent broke the protocol on ``stream``: forget it (later frames for it are dropped), tell the
        agent with a CANCEL whose reason is ``protocol_error``, and fail the request with ``error``."""
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        self.protocol_errors += 1
        log.warning(
            "agent %s (%s) broke the protocol on request %s: %s",
            self.agent_id,
            self.name,
            stream.request_id,
            error.message,
        )
        self.send(CancelMessage(stream.request_id, CancelReason.PROTOCOL_ERROR, error.message), stream.stream_id)
        stream.on_reset(error)

    def _forget(self, stream: Stream) -> None:
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        stream.settle(None)

    def on_frame(self, ftype: int, stream_id: int, message: object, payload: bytes) -> None:
        """Route a per-stream or heartbeat frame. Connection-level state frames are the registry's."""
        self.last_rx = self.clock.now()
        if ftype == FrameType.DATA:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.on_data(payload)
        elif ftype == FrameType.HEAD:
            stream = self.streams.get(stream_id)
            if stream is not None and isinstance(message, HeadMessage):
                stream.on_head(message)
        elif ftype == FrameType.END:
            stream = self.streams.get(stream_id)
            if stream is not None and isinstance(message, EndMessage):
                stream.on_end(message)
                if stream.lingering:
                    del self.streams[stream_id]
        elif ftype == FrameType.PING and isinstance(message, PingMessage):
            self.send(PongMessage(message.sent_at))
        elif ftype == FrameType.PONG and isinstance(message, PongMessage):
            rtt = self.clock.now() - message.sent_at
            self.rtt_s = rtt if self.rtt_s is None else 0.8 * self.rtt_s + 0.2 * rtt
        else:
            raise ProtocolError(f"unexpected frame type {ftype} from an agent")

    def deliver(self) -> None:
        """The agent's message has been read (its frames went to `on_frame`): each stream's DATA in it goes to
        its sink in one piece. One write per stream per message, however many frames the agent coalesced."""
        streams = self.delivering
        if streams:
            self.delivering = []
            for stream in streams:
                stream.deliver()

    def close(self, error: HubError | None = None) -> None:
        """The connection is gone: every stream still open fails (retriably if nothing was relayed)."""
        if self.state is SessionState.CLOSED:
            return
        self.deliver()  # what came before the loss was relayed
        self.state = SessionState.CLOSED
        failure = error or AgentLostError()
        for stream in list(self.streams.values()):
            stream.on_lost(failure)
            stream.settle(None)
        self.streams.clear()
