"""The hub ⇄ agent tunnel: binary frames multiplexing many requests over one WebSocket.

Every WebSocket message carries one or more frames back to back. A frame is::

    u32 length | u8 type | u32 stream_id | u32 meta_length | meta (msgpack) | payload (raw bytes)

``length`` counts everything after itself. ``stream_id`` is 0 for connection-level messages and
names one relayed request otherwise (the hub allocates it; ``RequestMessage.request_id`` carries the
client-facing id). ``meta`` is the msgpack encoding of the message Struct for the frame's type; for
``DATA`` it is empty and the payload is the backend's bytes, untouched. For ``REQUEST`` the payload
is the client's request body, untouched.

See docs/protocol.md for the flow (challenge → hello → welcome, request → head → data* → end,
cancel, credit, drain, heartbeats).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator, Mapping

import msgspec

from potluck.protocol.metrics import HostMetrics

PROTOCOL_VERSION = 3
"""Bumped on any incompatible change; the hub rejects an agent whose version it does not speak.

2: agents forward ``/v1/messages``, ``/v1/messages/count_tokens`` and ``/v1/responses``, report
``BackendInfo.native_paths``, the cache and reasoning parts of ``Usage``, and ``ErrorInfo.terminal_sent``.

3: the HELLO's meta is a small signed envelope (at most `HELLO_META_MAX_BYTES`) and its payload the agent's
catalog (a `ModelsMessage`), which the hub decodes only once the signature verifies; an agent never sends
more DATA on a stream than the hub's credit allows (it splits a chunk at the window's edge)."""

HELLO_META_MAX_BYTES = 4096
"""The largest HELLO meta the hub decodes: everything before the signature check fits in it."""

AUTH_CONTEXT = b"potluck-agent-auth-v1\x00"
"""Domain separator for the challenge signature, so the key signs nothing else by accident."""

_HEADER = struct.Struct("!IBII")
HEADER_SIZE = _HEADER.size
_REST = HEADER_SIZE - 4


class FrameType(enum.IntEnum):
    # agent -> hub
    HELLO = 1
    HEAD = 2
    DATA = 3
    END = 4
    MODELS = 5
    STATE = 6
    LOAD = 7
    # hub -> agent
    CHALLENGE = 16
    WELCOME = 17
    REJECT = 18
    REQUEST = 19
    CANCEL = 20
    CREDIT = 21
    DRAIN = 22
    REFRESH = 23
    # both ways
    PING = 32
    PONG = 33


class ProtocolError(Exception):
    """A peer sent bytes that are not a valid frame or message."""


# ---------------------------------------------------------------------------------------------
# Messages. Field order is the msgpack order; add fields only at the end, with defaults.


class ModelInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """A model an agent can serve."""

    id: str
    """The model name clients ask for."""
    hot: bool = True
    """Loaded in VRAM now (no cold-load delay). Backends that cannot tell report hot."""
    backend: str = ""
    """Which of the agent's backends serves it (its base URL), for diagnostics."""
    context_length: int | None = None
    """Maximum context in tokens, when the backend says."""
    size_bytes: int | None = None
    """Size of the model's weights, when the backend says (Ollama, LM Studio)."""
    vram_bytes: int | None = None
    """Bytes of it in GPU memory now (Ollama's ``size_vram``); 0 while it runs on the CPU only."""
    kind: str = "llm"
    """``llm`` or ``embedding``, when the backend says."""


class BackendInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """A local LLM server behind the agent."""

    url: str
    """Base URL the agent's owner configured (always loopback or owner-chosen, never client-chosen)."""
    kind: str = "openai"
    """``openai`` (generic OpenAI-compatible); later ``ollama``, ``llamacpp``, ``vllm``, ..."""
    healthy: bool = True
    """Answered its last catalog request."""
    version: str | None = None
    """The backend's own version, when it tells (Ollama, vLLM)."""
    running: int | None = None
    """Requests the backend is working on (vLLM ``num_requests_running``, llama.cpp busy slots)."""
    waiting: int | None = None
    """Requests queued inside the backend (vLLM ``num_requests_waiting``, llama.cpp deferred)."""
    slots: int | None = None
    """Parallel slots (llama.cpp ``total_slots``)."""
    kv_cache_usage: float | None = None
    """KV-cache use, 0..1 (vLLM ``kv_cache_usage_perc``)."""
    native_paths: list[str] = []
    """The client dialects' paths the backend serves itself (``/v1/messages``, ``/v1/messages/count_tokens``,
    ``/v1/responses``): the agent passes those requests through and translates the others to chat completions."""


class ChallengeMessage(msgspec.Struct, frozen=True, tag="challenge"):
    """Hub → agent, first message: prove you hold your key by signing ``AUTH_CONTEXT + nonce + public_key``."""

    nonce: bytes
    """32 random bytes, fresh for every connection (so a signature cannot be replayed)."""
    protocol_version: int
    """The tunnel protocol the hub speaks."""
    hub_version: str
    """The hub's software version, for diagnostics."""


class HelloMessage(msgspec.Struct, frozen=True, tag="hello"):
    """Agent → hub, answer to the challenge: identity and proof of key possession. The frame's payload is the
    agent's catalog, a msgpack `ModelsMessage`, which the hub decodes only after the signature verifies."""

    protocol_version: int
    """The tunnel protocol the agent speaks; must equal the hub's."""
    agent_version: str
    """The agent's software version, for diagnostics."""
    public_key: bytes
    """Raw 32-byte Ed25519 public key."""
    signature: bytes
    """Ed25519 signature of ``AUTH_CONTEXT + nonce + public_key``."""
    name: str
    """Display name chosen by the agent's owner (``--name``); empty: the name the hub stored at enrolment."""
    max_concurrency: int
    """Requests the agent runs at once; the hub sends no more."""
    enrol_token: str | None = None
    """One-time enrolment token, sent only until the hub has accepted this key once."""
    draining: bool = False
    """The agent is shutting down and takes no new work."""


class WelcomeMessage(msgspec.Struct, frozen=True, tag="welcome"):
    """Hub → agent: accepted. Tunables the agent must follow."""

    agent_id: str
    """The agent's id at this hub (stable across reconnects: it is bound to the key)."""
    heartbeat_interval_s: float
    """Send a PING at least this often, whatever the traffic."""
    heartbeat_timeout_s: float
    """Silence longer than this means the peer is gone."""
    credit_window: int
    """Bytes of DATA the agent may send per stream before the hub grants more with CREDIT."""


class RejectMessage(msgspec.Struct, frozen=True, tag="reject"):
    """Hub → agent: refused; the connection closes after this. ``retry`` says whether reconnecting can help."""

    code: str
    """``protocol_version``, ``bad_signature``, ``unknown_agent``, ``bad_token`` (final) or
    ``shutting_down``, ``handshake_timeout``, ``protocol_error`` (transient)."""
    message: str
    """Human-readable reason, for the agent's log."""
    retry: bool = False
    """Reconnecting later can help (the agent backs off and retries); False: the agent exits."""


class RequestMessage(msgspec.Struct, frozen=True, tag="request"):
    """Hub → agent: relay one client request to a backend. The frame's payload is the body, as the client sent it."""

    request_id: str
    """The client-facing id (``x-request-id``), for logs on both sides."""
    method: str
    """HTTP method; only POST is forwarded."""
    path: str
    """The client API's path, e.g. ``/v1/chat/completions`` or ``/v1/messages``. The agent forwards only inference
    paths it knows (``protocol.openai.INFERENCE_PATHS``)."""
    model: str
    """The model the hub routed on (the ``model`` field of the body)."""
    stream: bool
    """The client asked for a stream."""
    strip_usage: bool = False
    """The client did not ask for a usage chunk: the agent asks the backend for one
    (``stream_options.include_usage``) and removes it from what it relays."""
    headers: dict[str, str] = {}
    """Content negotiation headers only (``content-type``, ``accept``); never the client's credentials."""


class HeadMessage(msgspec.Struct, frozen=True, tag="head"):
    """Agent → hub: the backend's response status and headers (hop-by-hop headers removed)."""

    status: int
    """The backend's HTTP status."""
    headers: list[tuple[str, str]]
    """The backend's response headers, in order."""


class Usage(msgspec.Struct, frozen=True, omit_defaults=True):
    """Token counts as the backend reported them, counted as OpenAI does (cached tokens inside ``prompt_tokens``).

    Whatever the client's dialect, the agent reports the same counts: ``protocol.usage.TokenUsage.from_frame``
    turns them back into the one usage record."""

    prompt_tokens: int = 0
    """Tokens in the prompt, those read from or written to the prompt cache included."""
    completion_tokens: int = 0
    """Tokens generated, reasoning included."""
    total_tokens: int = 0
    """Their sum, as the backend reported it."""
    cache_read_tokens: int = 0
    """The part of ``prompt_tokens`` read from the prompt cache, when the backend says."""
    cache_write_tokens: int = 0
    """The part of ``prompt_tokens`` written to the prompt cache, when the backend says."""
    reasoning_tokens: int = 0
    """The part of ``completion_tokens`` spent reasoning, when the backend says."""


class ErrorInfo(msgspec.Struct, frozen=True):
    """Why a request failed on the agent side."""

    status: int
    """The HTTP status the client should see."""
    code: str
    """An error code of the error contract (protocol/errors.py)."""
    message: str
    """Human-readable, shown to the client."""
    retriable: bool = False
    """Nothing reached the backend's model (e.g. connection refused): another agent may be tried."""
    terminal_sent: bool = False
    """The agent already ended the client's stream with its dialect's terminal error event (Anthropic's
    ``event: error``, the Responses API's ``response.failed``), among the DATA it sent: the hub records the
    failure but writes no terminal event of its own."""


class EndMessage(msgspec.Struct, frozen=True, tag="end"):
    """Agent → hub: the stream is over. ``error`` is set when it did not finish normally."""

    request_id: str
    """The request this stream carried."""
    error: ErrorInfo | None = None
    """Why it failed, if it did."""
    usage: Usage | None = None
    """What the backend reported (None when it reported nothing)."""
    cancelled: bool = False
    """The hub cancelled it."""
    ttft_s: float | None = None
    """Seconds from sending the request to the backend until its first body byte."""
    total_s: float | None = None
    """Seconds from sending the request to the backend until its end."""


class CancelReason(enum.StrEnum):
    """Why the hub cancels a request (the wire carries the string, so a newer reason never breaks an older agent)."""

    CLIENT_DISCONNECT = "client_disconnect"
    """The client went away."""
    TIMEOUT = "timeout"
    """No first byte, or nothing for the idle timeout."""
    PROTOCOL_ERROR = "protocol_error"
    """The agent broke the protocol on this stream (DATA past its credit window, a malformed head): the
    stream is reset, and ``CancelMessage.detail`` says how."""


class CancelMessage(msgspec.Struct, frozen=True, tag="cancel"):
    """Hub → agent: stop this request now and close the backend connection."""

    request_id: str
    """The request to stop."""
    reason: str
    """A `CancelReason` (``client_disconnect``, ``timeout``, ``protocol_error``); for the agent's log."""
    detail: str = ""
    """What the agent did wrong, for a ``protocol_error``."""


class CreditMessage(msgspec.Struct, frozen=True, tag="credit"):
    """Hub → agent: the hub has written ``bytes`` more of this stream to its client; send that much more."""

    bytes: int
    """How many more bytes of DATA the agent may send on this stream."""


class DrainMessage(msgspec.Struct, frozen=True, tag="drain"):
    """Hub → agent: the hub is going away; no new work will come, finish what is in flight."""

    deadline_s: float
    """Seconds the hub will wait for in-flight requests before closing."""


class RefreshMessage(msgspec.Struct, frozen=True, tag="refresh"):
    """Hub → agent: re-read the backends' model lists now."""


class ModelsMessage(msgspec.Struct, frozen=True, tag="models"):
    """Agent → hub: the full model list changed (replaces the previous one)."""

    models: list[ModelInfo]
    """Everything the agent serves now."""
    backends: list[BackendInfo]
    """Its backends and their health."""


class LoadMessage(msgspec.Struct, frozen=True, tag="load"):
    """Agent → hub, every few seconds: how busy the agent, its backends and its GPUs are."""

    in_flight: int
    """Requests the agent is running."""
    host: HostMetrics | None
    """CPU, RAM and GPU figures (None when sampling failed)."""
    backends: list[BackendInfo]
    """Each backend's health and load."""


class StateMessage(msgspec.Struct, frozen=True, tag="state"):
    """Agent → hub: load and lifecycle. ``draining`` means: send no new work."""

    in_flight: int
    """Requests the agent is running."""
    draining: bool
    """True: send no new work."""
    max_concurrency: int
    """Requests the agent runs at once (may change at run time)."""


class PingMessage(msgspec.Struct, frozen=True, tag="ping"):
    """Either side, on a fixed cadence: proves the connection is alive."""

    sent_at: float
    """The sender's monotonic clock, echoed back in the PONG."""


class PongMessage(msgspec.Struct, frozen=True, tag="pong"):
    """Answer to a PING."""

    sent_at: float
    """Echo of the ping's ``sent_at``, so the pinger measures round-trip time on its own clock."""


HubToAgent = (
    ChallengeMessage
    | WelcomeMessage
    | RejectMessage
    | RequestMessage
    | CancelMessage
    | CreditMessage
    | DrainMessage
    | RefreshMessage
    | PingMessage
    | PongMessage
)
AgentToHub = (
    HelloMessage | HeadMessage | EndMessage | ModelsMessage | StateMessage | LoadMessage | PingMessage | PongMessage
)

Message = HubToAgent | AgentToHub

_TYPE_OF: dict[type[msgspec.Struct], FrameType] = {
    HelloMessage: FrameType.HELLO,
    HeadMessage: FrameType.HEAD,
    EndMessage: FrameType.END,
    ModelsMessage: FrameType.MODELS,
    StateMessage: FrameType.STATE,
    LoadMessage: FrameType.LOAD,
    ChallengeMessage: FrameType.CHALLENGE,
    WelcomeMessage: FrameType.WELCOME,
    RejectMessage: FrameType.REJECT,
    RequestMessage: FrameType.REQUEST,
    CancelMessage: FrameType.CANCEL,
    CreditMessage: FrameType.CREDIT,
    DrainMessage: FrameType.DRAIN,
    RefreshMessage: FrameType.REFRESH,
    PingMessage: FrameType.PING,
    PongMessage: FrameType.PONG,
}
_DECODERS: dict[int, msgspec.msgpack.Decoder[msgspec.Struct]] = {
    int(ft): msgspec.msgpack.Decoder(cls) for cls, ft in _TYPE_OF.items()
}
_FRAME_TYPES = frozenset(int(ft) for ft in FrameType)
_encode = msgspec.msgpack.Encoder().encode
_pack = _HEADER.pack
_unpack_from = _HEADER.unpack_from


def frame_decoders(extra: Mapping[int, type[msgspec.Struct]]) -> dict[int, msgspec.msgpack.Decoder[msgspec.Struct]]:
    """The agent protocol's meta decoders and ``extra`` frame types of a link's own, for `iter_frames`."""
    return {**_DECODERS, **{ftype: msgspec.msgpack.Decoder(cls) for ftype, cls in extra.items()}}


def encode_frame(message: Message, stream_id: int = 0, payload: bytes = b"") -> bytes:
    """One frame for ``message`` (and, for REQUEST, the body as payload)."""
    meta = _encode(message)
    return b"".join(
        (_pack(_REST + len(meta) + len(payload), _TYPE_OF[type(message)], stream_id, len(meta)), meta, payload)
    )


def encode_hello(hello: HelloMessage, catalog: ModelsMessage) -> bytes:
    """A HELLO frame: the signed envelope as meta, the agent's catalog as payload."""
    return encode_frame(hello, payload=_encode(catalog))


def encode_data(stream_id: int, payload: bytes) -> bytes:
    """A DATA frame: the payload goes through as it is."""
    return _pack(_REST + len(payload), FrameType.DATA, stream_id, 0) + payload


class Frame(msgspec.Struct, frozen=True):
    """A decoded frame. ``message`` is None for DATA frames; ``payload`` is the raw bytes."""

    type: int
    stream_id: int
    message: msgspec.Struct | None
    payload: bytes


def iter_frames(
    buf: bytes, decoders: Mapping[int, msgspec.msgpack.Decoder[msgspec.Struct]] | None = None
) -> Iterator[Frame]:
    """Decode every frame in one WebSocket message. Raises ProtocolError on malformed input.

    ``decoders``: the meta decoder of each frame type, for a link that carries frame types of its own
    (hub/cluster_link.py); by default the agent protocol's."""
    if decoders is None:
        decoders = _DECODERS
    view = memoryview(buf)
    pos = 0
    end = len(buf)
    while pos < end:
        if end - pos < HEADER_SIZE:
            raise ProtocolError("truncated frame header")
        length, ftype, stream_id, meta_len = _unpack_from(buf, pos)
        frame_end = pos + 4 + length
        meta_end = pos + HEADER_SIZE + meta_len
        if length < _REST or frame_end > end or meta_end > frame_end:
            raise ProtocolError("frame length out of bounds")
        if ftype == FrameType.DATA:
            yield Frame(ftype, stream_id, None, bytes(view[meta_end:frame_end]))
        else:
            decoder = decoders.get(ftype)
            if decoder is None:
                raise ProtocolError(f"unknown frame type {ftype}")
            try:
                message = decoder.decode(view[pos + HEADER_SIZE : meta_end])
            except (msgspec.DecodeError, RecursionError) as exc:  # an agent's deeply nested meta too
                name = FrameType(ftype).name if ftype in _FRAME_TYPES else f"type {ftype}"
                raise ProtocolError(f"bad {name} message: {exc}") from exc
            yield Frame(ftype, stream_id, message, bytes(view[meta_end:frame_end]))
        pos = frame_end


def hello_parts(buf: bytes) -> tuple[memoryview, memoryview]:
    """The meta and payload of a message holding exactly one HELLO frame, undecoded.

    Raises ProtocolError if it is anything else, or if the meta is over `HELLO_META_MAX_BYTES`: a hub
    decodes nothing an unauthenticated peer sent beyond that before the signature verifies."""
    end = len(buf)
    if end < HEADER_SIZE:
        raise ProtocolError("truncated frame header")
    length, ftype, _stream_id, meta_len = _unpack_from(buf, 0)
    if ftype != FrameType.HELLO:
        raise ProtocolError("expected a hello frame")
    if length < _REST or 4 + length != end or HEADER_SIZE + meta_len > end:
        raise ProtocolError("expected exactly one hello frame")
    if meta_len > HELLO_META_MAX_BYTES:
        raise ProtocolError(f"hello meta of {meta_len} bytes is over {HELLO_META_MAX_BYTES}")
    view = memoryview(buf)
    return view[HEADER_SIZE : HEADER_SIZE + meta_len], view[HEADER_SIZE + meta_len :]


_decode_hello = msgspec.msgpack.Decoder(HelloMessage).decode
_decode_catalog = msgspec.msgpack.Decoder(ModelsMessage).decode


def decode_hello(meta: memoryview) -> HelloMessage:
    """A HELLO's envelope (from `hello_parts`). Raises ProtocolError on malformed input."""
    try:
        return _decode_hello(meta)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ProtocolError(f"bad HELLO message: {exc}") from None


def decode_catalog(payload: memoryview) -> ModelsMessage:
    """A HELLO's payload: the agent's catalog. Raises ProtocolError on malformed input."""
    try:
        return _decode_catalog(payload)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ProtocolError(f"bad catalog in the HELLO: {exc}") from None


def challenge_payload(nonce: bytes, public_key: bytes) -> bytes:
    """The bytes an agent signs to answer a challenge."""
    return AUTH_CONTEXT + nonce + public_key
