"""The idle-agents scenario: a client process holds N agent WebSockets open against a fresh hub.

Each agent does the real handshake (the hub's challenge, a hello signed with a fresh Ed25519 key and
carrying its enrolment token, the welcome) and then answers the hub's heartbeat PINGs; the hub's RSS is
read before the connections and after they have idled through a heartbeat round or two.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bench.relaybench.machine import raise_nofile, run_loop
from bench.relaybench.options import Options
from bench.relaybench.scenarios import Scenario
from bench.relaybench.services import admin_post, start_hub
from potluck import __version__
from potluck.protocol import agent as proto

HANDSHAKES_AT_ONCE = 64
"""Idle agents the client connects at a time."""


@dataclass
class IdleResult:
    agents: int
    connected: int
    online_at_measurement: int
    """Agents the hub counted (``/readyz``) when its RSS was read; the per-agent figure divides by this."""
    handshake_errors: int
    connect_s: float
    hub_rss_before_mb: float
    hub_rss_after_mb: float
    kb_per_agent: float | None
    hub_rss_at_10k_mb: float | None
    """Measured when 10,000 agents were connected, extrapolated from the per-agent figure otherwise."""
    hub_idle_cpu_pct: float
    """Hub CPU while the agents were only exchanging heartbeats, % of one core."""
    pongs_sent: int
    dropped: int
    """Agents whose connection ended while they were supposed to sit idle."""
    welcome_coalesced: int
    """Handshakes where the hub sent the welcome together with another frame in one message."""


async def _enrolment_tokens(http: aiohttp.ClientSession, hub_url: str, count: int) -> list[str]:
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> str:
        async with gate:
            token: str = (await admin_post(http, hub_url, "/admin/agent-tokens", f"idle-{i}"))["token"]
            return token

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _idle_agent(
    http: aiohttp.ClientSession, hub_url: str, token: str, index: int, counters: dict[str, int]
) -> Any:
    """One agent WebSocket through the real handshake: challenge → signed hello (enrolling) → welcome."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ws = await http.ws_connect(
        hub_url.replace("http://", "ws://", 1) + "/agent/connect",
        autoping=True,
        heartbeat=None,
        compress=0,
        max_msg_size=1 << 20,
        timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
    )
    try:
        challenge = _frames(await ws.receive(timeout=60))[0].message
        if not isinstance(challenge, proto.ChallengeMessage):
            raise proto.ProtocolError(f"expected a challenge, got {challenge!r}")
        backend = "http://127.0.0.1:9/v1"
        hello = proto.HelloMessage(
            protocol_version=proto.PROTOCOL_VERSION,
            agent_version=__version__,
            public_key=public,
            signature=key.sign(proto.challenge_payload(challenge.nonce, public)),
            name=f"idle-{index}",
            max_concurrency=8,
            enrol_token=token,
        )
        catalog = proto.ModelsMessage(
            [proto.ModelInfo(id="idle-model", backend=backend)], [proto.BackendInfo(url=backend)]
        )
        await ws.send_bytes(proto.encode_hello(hello, catalog))
        frames = _frames(await ws.receive(timeout=60))
        if not isinstance(frames[0].message, proto.WelcomeMessage):
            raise proto.ProtocolError(f"expected a welcome, got {frames[0].message!r}")
        if len(frames) > 1:
            # The hub coalesced other frames (a heartbeat PING) into the welcome's message: an agent must
            # handle the frames behind the welcome. Counted and reported.
            counters["coalesced_welcome"] += 1
            await _answer(ws, frames[1:], counters)
    except BaseException:
        await ws.close()
        raise
    return ws


def _frames(msg: aiohttp.WSMessage) -> list[proto.Frame]:
    if msg.type is not aiohttp.WSMsgType.BINARY:
        raise proto.ProtocolError(f"expected a binary frame, got {msg.type.name}")
    frames = list(proto.iter_frames(msg.data))
    if not frames:
        raise proto.ProtocolError("empty message")
    return frames


async def _answer(ws: Any, frames: Sequence[proto.Frame], counters: dict[str, int]) -> None:
    for frame in frames:
        if frame.type == proto.FrameType.PING and isinstance(frame.message, proto.PingMessage):
            await ws.send_bytes(proto.encode_frame(proto.PongMessage(frame.message.sent_at)))
            counters["pongs"] += 1


async def _answer_pings(ws: Any, counters: dict[str, int]) -> None:
    async for msg in ws:
        if msg.type is aiohttp.WSMsgType.BINARY:
            await _answer(ws, list(proto.iter_frames(msg.data)), counters)


async def _idle_client(hub_url: str, count: int, pipe: Connection) -> None:
    async def command() -> Any:
        return await asyncio.to_thread(pipe.recv)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        tokens = await _enrolment_tokens(http, hub_url, count)
        pipe.send(("tokens", len(tokens)))
        await command()
        started = time.monotonic()
        gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
        counters = {"pongs": 0, "coalesced_welcome": 0}
        readers: list[asyncio.Task[None]] = []

        async def connect(i: int) -> Any:
            async with gate:
                ws = await _idle_agent(http, hub_url, tokens[i], i, counters)
            # Answer the hub's pings from now on: it drops an agent silent for 15 s.
            readers.append(asyncio.create_task(_answer_pings(ws, counters)))
            return ws

        outcomes = await asyncio.gather(*(connect(i) for i in range(count)), return_exceptions=True)
        sockets = [ws for ws in outcomes if not isinstance(ws, BaseException)]
        errors = [repr(e) for e in outcomes if isinstance(e, BaseException)]
        pipe.send(("connected", len(sockets), len(errors), time.monotonic() - started, errors[:3]))
        await command()
        dropped = sum(1 for task in readers if task.done())
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        pipe.send(("stopped", counters["pongs"], dropped, counters["coalesced_welcome"]))


def idle_client_main(hub_url: str, count: int, pipe: Connection) -> None:
    """Entry point of the idle-agents client process."""
    raise_nofile()
    try:
        run_loop(_idle_client(hub_url, count, pipe))
    except BaseException as exc:
        pipe.send(("error", repr(exc)))
        raise


async def hub_agent_count(hub_url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(hub_url + "/readyz") as resp:
        body = await resp.json()
        return int(body.get("agents", 0))


async def _reply(pipe: Connection, expect: str, timeout: float) -> tuple[Any, ...]:
    ready = await asyncio.to_thread(pipe.poll, timeout)
    if not ready:
        raise TimeoutError(f"the idle-agents client sent no {expect!r} within {timeout:g} s")
    message: tuple[Any, ...] = pipe.recv()
    if message[0] != expect:
        raise RuntimeError(f"the idle-agents client answered {message!r}")
    return message


async def run_idle(opts: Options, tmp: Path, scenario: Scenario) -> IdleResult:
    count = scenario.concurrency
    # Every idle agent dials from 127.0.0.1, as agents behind one proxy would: the hub is told so, allowing as many
    # handshakes from that address as the client runs at once (its gate), like any hub behind a proxy.
    extra = ("--agent-max-pending-handshakes-per-ip", str(HANDSHAKES_AT_ONCE))
    hub = await start_hub(tmp, tmp / "idle-hub-data", name="idle-hub", extra=extra)
    parent, child = multiprocessing.get_context("spawn").Pipe()
    client = multiprocessing.get_context("spawn").Process(
        target=idle_client_main, args=(hub.url, count, child), name="idle-agents"
    )
    client.start()
    try:
        await _reply(parent, "tokens", 600)
        await asyncio.sleep(0.3 if opts.quick else 1.0)
        before = hub.rss_kb()
        parent.send("connect")
        _, connected, errors, connect_s, samples = await _reply(parent, "connected", 900)
        # Hold long enough for the hub's heartbeat (every 5 s) to ping everyone once or twice.
        hold = 1.0 if opts.quick else 12.0
        await asyncio.sleep(0.3 if opts.quick else 1.0)
        cpu_before, held_from = hub.cpu_s(), time.monotonic()
        await asyncio.sleep(hold)
        idle_cpu = (hub.cpu_s() - cpu_before) / (time.monotonic() - held_from)
        after = hub.rss_kb()
        online = await hub_agent_count(hub.url)
        parent.send("stop")
        _, pongs, dropped, coalesced = await _reply(parent, "stopped", 120)
    finally:
        client.join(60)
        if client.is_alive():
            client.kill()
        hub.stop()
    per_agent = (after - before) / online if online else None
    at_10k = after / 1024 if online >= 10_000 else None
    if at_10k is None and per_agent is not None:
        at_10k = (before + per_agent * 10_000) / 1024
    if errors:
        print(f"idle agents: {errors} handshakes failed, e.g. {samples}", file=sys.stderr)
    return IdleResult(
        agents=count,
        connected=connected,
        online_at_measurement=online,
        handshake_errors=errors,
        connect_s=round(connect_s, 2),
        hub_rss_before_mb=before / 1024,
        hub_rss_after_mb=after / 1024,
        kb_per_agent=per_agent,
        hub_rss_at_10k_mb=at_10k,
        hub_idle_cpu_pct=100 * idle_cpu,
        pongs_sent=pongs,
        dropped=dropped,
        welcome_coalesced=coalesced,
    )
