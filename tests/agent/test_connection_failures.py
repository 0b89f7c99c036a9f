"""Why a connection to the hub failed, in one line: real failures against real sockets on loopback."""

from __future__ import annotations

import socket

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from potluck.agent.daemon import describe_failure


async def _failure(url: str) -> BaseException:
    async with aiohttp.ClientSession() as http:
        try:
            await http.ws_connect(url)
        except aiohttp.ClientError as exc:
            return exc
    raise AssertionError(f"connecting to {url} did not fail")


async def test_a_refused_connect_is_one_line_naming_the_address() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    exc = await _failure(f"http://127.0.0.1:{port}/agent/connect")

    assert describe_failure(exc, "http://hub") == f"cannot connect to the hub at 127.0.0.1:{port}: Connection refused"
    assert "ConnectionKey" in repr(exc)  # what the log used to carry


async def test_tls_to_a_plain_http_hub_hints_at_http_and_a_wrong_path_names_the_status() -> None:
    async with TestServer(web.Application(), host="127.0.0.1") as server:
        port = server.port
        tls = describe_failure(await _failure(f"https://127.0.0.1:{port}/agent/connect"), "https://x")
        upgrade = describe_failure(await _failure(f"http://127.0.0.1:{port}/nowhere"), "http://x")

    assert tls == f"TLS with the hub at 127.0.0.1:{port} failed (WRONG_VERSION_NUMBER); " + (
        "is the hub serving plain HTTP (http://)?"
    )
    assert upgrade.startswith("the hub at http://x refused the WebSocket upgrade: 404")
    assert "\n" not in tls + upgrade
