"""Before an agent is authenticated it costs the hub almost nothing: hostile handshakes against a real hub.

The hub reads one message of bounded size, decodes at most `HELLO_META_MAX_BYTES` of it before the signature
verifies, decodes the catalog only after, caps it, and limits handshakes in progress per address. Every
refusal is a REJECT with a code and a WebSocket close code, and none leaves a traceback in the hub's log.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import aiohttp
import msgspec
import pytest

from potluck.protocol.agent import (
    HELLO_META_MAX_BYTES,
    PROTOCOL_VERSION,
    FrameType,
    RejectMessage,
    WelcomeMessage,
)
from testing.processes import HubProcess
from testing.rogue_agent import (
    HandshakeResult,
    RejectedByHubError,
    challenge,
    handshake,
    hello_frame,
    nested_msgpack,
    raw_frame,
)
from tests.e2e.conftest import FAST_HUB_ARGS

POLICY = aiohttp.WSCloseCode.POLICY_VIOLATION


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    hub = HubProcess(tmp_path_factory.mktemp("handshake-hub"), *FAST_HUB_ARGS)
    yield hub
    hub.stop()


def rejected(result: HandshakeResult, code: str) -> RejectMessage:
    assert isinstance(result.answer, RejectMessage), result
    assert result.answer.code == code, result.answer
    return result.answer


async def test_an_oversized_pre_auth_message_is_refused_unread(hub: HubProcess) -> None:
    async with aiohttp.ClientSession() as http:
        result = await handshake(http, hub.url, lambda nonce: b"\0" * (8 << 20))
    assert result.answer is None  # no REJECT: the hub refused the message from its length, unread
    # 1009 when the close reaches us first; 1006 when the hub's close cuts the rest of our send short.
    assert result.close_code in (aiohttp.WSCloseCode.MESSAGE_TOO_BIG, aiohttp.WSCloseCode.ABNORMAL_CLOSURE)
    assert "Traceback" not in hub.log()


async def test_a_hello_envelope_over_the_limit_is_refused_before_decoding(hub: HubProcess) -> None:
    # Protocol 2 carried the catalog in the envelope: a big one is never decoded before the signature now.
    fat = {"type": "hello", "protocol_version": PROTOCOL_VERSION, "models": [{"id": f"m{i}"} for i in range(5000)]}
    meta = msgspec.msgpack.encode(fat)
    async with aiohttp.ClientSession() as http:
        result = await handshake(http, hub.url, lambda nonce: raw_frame(FrameType.HELLO, meta))
    reject = rejected(result, "protocol_error")
    assert f"over {HELLO_META_MAX_BYTES}" in reject.message
    assert result.close_code == POLICY


async def test_the_signature_is_checked_before_the_catalog_is_decoded(hub: HubProcess) -> None:
    garbage = b"\xc1" * (256 << 10)  # 0xc1 is never valid msgpack
    async with aiohttp.ClientSession() as http:
        result = await handshake(http, hub.url, lambda nonce: hello_frame(nonce, bad_signature=True, catalog=garbage))
    rejected(result, "bad_signature")
    assert result.close_code == POLICY


async def test_a_hello_with_a_huge_catalog_and_a_bad_signature_costs_one_bounded_message(hub: HubProcess) -> None:
    models = [f"model-{i:07d}" for i in range(100_000)]  # ~1.6 MiB: over the message limit
    async with aiohttp.ClientSession() as http:
        result = await handshake(http, hub.url, lambda nonce: hello_frame(nonce, bad_signature=True, models=models))
    assert result.answer is None
    assert result.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


@pytest.mark.parametrize(
    ("models", "why"),
    [([f"m{i}" for i in range(1025)], "1025 models"), (["m" * 300], "over 256 characters")],
    ids=["too-many-models", "name-too-long"],
)
async def test_a_signed_catalog_over_the_caps_is_rejected(hub: HubProcess, models: list[str], why: str) -> None:
    async with aiohttp.ClientSession() as http:
        result = await handshake(http, hub.url, lambda nonce: hello_frame(nonce, models=models))
    reject = rejected(result, "catalog_too_large")
    assert why in reject.message
    assert reject.retry is False
    assert result.close_code == POLICY


@pytest.mark.parametrize("where", ["unknown-field", "name-field", "catalog"])
async def test_a_deeply_nested_hello_is_a_clean_reject(hub: HubProcess, where: str) -> None:
    deep = nested_msgpack(1000)

    def make(nonce: bytes) -> bytes:
        if where == "catalog":
            return hello_frame(nonce, catalog=deep)
        key = b"\xa1x" if where == "unknown-field" else b"\xa4name"
        return raw_frame(FrameType.HELLO, b"\x82\xa4type\xa5hello" + key + deep)

    async with aiohttp.ClientSession() as http:
        result = await handshake(http, hub.url, make)
    rejected(result, "protocol_error")
    assert result.close_code == POLICY
    assert "Traceback" not in hub.log()
    assert "RecursionError" not in hub.log()


async def test_garbage_before_the_hello_is_a_clean_reject(hub: HubProcess) -> None:
    async with aiohttp.ClientSession() as http:
        result = await handshake(http, hub.url, lambda nonce: b"\xff" * 100)
    rejected(result, "protocol_error")
    assert result.close_code == POLICY


async def test_handshakes_in_progress_are_capped_per_address(hub: HubProcess) -> None:
    async with aiohttp.ClientSession() as http, contextlib.AsyncExitStack() as stack:
        pending = []
        for _ in range(4):  # the default --agent-max-pending-handshakes-per-ip
            ws, _nonce = await challenge(http, hub.url)
            stack.push_async_callback(ws.close)
            pending.append(ws)
        with pytest.raises(RejectedByHubError) as refused:
            await challenge(http, hub.url)
        assert refused.value.reject.code == "too_many_handshakes"
        assert refused.value.reject.retry is True
        await pending.pop().close()
        await _wait_for_a_challenge(http, hub)


async def _wait_for_a_challenge(http: aiohttp.ClientSession, hub: HubProcess) -> None:
    """Once a handshake ends, another may start (the hub sees the close a moment later)."""
    async with asyncio.timeout(5):
        while True:
            try:
                ws, _nonce = await challenge(http, hub.url)
            except RejectedByHubError:
                await asyncio.sleep(0.02)  # the hub has not seen the close yet; nothing to wait on from here
                continue
            await ws.close()
            return


async def test_a_well_formed_signed_hello_is_still_welcomed(hub: HubProcess) -> None:
    token = hub.create_agent_token("honest")
    async with aiohttp.ClientSession() as http:
        result = await handshake(http, hub.url, lambda nonce: hello_frame(nonce, models=["m"], token=token))
    assert isinstance(result.answer, WelcomeMessage)
