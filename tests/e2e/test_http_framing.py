"""Raw HTTP/1.1 on the relay routes of a real hub process, spoken over plain sockets: keep-alive across routes,
pipelining, ``Connection: close`` and HTTP/1.0, framing the parser refuses, bad bodies, slow and vanishing clients,
and the headers of an answer. What a client sees on the wire, whichever server parses the bytes.

One hub (small body limit, one-second header and body deadlines), one agent and one fake backend serve the module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from testing.fake_backend import FakeBackend, RequestRecord
from testing.helpers import sse_events
from testing.processes import HubProcess
from testing.raw_http import READ_TIMEOUT, Answer, Conn, request
from tests.e2e.conftest import FAST_HUB_ARGS, Fleet

pytestmark = pytest.mark.slow

MAX_BODY = 64 * 1024
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
SWEEP_MARGIN = 1.5
"""How late past a deadline the hub may close: its sweep runs every quarter deadline, plus a loaded machine."""
CHAT = "/v1/chat/completions"
EIGHT_TOKENS = "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "


@dataclass(frozen=True)
class World:
    hub: HubProcess
    backend: FakeBackend
    model: str
    key: str
    port: int


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("framing")
    hub = HubProcess(
        root / "hub",
        *FAST_HUB_ARGS,
        *("--max-body-bytes", str(MAX_BODY)),
        *("--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT)),
    )
    try:
        fleet = Fleet(hub, root / "fleet")
        try:
            model = fleet.model("framing")
            backend, url = fleet.backend(model)
            agent = fleet.agent(url, wait=False)
            hub.wait_agent(agent.name, models={model})
            yield World(hub, backend, model, fleet.key, int(hub.url.rsplit(":", 1)[1]))
        finally:
            fleet.close()
    finally:
        hub.stop()


# -- the client side of HTTP/1.1, strict about framing ----------------------------------------------------------------


def chat_body(world: World, marker: str = "hi", **fields: Any) -> bytes:
    return json.dumps({"model": world.model, "messages": [{"role": "user", "content": marker}], **fields}).encode()


def post_chat(world: World, *headers: str, marker: str = "hi", **fields: Any) -> bytes:
    return request("POST", CHAT, chat_body(world, marker, **fields), *headers, key=world.key)


def assert_chat(answer: Answer, content: str = EIGHT_TOKENS) -> None:
    assert answer.status == 200, answer
    reply = answer.json()
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["content"] == content


def streamed_text(answer: Answer) -> str:
    """The content of a chat stream, which must end with ``data: [DONE]``."""
    events = sse_events(answer.body)
    assert events[-1] == "[DONE]", answer.body[-200:]
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])


def recorded(world: World, marker: str) -> RequestRecord | None:
    """The backend's record of the chat request whose message was ``marker``."""
    for record in list(world.backend.records):
        body = record.json or {}
        messages = body.get("messages") or [{}]
        if messages[0].get("content") == marker:
            return record
    return None


async def assert_still_serving(world: World) -> None:
    async with Conn.open(world.port) as conn:
        await conn.send(post_chat(world))
        assert_chat(await conn.answer())


def assert_openai_error(answer: Answer, status: int, kind: str = "invalid_request_error") -> dict[str, Any]:
    assert answer.status == status, answer
    assert (answer.header("content-type") or "").startswith("application/json"), answer.headers
    assert answer.request_id
    error = answer.json()["error"]
    assert error["type"] == kind
    assert isinstance(error["message"], str)
    assert error["message"]
    return dict(error)


# -- keep-alive and pipelining ----------------------------------------------------------------------------------------


async def test_one_connection_serves_every_route_and_request_framing_in_turn(world: World) -> None:
    ids: list[str] = []
    chunked_marker, expect_marker = f"chunked-{uuid.uuid4().hex}", f"expect-{uuid.uuid4().hex}"
    async with Conn.open(world.port) as conn:
        await conn.send(post_chat(world))
        answer = await conn.answer()
        assert_chat(answer)
        ids.append(answer.request_id)

        await conn.send(request("GET", "/v1/models", key=world.key))
        answer = await conn.answer()
        assert answer.status == 200, answer
        assert world.model in [m["id"] for m in answer.json()["data"]]
        ids.append(answer.request_id)

        await conn.send(post_chat(world, stream=True))
        answer = await conn.answer()
        assert answer.status == 200, answer
        assert answer.chunked
        assert streamed_text(answer) == EIGHT_TOKENS
        ids.append(answer.request_id)

        await conn.send(
            request("POST", "/v1/embeddings", json.dumps({"model": world.model, "input": "hi"}).encode(), key=world.key)
        )
        answer = await conn.answer()
        assert answer.status == 200, answer
        assert answer.json()["object"] == "list"
        assert len(answer.json()["data"][0]["embedding"]) == 8
        ids.append(answer.request_id)

        prompt = json.dumps({"model": world.model, "prompt": "hi", "max_tokens": 3}).encode()
        await conn.send(request("POST", "/v1/completions", prompt, key=world.key))
        answer = await conn.answer()
        assert answer.status == 200, answer
        assert answer.json()["object"] == "text_completion"
        assert answer.json()["choices"][0]["text"] == "tok0 tok1 tok2 "
        ids.append(answer.request_id)

        # A chunked request body, in three chunks of uneven sizes (the last one in the same write as the end).
        body = chat_body(world, chunked_marker)
        pieces = [body[:5], body[5:40], body[40:]]
        framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        head = request(
            "POST",
            CHAT,
            b"",
            "Content-Type: application/json",
            "Transfer-Encoding: chunked",
            key=world.key,
            length=False,
        )
        await conn.send(head + framed)
        answer = await conn.answer()
        assert_chat(answer)
        ids.append(answer.request_id)

        # Expect: 100-continue: the body goes only once the hub said to go on.
        body = chat_body(world, expect_marker)
        head = request(
            "POST", CHAT, b"", "Expect: 100-continue", f"Content-Length: {len(body)}", key=world.key, length=False
        )
        await conn.send(head)
        version, status, _ = await conn.head()
        assert (version, status) == ("HTTP/1.1", 100)
        await conn.send(body)
        answer = await conn.answer()
        assert answer.interim == []
        assert_chat(answer)
        ids.append(answer.request_id)

        await conn.send(post_chat(world))
        answer = await conn.answer()
        assert_chat(answer)
        ids.append(answer.request_id)

    assert len(set(ids)) == len(ids) == 8
    for marker in (chunked_marker, expect_marker):
        record = recorded(world, marker)
        assert record is not None, marker
        assert record.json is not None
        assert record.json["model"] == world.model


async def test_messages_with_and_without_beta_count_tokens_and_responses_answer_on_one_connection(world: World) -> None:
    message = {"model": world.model, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    ids: list[str] = []
    async with Conn.open(world.port) as conn:
        for target in ("/v1/messages", "/v1/messages?beta=true"):
            await conn.send(
                request("POST", target, json.dumps(message).encode(), "anthropic-version: 2023-06-01", key=world.key)
            )
            answer = await conn.answer()
            assert answer.status == 200, answer
            assert answer.json()["type"] == "message"
            assert answer.json()["content"][0]["text"] == EIGHT_TOKENS
            assert answer.header("request-id") == answer.request_id
            ids.append(answer.request_id)

        counted = {"model": world.model, "messages": [{"role": "user", "content": "hello there"}]}
        await conn.send(request("POST", "/v1/messages/count_tokens", json.dumps(counted).encode(), key=world.key))
        answer = await conn.answer()
        assert answer.status == 200, answer
        assert answer.json()["input_tokens"] > 0
        ids.append(answer.request_id)

        await conn.send(
            request("POST", "/v1/responses", json.dumps({"model": world.model, "input": "hi"}).encode(), key=world.key)
        )
        answer = await conn.answer()
        assert answer.status == 200, answer
        assert answer.json()["status"] == "completed"
        ids.append(answer.request_id)
    assert len(set(ids)) == 4


def pipelined(world: World, kind: str, n: int) -> tuple[bytes, str]:
    """A request of ``kind`` (``chat`` or ``models``), n-th in its pipeline, and what its answer holds."""
    if kind == "models":
        return request("GET", "/v1/models", key=world.key), "list"
    # Each chat answers a different number of tokens, so an answer out of order shows; the first one is slow.
    tokens = 2 + n
    delay = 0.2 if n == 0 else 0.0
    text = "".join(f"tok{i} " for i in range(tokens))
    return post_chat(world, fake={"chunks": tokens, "first_delay": delay}), text


@pytest.mark.parametrize("kinds", [("chat", "chat"), ("chat", "models"), ("models", "chat")], ids="-then-".join)
async def test_pipelined_requests_in_one_write_are_answered_in_order(world: World, kinds: tuple[str, str]) -> None:
    requests = [pipelined(world, kind, n) for n, kind in enumerate(kinds)]
    async with Conn.open(world.port) as conn:
        await conn.send(b"".join(raw for raw, _ in requests))
        answers = [await conn.answer() for _ in requests]
        await conn.send(post_chat(world))
        assert_chat(await conn.answer())  # the connection goes on serving
    for (_, expected), answer in zip(requests, answers, strict=True):
        assert answer.status == 200, answer
        if expected == "list":
            assert world.model in [m["id"] for m in answer.json()["data"]]
        else:
            assert_chat(answer, expected)
    assert answers[0].request_id != answers[1].request_id


# -- the end of a connection ------------------------------------------------------------------------------------------


async def test_connection_close_is_answered_then_closed(world: World) -> None:
    async with Conn.open(world.port) as conn:
        await conn.send(post_chat(world, "Connection: close"))
        answer = await conn.answer()
        assert_chat(answer)
        assert answer.header("connection") == "close"
        assert await conn.rest() == b""


async def test_http10_is_answered_in_http10_and_closed_unless_it_asked_for_keep_alive(world: World) -> None:
    async with Conn.open(world.port) as conn:
        await conn.send(request("POST", CHAT, chat_body(world), key=world.key, version="HTTP/1.0"))
        answer = await conn.answer()
        assert answer.version == "HTTP/1.0"
        assert_chat(answer)
        assert answer.header("content-length") == str(len(answer.body))
        assert await conn.rest() == b""

    async with Conn.open(world.port) as conn:
        for _ in range(2):
            await conn.send(
                request("POST", CHAT, chat_body(world), "Connection: keep-alive", key=world.key, version="HTTP/1.0")
            )
            answer = await conn.answer()
            assert answer.version == "HTTP/1.0"
            assert_chat(answer)
            assert (answer.header("connection") or "").lower() == "keep-alive"

    # A stream cannot be chunked in HTTP/1.0: its end is the end of the connection.
    async with Conn.open(world.port) as conn:
        await conn.send(request("POST", CHAT, chat_body(world, stream=True), key=world.key, version="HTTP/1.0"))
        answer = await conn.answer()
        assert (answer.version, answer.status, answer.chunked) == ("HTTP/1.0", 200, False)
        assert answer.header("content-length") is None
        assert streamed_text(answer) == EIGHT_TOKENS


# -- requests refused ------------------------------------------------------------------------------------------------


def refused(world: World, case: str, marker: str) -> bytes:
    body = chat_body(world, marker)
    if case == "length-and-chunked":
        return request("POST", CHAT, body, "Transfer-Encoding: chunked", key=world.key)
    if case == "two-lengths":
        return request("POST", CHAT, body, f"Content-Length: {len(body) + 1}", key=world.key)
    if case == "non-numeric-length":
        return request("POST", CHAT, body, "Content-Length: 12a", key=world.key, length=False)
    if case == "malformed-request-line":
        return request("POST", CHAT, body, key=world.key).replace(b"POST /", b"POST/", 1)
    if case == "overlong-header":
        return request("POST", CHAT, body, "X-Big: " + "a" * 8191, key=world.key)
    assert case == "body-over-the-limit"
    return request("POST", CHAT, b" " * (MAX_BODY + 1024) + body, key=world.key)


PARSER_REFUSALS = [
    "length-and-chunked",
    "two-lengths",
    "non-numeric-length",
    "malformed-request-line",
    "overlong-header",
]


@pytest.mark.parametrize("case", [*PARSER_REFUSALS, "body-over-the-limit"])
async def test_bad_framing_gets_a_json_error_and_the_hub_keeps_serving(world: World, case: str) -> None:
    marker = f"refused-{uuid.uuid4().hex}"
    async with Conn.open(world.port) as conn:
        await conn.send(refused(world, case, marker))
        answer = await conn.answer()
        if case in PARSER_REFUSALS:
            assert_openai_error(answer, 400)
            assert await conn.rest() == b""  # nothing after a request the parser refused can be trusted
        else:
            error = assert_openai_error(answer, 413)
            assert error["code"] == "request_too_large"
    assert recorded(world, marker) is None
    await assert_still_serving(world)


@pytest.mark.parametrize(
    ("target", "expect", "length", "status", "code"),
    [
        (CHAT, "100-continue", MAX_BODY + 1, 413, "request_too_large"),
        (CHAT, "something-else", 2, 417, "invalid_request_error"),
        ("/api/login", "something-else", 2, 417, "invalid_request_error"),
    ],
    ids=["too-large-for-100-continue", "unknown-on-chat", "unknown-on-another-route"],
)
async def test_an_expectation_the_hub_will_not_meet_is_refused_before_the_body(
    world: World, target: str, expect: str, length: int, status: int, code: str
) -> None:
    async with Conn.open(world.port) as conn:
        head = request(
            "POST", target, b"", f"Expect: {expect}", f"Content-Length: {length}", key=world.key, length=False
        )
        await conn.send(head)  # and wait, as a client expecting 100 Continue does
        answer = await conn.answer()
        assert answer.interim == []  # no 100 Continue: the body is never asked for
        error = assert_openai_error(answer, status)
        assert error["code"] == code
        assert await conn.rest() == b""
    await assert_still_serving(world)


def nested(world: World, depth: int) -> bytes:
    head = chat_body(world)
    return head[:-1] + b',"x":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


BAD_BODIES: dict[str, tuple[str, int, str]] = {
    # case: (route, status, error type)
    "invalid-json": (CHAT, 400, "invalid_request_error"),
    "nested-1000-deep": (CHAT, 400, "invalid_request_error"),
    "missing-model": (CHAT, 400, "invalid_request_error"),
    "wrong-key": (CHAT, 401, "invalid_request_error"),
    "missing-key": (CHAT, 401, "invalid_request_error"),
    "messages-invalid-json": ("/v1/messages", 400, "invalid_request_error"),
    "messages-missing-key": ("/v1/messages", 401, "authentication_error"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_a_bad_request_gets_its_dialects_error_and_the_connection_goes_on(world: World, case: str) -> None:
    route, status, kind = BAD_BODIES[case]
    body = {
        "invalid-json": b'{"model": "x", nope',
        "nested-1000-deep": nested(world, 1000),
        "missing-model": json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(),
        "messages-invalid-json": b'{"model": "x", nope',
    }.get(case, chat_body(world))
    key = {"wrong-key": "pk-wrong", "missing-key": None, "messages-missing-key": None}.get(case, world.key)
    async with Conn.open(world.port) as conn:
        await conn.send(request("POST", route, body, key=key))
        answer = await conn.answer()
        if route == CHAT:
            error = assert_openai_error(answer, status, kind)
            if case == "missing-model":
                assert error["param"] == "model"
            if status == 401:
                assert error["code"] == "invalid_api_key"
        else:
            assert answer.status == status, answer
            assert (answer.header("content-type") or "").startswith("application/json"), answer.headers
            assert answer.header("request-id") == answer.request_id
            payload = answer.json()
            assert payload["type"] == "error"
            assert payload["error"]["type"] == kind
            assert payload["error"]["message"]
        await conn.send(post_chat(world))
        assert_chat(await conn.answer())


# -- slow and vanishing clients --------------------------------------------------------------------------------------


async def test_a_chat_body_that_stalls_halfway_is_closed_after_the_body_timeout(world: World) -> None:
    marker = f"stalled-{uuid.uuid4().hex}"
    raw = post_chat(world, marker=marker)
    async with Conn.open(world.port) as conn:
        started = time.monotonic()  # before the last byte, from which the hub counts
        await conn.send(raw[: len(raw) - len(chat_body(world, marker)) // 2])
        received = await conn.rest(BODY_TIMEOUT + SWEEP_MARGIN + 2)
        elapsed = time.monotonic() - started
    assert received == b""  # closed, not answered: the request never ended
    assert BODY_TIMEOUT <= elapsed < BODY_TIMEOUT + SWEEP_MARGIN
    assert recorded(world, marker) is None
    await assert_still_serving(world)


async def test_chat_headers_trickled_a_byte_at_a_time_are_closed_after_the_header_timeout(world: World) -> None:
    raw = post_chat(world, "X-Pad: " + "p" * 200)
    started = time.monotonic()  # before the connect, from which the hub counts
    async with Conn.open(world.port) as conn:

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for byte in raw[: raw.index(b"\r\n\r\n")]:
                    await conn.send(bytes([byte]))
                    await asyncio.sleep(0.02)  # the pace of a slow client, not a synchronisation

        sender = asyncio.create_task(trickle())
        try:
            received = await conn.rest(HEADER_TIMEOUT + SWEEP_MARGIN + 2)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        elapsed = time.monotonic() - started
    assert received == b""
    assert HEADER_TIMEOUT <= elapsed < HEADER_TIMEOUT + SWEEP_MARGIN
    await assert_still_serving(world)


async def test_a_client_leaving_a_stream_cancels_it_on_the_backend_and_the_hub_serves_on(world: World) -> None:
    marker = f"leaving-{uuid.uuid4().hex}"
    async with Conn.open(world.port) as conn:
        await conn.send(post_chat(world, marker=marker, stream=True, fake={"chunks": 200, "delay": 0.05}))
        version, status, headers = await conn.head()
        assert (version, status) == ("HTTP/1.1", 200)
        request_id = dict(headers)["x-request-id"]
        async with asyncio.timeout(READ_TIMEOUT):
            first = await conn.reader.readuntil(b"\n\n")  # the first event is in
        assert b"data: {" in first
        conn.writer.transport.abort()
    assert await world.backend.wait_for_async(lambda: getattr(recorded(world, marker), "disconnected", False), 5.0)
    record = recorded(world, marker)
    assert record is not None
    assert not record.completed
    usage = await asyncio.to_thread(world.hub.usage_of, request_id)
    assert usage["outcome"] == "client_cancelled"
    assert usage["completion_tokens"] < 200
    await assert_still_serving(world)


# -- the headers of an answer ----------------------------------------------------------------------------------------


async def test_a_plain_chat_answer_has_its_length_type_and_nosniff(world: World) -> None:
    async with Conn.open(world.port) as conn:
        await conn.send(post_chat(world))
        answer = await conn.answer()
    assert_chat(answer)
    assert not answer.chunked
    assert answer.header("transfer-encoding") is None
    assert answer.header("content-length") == str(len(answer.body))
    assert (answer.header("content-type") or "").split(";")[0] == "application/json"
    assert answer.header("x-content-type-options") == "nosniff"


async def test_a_streamed_chat_answer_is_chunked_event_stream_not_cached(world: World) -> None:
    async with Conn.open(world.port) as conn:
        await conn.send(post_chat(world, stream=True))
        answer = await conn.answer()
    assert answer.status == 200, answer
    assert answer.chunked
    assert answer.header("transfer-encoding") == "chunked"
    assert answer.header("content-length") is None
    assert (answer.header("content-type") or "").split(";")[0] == "text/event-stream"
    assert answer.header("cache-control") == "no-cache"
    assert answer.header("x-content-type-options") == "nosniff"
    assert streamed_text(answer) == EIGHT_TOKENS
