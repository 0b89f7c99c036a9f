"""The tunnel's binary framing: every message type round-trips, and malformed bytes raise ProtocolError."""

from __future__ import annotations

import struct

import msgspec
import pytest

from potluck.protocol.agent import (
    AUTH_CONTEXT,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    BackendInfo,
    CancelMessage,
    ChallengeMessage,
    CreditMessage,
    DrainMessage,
    EndMessage,
    ErrorInfo,
    FrameType,
    HeadMessage,
    HelloMessage,
    LoadMessage,
    Message,
    ModelInfo,
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
    challenge_payload,
    encode_data,
    encode_frame,
    iter_frames,
)
from potluck.protocol.metrics import GpuMetrics, HostMetrics

MESSAGES: list[tuple[Message, FrameType]] = [
    (
        HelloMessage(
            protocol_version=PROTOCOL_VERSION,
            agent_version="1.2.3",
            public_key=b"k" * 32,
            signature=b"s" * 64,
            name="gpu-box",
            max_concurrency=4,
            enrol_token="pat-abc",
            draining=True,
        ),
        FrameType.HELLO,
    ),
    (HeadMessage(200, [("content-type", "text/event-stream"), ("x-a", "b")]), FrameType.HEAD),
    (
        EndMessage(
            "req_1",
            error=ErrorInfo(502, "backend_unavailable", "refused", retriable=True),
            usage=Usage(1, 2, 3),
            cancelled=True,
            ttft_s=0.25,
            total_s=1.5,
        ),
        FrameType.END,
    ),
    (ModelsMessage([ModelInfo("a"), ModelInfo("b", hot=False)], [BackendInfo("http://x")]), FrameType.MODELS),
    (StateMessage(in_flight=3, draining=True, max_concurrency=8), FrameType.STATE),
    (
        LoadMessage(
            in_flight=2,
            host=HostMetrics(
                cpu_pct=12.5,
                ram_used_bytes=1 << 30,
                ram_total_bytes=8 << 30,
                gpus=[
                    GpuMetrics(
                        index=0,
                        name="NVIDIA H100 80GB HBM3",
                        vendor="nvidia",
                        utilization_pct=40.0,
                        memory_used_bytes=10 << 30,
                        memory_total_bytes=80 << 30,
                    )
                ],
                source="nvml",
            ),
            backends=[BackendInfo(url="http://127.0.0.1:8000", kind="vllm", running=3, waiting=1, kv_cache_usage=0.25)],
        ),
        FrameType.LOAD,
    ),
    (ChallengeMessage(b"\x00\xff" * 16, PROTOCOL_VERSION, "0.1.0"), FrameType.CHALLENGE),
    (WelcomeMessage("agt_1", 5.0, 15.0, 262144), FrameType.WELCOME),
    (RejectMessage("bad_token", "no", retry=True), FrameType.REJECT),
    (
        RequestMessage(
            "req_2",
            "POST",
            "/v1/chat/completions",
            "llama",
            stream=True,
            strip_usage=True,
            headers={"content-type": "application/json"},
        ),
        FrameType.REQUEST,
    ),
    (CancelMessage("req_3", "client_disconnect"), FrameType.CANCEL),
    (CreditMessage(65536), FrameType.CREDIT),
    (DrainMessage(30.0), FrameType.DRAIN),
    (RefreshMessage(), FrameType.REFRESH),
    (PingMessage(123.5), FrameType.PING),
    (PongMessage(123.5), FrameType.PONG),
]


@pytest.mark.parametrize(("message", "ftype"), MESSAGES, ids=[type(m).__name__ for m, _ in MESSAGES])
def test_every_message_type_round_trips(message: Message, ftype: FrameType) -> None:
    frames = list(iter_frames(encode_frame(message, stream_id=7, payload=b"body bytes")))

    assert len(frames) == 1
    (frame,) = frames
    assert frame.type == ftype
    assert frame.stream_id == 7
    assert frame.message == message
    assert type(frame.message) is type(message)
    assert frame.payload == b"body bytes"


def test_every_message_type_has_a_frame_type() -> None:
    assert {ft for _, ft in MESSAGES} == set(FrameType) - {FrameType.DATA}


def test_many_frames_in_one_buffer_decode_in_order() -> None:
    parts = [encode_frame(m, stream_id=i, payload=bytes([i]) * i) for i, (m, _) in enumerate(MESSAGES)]
    parts.insert(3, encode_data(99, b"data: {}\n\n"))
    parts.append(encode_data(100, b""))

    frames = list(iter_frames(b"".join(parts)))

    assert len(frames) == len(MESSAGES) + 2
    assert frames[3].type == FrameType.DATA
    assert frames[3].stream_id == 99
    assert frames[3].message is None
    assert frames[3].payload == b"data: {}\n\n"
    assert frames[-1].type == FrameType.DATA
    assert frames[-1].payload == b""
    decoded = [f for f in frames if f.type != FrameType.DATA]
    assert [f.message for f in decoded] == [m for m, _ in MESSAGES]
    assert [f.payload for f in decoded] == [bytes([i]) * i for i in range(len(MESSAGES))]


def test_data_frame_payload_passes_through_untouched() -> None:
    payload = bytes(range(256)) * 4
    (frame,) = iter_frames(encode_data(0xFFFFFFFF, payload))
    assert frame.type == FrameType.DATA
    assert frame.stream_id == 0xFFFFFFFF
    assert frame.message is None
    assert frame.payload == payload


def test_empty_data_payload_round_trips() -> None:
    data = encode_data(1, b"")
    assert len(data) == HEADER_SIZE
    (frame,) = iter_frames(data)
    assert frame.payload == b""


def test_message_without_payload_round_trips_with_empty_payload() -> None:
    (frame,) = iter_frames(encode_frame(CreditMessage(10), 3))
    assert frame.payload == b""
    assert frame.message == CreditMessage(10)


def test_large_payloads_round_trip() -> None:
    big = b"x" * (8 * 1024 * 1024 + 3)
    request = RequestMessage("req", "POST", "/v1/completions", "m", stream=False)
    frames = list(iter_frames(encode_frame(request, 1, big) + encode_data(2, big)))
    assert [len(f.payload) for f in frames] == [len(big), len(big)]
    assert frames[0].payload == big
    assert frames[1].payload == big


def test_empty_buffer_yields_no_frames() -> None:
    assert list(iter_frames(b"")) == []


@pytest.mark.parametrize("cut", [1, 4, HEADER_SIZE - 1])
def test_truncated_header_raises_protocol_error(cut: int) -> None:
    with pytest.raises(ProtocolError, match="truncated"):
        list(iter_frames(encode_frame(PingMessage(1.0))[:cut]))


def test_truncated_header_after_a_good_frame_raises_protocol_error() -> None:
    good = encode_frame(PingMessage(1.0))
    with pytest.raises(ProtocolError):
        list(iter_frames(good + good[:5]))


def test_frame_longer_than_buffer_raises_protocol_error() -> None:
    frame = encode_data(1, b"hello")
    with pytest.raises(ProtocolError, match="out of bounds"):
        list(iter_frames(frame[:-1]))


def test_length_smaller_than_header_raises_protocol_error() -> None:
    bad = struct.pack("!IBII", 3, FrameType.DATA, 1, 0) + b"\x00" * 8
    with pytest.raises(ProtocolError, match="out of bounds"):
        list(iter_frames(bad))


def test_meta_length_beyond_frame_raises_protocol_error() -> None:
    bad = struct.pack("!IBII", 9 + 2, FrameType.PING, 0, 50) + b"ab"
    with pytest.raises(ProtocolError, match="out of bounds"):
        list(iter_frames(bad))


def test_unknown_frame_type_raises_protocol_error() -> None:
    bad = struct.pack("!IBII", 9, 99, 0, 0)
    with pytest.raises(ProtocolError, match="unknown frame type 99"):
        list(iter_frames(bad))


def test_bad_msgpack_meta_raises_protocol_error() -> None:
    meta = b"\xc1\xc1\xc1"  # 0xc1 is never valid msgpack
    bad = struct.pack("!IBII", 9 + len(meta), FrameType.PING, 0, len(meta)) + meta
    with pytest.raises(ProtocolError, match="bad PING message"):
        list(iter_frames(bad))


def test_meta_of_the_wrong_message_type_raises_protocol_error() -> None:
    meta = msgspec.msgpack.encode(CreditMessage(5))
    bad = struct.pack("!IBII", 9 + len(meta), FrameType.END, 0, len(meta)) + meta
    with pytest.raises(ProtocolError, match="bad END message"):
        list(iter_frames(bad))


def test_meta_with_wrong_field_types_raises_protocol_error() -> None:
    meta = msgspec.msgpack.encode({"type": "credit", "bytes": "lots"})
    bad = struct.pack("!IBII", 9 + len(meta), FrameType.CREDIT, 0, len(meta)) + meta
    with pytest.raises(ProtocolError):
        list(iter_frames(bad))


def test_challenge_payload_is_context_then_nonce_then_key() -> None:
    nonce = b"n" * 32
    key = b"k" * 32
    payload = challenge_payload(nonce, key)
    assert payload == AUTH_CONTEXT + nonce + key
    assert payload.startswith(b"potluck-agent-auth-v1\x00")
    assert challenge_payload(b"m" * 32, key) != payload


@pytest.mark.parametrize("ftype", list(FrameType))
def test_a_deeply_nested_meta_is_a_protocol_error_not_a_crash(ftype: FrameType) -> None:
    from potluck.protocol.agent import _HEADER, _REST

    meta = b"\x81\xa7unknown" + b"\x91" * 100_000 + b"\xc0"  # an unknown field nested 100,000 levels deep
    frame = _HEADER.pack(_REST + len(meta), ftype, 1, len(meta)) + meta
    if ftype == FrameType.DATA:
        assert [f.type for f in iter_frames(frame)] == [FrameType.DATA]  # DATA's meta is never decoded
        return
    with pytest.raises(ProtocolError, match="recursion"):
        list(iter_frames(frame))
