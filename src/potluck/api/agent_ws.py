"""The agent WebSocket (``/agent/connect``): bytes in and out, nothing else.

The handshake, enrolment and the routing of frames are the hub's (hub/gate.py); this adapter runs
the socket and implements `AgentChannel` over it, with frames coalesced per loop turn.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

from potluck._shared.outbox import Outbox
from potluck.api.context import HUB
from potluck.hub.gate import HANDSHAKE_TIMEOUT, AgentGate, Rejection
from potluck.hub.session import AgentSession
from potluck.protocol.agent import ProtocolError

log = logging.getLogger(__name__)


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


async def _reject(ws: web.WebSocketResponse, rejection: Rejection) -> web.WebSocketResponse:
    log.info("agent rejected: %s (%s)", rejection.code, rejection.message)
    await ws.send_bytes(rejection.frame)
    await ws.close()
    return ws


async def agent_connect(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    gate = hub.gate
    ws = web.WebSocketResponse(max_msg_size=hub.settings.max_body_bytes + (1 << 20), compress=False, autoping=True)
    await ws.prepare(request)
    challenge = gate.challenge()
    if isinstance(challenge, Rejection):
        return await _reject(ws, challenge)
    nonce, frame = challenge
    await ws.send_bytes(frame)
    try:
        first = await ws.receive(timeout=HANDSHAKE_TIMEOUT)
    except TimeoutError:
        return await _reject(ws, Rejection("handshake_timeout", "no hello within the handshake timeout", retry=True))
    if first.type is not WSMsgType.BINARY:
        return await _reject(ws, Rejection("protocol_error", "expected a binary hello frame", retry=True))
    session = await gate.hello(nonce, first.data, WebSocketChannel(ws))
    if isinstance(session, Rejection):
        return await _reject(ws, session)
    try:
        await _serve(ws, session, gate)
    finally:
        await gate.leave(session)
    return ws


async def _serve(ws: web.WebSocketResponse, session: AgentSession, gate: AgentGate) -> None:
    receive = gate.receive
    while True:
        msg = await ws.receive()
        if msg.type is not WSMsgType.BINARY:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            log.warning("agent %s sent a non-binary message; closing", session.agent_id)
            await ws.close()
            return
        try:
            receive(session, msg.data)
        except ProtocolError as exc:
            log.warning("agent %s broke the protocol (%s); closing", session.agent_id, exc)
            await ws.close()
            return


def add_routes(app: web.Application) -> None:
    app.router.add_get("/agent/connect", agent_connect)
