"""Requests aiohttp's HTTP parser refuses, sent raw to a real hub: each gets the API's JSON error and a request id.

No route or middleware sees these (api/parser_errors.py answers them), so the shape is OpenAI's whatever
path the request named, and the connection is closed after the answer. The hub keeps serving, and logs
each refusal in one line, without a traceback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from testing.processes import HubProcess, http_json
from tests.e2e.conftest import FAST_HUB_ARGS

BODY = b'{"model":"m","messages":[]}'


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    hub = HubProcess(tmp_path_factory.mktemp("parser-hub"), *FAST_HUB_ARGS)
    yield hub
    hub.stop()


def _post(*headers: bytes, target: bytes = b"/v1/chat/completions", body: bytes = BODY) -> bytes:
    return b"\r\n".join([b"POST " + target + b" HTTP/1.1", b"Host: hub", *headers, b"", body])


CASES = {
    "too-many-headers": _post(*(b"X-H%d: v" % i for i in range(200)), b"Content-Length: %d" % len(BODY)),
    "overlong-request-line": _post(b"Content-Length: %d" % len(BODY), target=b"/v1/" + b"a" * 20000),
    "overlong-header": _post(b"X-Big: " + b"a" * 20000, b"Content-Length: %d" % len(BODY)),
    "length-and-chunked": _post(b"Content-Length: %d" % len(BODY), b"Transfer-Encoding: chunked"),
    "two-lengths": _post(b"Content-Length: %d" % len(BODY), b"Content-Length: 3"),
    "bad-chunk-size": _post(b"Transfer-Encoding: chunked", body=b"zz\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "bad-header-name": _post(b"Bad Name: v", b"Content-Length: %d" % len(BODY)),
    "not-http": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
}


async def _exchange(hub: HubProcess, raw: bytes) -> bytes:
    host, port = hub.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read(-1)  # the hub closes the connection after a refusal
    finally:
        writer.close()


@pytest.mark.parametrize("case", list(CASES))
async def test_a_request_the_parser_refuses_gets_a_json_error_with_a_request_id(hub: HubProcess, case: str) -> None:
    answer = await _exchange(hub, CASES[case])
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    # aiohttp knows nothing of a refused request, its version included, and answers as HTTP/1.0.
    assert lines[0] in ("HTTP/1.0 400 Bad Request", "HTTP/1.1 400 Bad Request"), answer[:200]
    assert headers["content-type"].startswith("application/json")
    assert headers["x-request-id"].startswith("req_")
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("Malformed HTTP request")
    status, _, _ = await asyncio.to_thread(http_json, "GET", hub.url + "/healthz")
    assert status == 200
    log = hub.log()
    assert "Traceback" not in log
    assert headers["x-request-id"] in log
