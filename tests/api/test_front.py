"""The front server's own decisions (api/front.py): which requests it answers and which bytes go to aiohttp.

A connection is driven by hand: bytes in, and what the front wrote or handed over out. The hub behind it refuses
every key, so a request the front answers itself comes back as its 401, in the route's dialect. What the answers
of a real hub look like on the wire is tests/e2e/test_http_framing.py's and tests/e2e/test_front.py's.
"""

from __future__ import annotations

import asyncio
import json
import random
from types import SimpleNamespace
from typing import Any, cast

import pytest

from potluck.api import front
from potluck.api.front import Front, FrontProtocol
from potluck.hub.errors import AuthError
from potluck.hub.services import HubServices

MAX_BODY = 1000
BODY = b'{"model":"m","messages":[]}'


def post(
    *headers: bytes, target: bytes = b"/v1/chat/completions", version: bytes = b"HTTP/1.1", body: bytes = BODY
) -> bytes:
    lines = [b"POST " + target + b" " + version, b"Host: hub", *headers]
    if not any(h.lower().startswith((b"content-length", b"transfer-encoding")) for h in headers):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Transport(asyncio.Transport):
    """What the front writes, and whether it closed or paused the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.heads = 0
        """Answers begun (each in one write)."""
        self.closed = False
        self.reading = True
        self.protocol: asyncio.BaseProtocol | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.heads += bytes(data[:9]) == b"HTTP/1.1 "
        self.written += data

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.protocol is not None:
                asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def answers(self) -> list[tuple[int, dict[str, str], Any]]:
        """Every whole answer written so far: (status, headers by lower-case name, JSON body)."""
        found = []
        rest = bytes(self.written)
        while rest:
            head, _, rest = rest.partition(b"\r\n\r\n")
            status_line, *lines = head.decode().split("\r\n")
            headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
            length = int(headers["content-length"])
            found.append((int(status_line.split(" ")[1]), headers, json.loads(rest[:length])))
            rest = rest[length:]
        return found


class Aiohttp(asyncio.Protocol):
    """Stands in for aiohttp's protocol: records what it is handed."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.made = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True

    def data_received(self, data: bytes) -> None:
        self.received += data


class Connection:
    def __init__(self, max_body: int = MAX_BODY, keepalive_timeout: float = 60) -> None:
        def refuse(secret: str | None) -> Any:
            raise AuthError("Invalid API key")

        hub = SimpleNamespace(keys=SimpleNamespace(authenticate=refuse))
        self.aiohttp: list[Aiohttp] = []
        self.front = Front(cast("HubServices", hub), max_body=max_body, keepalive_timeout=keepalive_timeout, cors=None)
        make = self.front.protocol_factory(self._aiohttp)
        self.protocol: FrontProtocol = make()
        self.transport = Transport()
        self.transport.protocol = self.protocol
        self.protocol.connection_made(self.transport)

    def _aiohttp(self) -> Aiohttp:
        self.aiohttp.append(Aiohttp())
        return self.aiohttp[-1]

    async def send(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.protocol.data_received(chunk)
        for _ in range(5):  # the answer's task, and the next request's
            await asyncio.sleep(0)

    @property
    def handed(self) -> bytes | None:
        """What aiohttp was handed, or None if the connection is still the front's."""
        if not self.aiohttp:
            return None
        assert len(self.aiohttp) == 1
        assert self.aiohttp[0].made
        return bytes(self.aiohttp[0].received)


async def test_a_plain_relayed_request_is_answered_by_the_front_in_its_routes_dialect() -> None:
    conn = Connection()
    await conn.send(post(), post(target=b"/v1/messages?beta=true", version=b"HTTP/1.1"))
    assert conn.handed is None
    (status, headers, body), (status2, headers2, body2) = conn.transport.answers()
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    assert headers["x-request-id"].startswith("req_")
    assert "date" in headers
    assert (status2, body2["type"], body2["error"]["type"]) == (401, "error", "authentication_error")
    assert headers2["request-id"] == headers2["x-request-id"] != headers["x-request-id"]
    assert not conn.transport.closed


async def test_a_request_in_pieces_is_answered_once_its_body_is_in() -> None:
    conn = Connection()
    request = post()
    await conn.send(*(request[i : i + 7] for i in range(0, len(request), 7)))
    assert conn.handed is None
    assert [status for status, _, _ in conn.transport.answers()] == [401]


UNUSUAL = {
    "another route": b"GET /v1/models HTTP/1.1\r\nHost: hub\r\n\r\n",
    "a route below": post(target=b"/v1/chat/completions/x"),
    "an absolute target": post(target=b"http://hub/v1/chat/completions"),
    "HTTP/1.0": post(version=b"HTTP/1.0"),
    "chunked": post(b"Transfer-Encoding: chunked", body=b"1b\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "length and chunked": post(b"Content-Length: 27", b"Transfer-Encoding: chunked"),
    "expect": post(b"Expect: 100-continue"),
    "upgrade": post(b"Connection: Upgrade", b"Upgrade: websocket"),
    "a repeated header": post(b"Authorization: Bearer a", b"Authorization: Bearer b"),
    "two lengths": post(b"Content-Length: 27", b"Content-Length: 3"),
    "no length": b"POST /v1/chat/completions HTTP/1.1\r\nHost: hub\r\n\r\n",
    "a bad length": post(b"Content-Length: x"),
    "a body over the limit": post(b"Content-Length: %d" % (MAX_BODY + 1), body=b""),
    "bare line feeds": post().replace(b"\r\n", b"\n"),
    "a bare line feed in a header": post(b"X-A: 1\nX-B: 2"),
    "a head over 8 KiB": post(b"X-Big: " + b"a" * 8200),
    "129 headers": post(*(b"X-H%d: v" % i for i in range(129))),
    "a bad header name": post(b"Bad Name: v"),
    "not HTTP": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
}


@pytest.mark.parametrize("request_bytes", UNUSUAL.values(), ids=UNUSUAL.keys())
async def test_anything_unusual_goes_to_aiohttp_whole(request_bytes: bytes) -> None:
    conn = Connection()
    await conn.send(request_bytes)
    assert conn.handed == request_bytes
    assert conn.transport.written == b""


async def test_a_connection_goes_to_aiohttp_from_the_first_byte_of_its_first_unusual_request() -> None:
    conn = Connection()
    other = b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n"
    await conn.send(post() + other[:5])  # pipelined: the second request's first bytes with the first
    before_its_head = conn.handed
    await conn.send(other[5:], post())
    assert before_its_head is None  # the front waited for its head
    assert conn.handed == other + post()  # from then on, everything is aiohttp's
    assert [status for status, _, _ in conn.transport.answers()] == [401]


async def test_bytes_that_cannot_begin_a_request_go_to_aiohttp_at_once() -> None:
    for start in (b"\x16\x03\x01", b" GET", b"get ", b"PROPFIND "):
        conn = Connection()
        await conn.send(start)
        assert conn.handed == start, start


EXPECTATIONS = {
    "an unknown expectation": (post(b"Expect: something"), 417, "invalid_request_error"),
    "another route's": (
        b"POST /api/login HTTP/1.1\r\nHost: hub\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}",
        417,
        "invalid_request_error",
    ),
    "a body over the limit": (
        post(b"Expect: 100-continue", b"Content-Length: %d" % (MAX_BODY + 1), body=b""),
        413,
        "request_too_large",
    ),
}


@pytest.mark.parametrize("case", EXPECTATIONS.values(), ids=EXPECTATIONS.keys())
async def test_an_expectation_the_hub_will_not_meet_is_refused_before_the_body(case: tuple[bytes, int, str]) -> None:
    request_bytes, status, code = case
    head = request_bytes[: request_bytes.index(b"\r\n\r\n") + 4]
    conn = Connection()
    await conn.send(head)  # the client waits for 100 Continue before it sends the body
    ((answered, headers, body),) = conn.transport.answers()
    assert (answered, body["error"]["code"]) == (status, code)
    assert headers["x-request-id"].startswith("req_")
    assert headers["connection"] == "close"
    assert b"100 Continue" not in conn.transport.written
    assert conn.transport.closed
    assert conn.handed is None


async def test_an_expectation_refused_on_the_messages_route_is_in_anthropics_shape() -> None:
    conn = Connection()
    await conn.send(post(b"Expect: x", target=b"/v1/messages"))
    ((status, headers, body),) = conn.transport.answers()
    assert (status, body["type"], body["error"]["type"]) == (417, "error", "invalid_request_error")
    assert headers["request-id"] == headers["x-request-id"]


async def test_an_expectation_the_hub_meets_or_cannot_judge_goes_to_aiohttp() -> None:
    for request_bytes in (
        post(b"Expect: 100-continue"),
        b"POST /api/login HTTP/1.1\r\nHost: hub\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n",
        post(b"Expect: something", version=b"HTTP/1.0"),  # HTTP/1.0 has no Expect: aiohttp ignores it
        post(b"Expect: something", b"Expect: else"),  # a header twice: aiohttp's to judge
    ):
        conn = Connection()
        await conn.send(request_bytes)
        assert conn.handed == request_bytes
        assert conn.transport.written == b""


async def test_requests_are_answered_one_at_a_time_and_reading_pauses_when_many_wait() -> None:
    conn = Connection(max_body=1 << 20)
    large = post(body=BODY[:-1] + b',"pad":"' + b"x" * 200_000 + b'"}')
    many = large * 12
    conn.protocol.data_received(many)  # the first request's answer has not run yet: the rest wait
    paused = not conn.transport.reading
    async with asyncio.timeout(30):
        while conn.transport.heads < many.count(b"POST "):
            await asyncio.sleep(0)
    assert paused
    assert conn.transport.reading
    assert conn.handed is None


async def test_connection_close_is_honoured_after_the_answer() -> None:
    conn = Connection()
    await conn.send(post(b"Connection: close"))
    ((status, headers, _),) = conn.transport.answers()
    assert (status, headers["connection"]) == (401, "close")
    assert conn.transport.closed


async def test_a_client_gone_mid_request_cancels_it(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = Connection()
    started = asyncio.Event()

    async def forever(*args: object, **kwargs: object) -> None:
        started.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(front, "serve_relay", forever)
    await conn.send(post())
    await started.wait()
    task = conn.protocol._task
    assert task is not None
    conn.protocol.connection_lost(ConnectionResetError())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert conn.transport.written == b""
    assert conn.protocol not in conn.front.connections


def serving_with(monkeypatch: pytest.MonkeyPatch, answer: Any) -> None:
    """The relay replaced by ``answer(out)``: what it writes is what the client gets."""

    async def serve(hub: object, route: object, rid: str, key: object, body: bytes, out: Any, **kw: object) -> None:
        await answer(out)

    monkeypatch.setattr(front, "serve_relay", serve)


async def test_a_body_of_known_length_in_parts_and_one_cut_short(monkeypatch: pytest.MonkeyPatch) -> None:
    async def in_parts(out: Any) -> None:
        await out.begin(200, [("content-type", "application/json")], 4)
        assert out.direct() is None  # only a chunked body is written from the agent's read callback
        await out.write(b"{}")
        await out.write(b"  ")
        await out.end()

    serving_with(monkeypatch, in_parts)
    conn = Connection()
    await conn.send(post())
    ((status, headers, body),) = conn.transport.answers()
    assert (status, headers["content-length"], body) == (200, "4", {})
    assert not conn.transport.closed

    async def cut(out: Any) -> None:
        await out.begin(200, [("content-type", "application/json")], 4)
        await out.write(b"{")
        out.cut()

    serving_with(monkeypatch, cut)
    conn = Connection()
    await conn.send(post())
    assert conn.transport.written.endswith(b"Content-Length: 4\r\n\r\n{")
    assert conn.transport.closed


async def test_a_failure_after_the_answer_began_closes_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fails(out: Any) -> None:
        await out.begin(200, [("content-type", "text/event-stream")], None)
        await out.write(b"data: 1\n\n")
        raise RuntimeError("a bug past the head")

    serving_with(monkeypatch, fails)
    conn = Connection()
    await conn.send(post(), post())  # the second request is never read: the first answer has no end
    assert conn.transport.written.count(b"HTTP/1.1 ") == 1
    assert conn.transport.written.endswith(b"9\r\ndata: 1\n\n\r\n")
    assert conn.transport.closed


async def test_the_keepalive_timer_waits_while_a_request_is_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    release = asyncio.Event()

    async def slow(out: Any) -> None:
        await release.wait()
        out.whole(200, [("content-type", "application/json")], b"{}")

    serving_with(monkeypatch, slow)
    conn = Connection(keepalive_timeout=0.01)
    await conn.send(post())
    await asyncio.sleep(0.05)  # several keep-alive periods pass while the request is answered
    assert not conn.transport.closed
    release.set()
    await conn.send()
    assert [status for status, _, _ in conn.transport.answers()] == [200]
    async with asyncio.timeout(5):
        while not conn.transport.closed:  # idle now: closed once a period has passed
            await asyncio.sleep(0.01)


async def test_mangled_requests_never_break_the_front() -> None:
    """Requests with bytes flipped, dropped or added, in pieces: the front answers each request it keeps in full,
    or hands aiohttp the rest of the connection from a request's first byte, and never raises."""
    rng = random.Random(20261205)
    seeds = [
        post(),
        post(b"Connection: close", b"Origin: https://a.example"),
        post(target=b"/v1/messages?beta=true", body=b'{"model":"m","max_tokens":1,"messages":[]}'),
        post() + b"GET /v1/models HTTP/1.1\r\nHost: hub\r\n\r\n",
    ]
    for _ in range(600):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            match rng.randrange(3):
                case 0:
                    data[at] = rng.randrange(256)
                case 1:
                    del data[at]
                case _:
                    data.insert(at, rng.choice(b"\r\n :\t\x00\x7fa0"))
        cuts = sorted(rng.sample(range(1, len(data)), 2))
        conn = Connection()
        await conn.send(bytes(data[: cuts[0]]), bytes(data[cuts[0] : cuts[1]]), bytes(data[cuts[1] :]))
        answered = conn.transport.answers()  # each one whole (it parses), and all the front's: 401s
        assert all(status == 401 for status, _, _ in answered), bytes(data)
        handed = conn.handed
        if handed is not None:
            assert bytes(data).endswith(handed), bytes(data)
