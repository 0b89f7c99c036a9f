"""The agent WebSocket (``/agent/connect``): bytes in and out, nothing else.

The handshake, enrolment and the routing of frames are the hub's (hub/gate.py); this adapter runs
the socket and implements `AgentChannel` over it, with frames coalesced per loop turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging

from aiohttp import WSCloseCode, WSMsgType, web

from potluck._shared.outbox import MAX_MESSAGE_BYTES, Outbox
from potluck.api.context import HUB
from potluck.api.ws_direct import DirectWebSocketResponse, failure_of
from potluck.hub.gate import HANDSHAKE_TIMEOUT, AgentGate, AgentViolationError, Rejection
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


def _address_key(remote: str | None) -> str:
    """Whose handshakes count together: one IPv4 address, or one IPv6 /64 (a single host often holds a whole one)."""
    try:
        ip = ipaddress.ip_address(remote or "")
    except ValueError:
        return remote or ""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def message_limit(credit_window: int) -> int:
    """The largest WebSocket message the hub reads from an agent: a coalesced batch (`MAX_MESSAGE_BYTES`) plus one
    DATA frame of a whole window, or a HELLO with the largest catalog the caps allow."""
    return MAX_MESSAGE_BYTES + credit_window + (64 << 10)


async def _reject(ws: web.WebSocketResponse, rejection: Rejection, peer: str) -> web.WebSocketResponse:
    log.info("agent %s rejected: %s (%s)", peer, rejection.code, rejection.message)
    with contextlib.suppress(ConnectionError, RuntimeError):  # the peer may be gone already
        await ws.send_bytes(rejection.frame)
    code = WSCloseCode.GOING_AWAY if rejection.code == "shutting_down" else WSCloseCode.POLICY_VIOLATION
    await ws.close(code=code, message=rejection.code.encode())
    return ws


async def agent_connect(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    gate = hub.gate
    peer = _address_key(request.remote)
    ws = DirectWebSocketResponse(max_msg_size=message_limit(hub.settings.credit_window), compress=False, autoping=True)
    await ws.prepare(request)
    refused = gate.handshake_started(peer)
    if refused is not None:
        return await _reject(ws, refused, peer)
    try:
        session = await _handshake(ws, gate, peer)
    finally:
        gate.handshake_over(peer)
    if isinstance(session, Rejection):
        return await _reject(ws, session, peer)
    try:
        await _serve(ws, session, gate)
    finally:
        await gate.leave(session)
    return ws


async def _handshake(ws: web.WebSocketResponse, gate: AgentGate, peer: str) -> AgentSession | Rejection:
    challenge = gate.challenge()
    if isinstance(challenge, Rejection):
        return challenge
    nonce, frame = challenge
    await ws.send_bytes(frame)
    try:
        first = await ws.receive(timeout=HANDSHAKE_TIMEOUT)
    except TimeoutError:
        return Rejection("handshake_timeout", "no hello within the handshake timeout", retry=True)
    if first.type is WSMsgType.ERROR:  # aiohttp refused it, e.g. over the message limit
        return Rejection("protocol_error", f"unreadable hello: {ws.exception()}", retry=True)
    if first.type is not WSMsgType.BINARY:
        return Rejection("protocol_error", "expected a binary hello frame", retry=True)
    return await gate.hello(nonce, first.data, WebSocketChannel(ws))


async def _serve(ws: DirectWebSocketResponse, session: AgentSession, gate: AgentGate) -> None:
    receive = gate.receive

    def deliver(data: bytes) -> None:
        receive(session, data)

    # The agent's messages go to the gate from the socket's read callback (api/ws_direct.py); this task
    # wakes only for what queues: a close, a ping, and the messages read before this line.
    queue = ws.queue
    if queue is not None:
        queue.deliver = deliver
    try:
        while True:
            msg = await ws.receive()
            try:
                if msg.type is WSMsgType.BINARY:
                    receive(session, msg.data)
                    continue
                if (failure := failure_of(msg)) is not None:
                    raise failure  # met by direct delivery: handled as if met here
            except AgentViolationError as exc:
                log.warning("agent %s went over a limit (%s); closing", session.agent_id, exc)
                await _reject(ws, Rejection(exc.code, str(exc), retry=True), session.agent_id)
                return
            except ProtocolError as exc:
                log.warning("agent %s broke the protocol (%s); closing", session.agent_id, exc)
                await _reject(ws, Rejection("protocol_error", str(exc), retry=True), session.agent_id)
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            log.warning("agent %s sent a non-binary message; closing", session.agent_id)
            await ws.close(code=WSCloseCode.UNSUPPORTED_DATA)
            return
    finally:
        if queue is not None:
            queue.deliver = None


def add_routes(app: web.Application) -> None:
    app.router.add_get("/agent/connect", agent_connect)
