"""The agent WebSocket (``/agent/connect``): handshake, then frames in both directions.

Handshake: the hub sends a challenge nonce; the agent answers with `HelloMessage`, signed with its
Ed25519 key (and, on first contact, a one-time enrolment token); the hub answers `WelcomeMessage`
or `RejectMessage`. After that every message carries one or more frames (protocol/agent.py).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiohttp import WSMsgType, web

from potluck import __version__
from potluck._shared.outbox import Outbox
from potluck.api.context import HUB
from potluck.hub.identity import new_nonce, signature_valid
from potluck.hub.registry import Registry
from potluck.hub.services import HubServices
from potluck.hub.session import AgentSession
from potluck.protocol.agent import (
    PROTOCOL_VERSION,
    ChallengeMessage,
    FrameType,
    HelloMessage,
    LoadMessage,
    ModelsMessage,
    ProtocolError,
    RejectMessage,
    StateMessage,
    WelcomeMessage,
    encode_frame,
    iter_frames,
)
from potluck.store.agents import Agent
from potluck.store.errors import ConflictError, StoreError

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0


class WebSocketChannel:
    """`AgentChannel` over an aiohttp WebSocket, with frames coalesced per loop turn."""

    __slots__ = ("_closing", "_outbox", "_ws")

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._outbox = Outbox(ws.send_bytes, self._on_send_error)
        self._closing: asyncio.Task[bool] | None = None

    def send(self, frame: bytes) -> None:
        self._outbox.put(frame)

    def close(self) -> None:
        self._outbox.close()
        self._close_soon()

    def _on_send_error(self, exc: BaseException) -> None:
        log.info("sending to an agent failed (%s); closing its connection", exc)
        self._close_soon()

    def _close_soon(self) -> None:
        # The close handshake ends the handler's receive loop; the reference keeps the task alive.
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._ws.close())


async def _reject(ws: web.WebSocketResponse, code: str, message: str, *, retry: bool = False) -> web.WebSocketResponse:
    log.info("agent rejected: %s (%s)", code, message)
    await ws.send_bytes(encode_frame(RejectMessage(code, message, retry)))
    await ws.close()
    return ws


async def _authenticate(hub: HubServices, hello: HelloMessage, nonce: bytes) -> Agent | tuple[str, str]:
    """The enrolled agent for this hello, or (code, message) explaining the refusal."""
    if hello.protocol_version != PROTOCOL_VERSION:
        return (
            "protocol_version",
            f"agent speaks protocol {hello.protocol_version}, this hub speaks {PROTOCOL_VERSION}; "
            "upgrade the older side",
        )
    if not signature_valid(hello.public_key, nonce, hello.signature):
        return "bad_signature", "the challenge signature does not verify"
    agent = await hub.store.agents.by_public_key(hello.public_key)
    if agent is not None:
        return agent
    if not hello.enrol_token:
        return "unknown_agent", "this agent key is not enrolled; start the agent with a fresh enrolment token"
    try:
        agent = await hub.store.agents.enrol(hello.enrol_token, hello.public_key, hello.name)
    except ConflictError as exc:
        return "bad_token", str(exc)
    await hub.accounts.agent_enrolled(agent.id, agent.owner_id)
    return agent


async def agent_connect(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    settings = hub.settings
    ws = web.WebSocketResponse(max_msg_size=settings.max_body_bytes + (1 << 20), compress=False, autoping=True)
    await ws.prepare(request)
    if hub.requests.closing:
        return await _reject(ws, "shutting_down", "the hub is shutting down", retry=True)
    nonce = new_nonce()
    await ws.send_bytes(encode_frame(ChallengeMessage(nonce, PROTOCOL_VERSION, __version__)))
    try:
        first = await ws.receive(timeout=HANDSHAKE_TIMEOUT)
    except TimeoutError:
        return await _reject(ws, "handshake_timeout", "no hello within the handshake timeout", retry=True)
    # A garbled handshake may be a transient fault (a proxy, a cut connection): the agent may retry.
    if first.type is not WSMsgType.BINARY:
        return await _reject(ws, "protocol_error", "expected a binary hello frame", retry=True)
    try:
        frames = list(iter_frames(first.data))
    except ProtocolError as exc:
        return await _reject(ws, "protocol_error", str(exc), retry=True)
    if len(frames) != 1 or not isinstance(frames[0].message, HelloMessage):
        return await _reject(ws, "protocol_error", "expected a hello frame", retry=True)
    hello = frames[0].message
    result = await _authenticate(hub, hello, nonce)
    if isinstance(result, tuple):
        return await _reject(ws, *result)
    agent = result
    channel = WebSocketChannel(ws)
    session = AgentSession(
        agent_id=agent.id,
        name=hello.name or agent.name,
        channel=channel,
        clock=hub.clock,
        models=hello.models,
        backends=hello.backends,
        max_concurrency=hello.max_concurrency,
        credit_window=settings.credit_window,
        version=hello.agent_version,
    )
    channel.send(
        encode_frame(
            WelcomeMessage(agent.id, settings.heartbeat_interval, settings.heartbeat_timeout, settings.credit_window)
        )
    )
    registry = hub.registry
    registry.attach(session, draining=hello.draining)
    log.info("agent %s (%s) connected with %d models", agent.id, session.name, len(hello.models))
    try:
        await _serve(ws, session, registry)
    finally:
        registry.detach(session)
        log.info("agent %s disconnected", agent.id)
        try:
            await hub.store.agents.touch({agent.id: datetime.now(UTC)})
        except StoreError:
            log.warning("could not record when agent %s was last seen", agent.id)
    return ws


async def _serve(ws: web.WebSocketResponse, session: AgentSession, registry: Registry) -> None:
    on_frame = session.on_frame
    while True:
        msg = await ws.receive()
        if msg.type is not WSMsgType.BINARY:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            log.warning("agent %s sent a non-binary message; closing", session.agent_id)
            await ws.close()
            return
        try:
            for frame in iter_frames(msg.data):
                ftype = frame.type
                if ftype == FrameType.MODELS and isinstance(frame.message, ModelsMessage):
                    session.last_rx = registry.now()
                    registry.on_models(session, frame.message)
                elif ftype == FrameType.STATE and isinstance(frame.message, StateMessage):
                    session.last_rx = registry.now()
                    registry.on_state(session, frame.message)
                elif ftype == FrameType.LOAD and isinstance(frame.message, LoadMessage):
                    session.last_rx = registry.now()
                    registry.on_load(session, frame.message)
                else:
                    on_frame(ftype, frame.stream_id, frame.message, frame.payload)
        except ProtocolError as exc:
            log.warning("agent %s broke the protocol (%s); closing", session.agent_id, exc)
            await ws.close()
            return


def add_routes(app: web.Application) -> None:
    app.router.add_get("/agent/connect", agent_connect)
