"""Agents joining and leaving: the handshake, enrolment, and the routing of connection-level frames.

The WebSocket adapter (api/agent_ws.py) only moves bytes: it sends `AgentGate.challenge`, hands the
first message to `AgentGate.hello` (which answers with a session or a rejection frame), passes every
later message to `AgentGate.receive`, and calls `AgentGate.leave` when the socket closes.

Handshake: the hub sends a challenge nonce; the agent answers with `HelloMessage`, signed with its
Ed25519 key (and, on first contact, a one-time enrolment token); the hub answers `WelcomeMessage`
or `RejectMessage`. After that every message carries one or more frames (protocol/agent.py).

No agent is trusted, and an unauthenticated peer least of all: the gate decodes only the hello's small
envelope before the signature verifies, and the catalog (the hello's payload) after; it caps catalogs
(`catalog_problem`), handshakes in progress per address and a connection's rate of connection-level frames.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Protocol

from potluck import __version__
from potluck._shared.clock import Clock
from potluck.hub.channel import AgentChannel
from potluck.hub.identity import new_nonce, signature_valid
from potluck.hub.lifecycle import Lifecycle
from potluck.hub.registry import Registry
from potluck.hub.returning import Returning
from potluck.hub.session import AgentSession
from potluck.hub.settings import HubSettings
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
    decode_catalog,
    decode_hello,
    encode_frame,
    hello_parts,
    iter_frames,
)
from potluck.store.agents import NAME_MAX, Agent, AgentRepository
from potluck.store.errors import ConflictError, StoreError

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
"""Seconds an agent has to answer the challenge."""

_MAX_BACKENDS = 64
"""Backends (and native paths per backend) one agent may describe: no real setup comes near."""
_CONTROL_BURST_S = 10.0


class AgentViolationError(ProtocolError):
    """A connected agent broke one of the hub's limits: it gets a REJECT with ``code``, and the connection closes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _check_proof(hello: HelloMessage, nonce: bytes) -> Rejection | None:
    if hello.protocol_version != PROTOCOL_VERSION:
        return Rejection(
            "protocol_version",
            f"agent speaks protocol {hello.protocol_version}, this hub speaks {PROTOCOL_VERSION}; "
            "upgrade the older side",
        )
    if not signature_valid(hello.public_key, nonce, hello.signature):
        return Rejection("bad_signature", "the challenge signature does not verify")
    return None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an agent may not join: send `frame`, then close."""

    code: str
    message: str
    retry: bool = False

    @property
    def frame(self) -> bytes:
        return encode_frame(RejectMessage(self.code, self.message, self.retry))


class EnrolmentHook(Protocol):
    """Told when a new agent enrols (the agents service shares it into its owner's groups)."""

    async def enrolled(self, agent_id: str, owner_id: str | None) -> None: ...


class AgentGate:
    """Admits agents into the registry and routes their connection-level frames."""

    def __init__(
        self,
        *,
        agents: AgentRepository,
        registry: Registry,
        settings: HubSettings,
        clock: Clock,
        enrolled: EnrolmentHook,
        lifecycle: Lifecycle,
        returning: Returning | None = None,
    ) -> None:
        self._returning = returning
        self._lifecycle = lifecycle
        self._agents = agents
        self._registry = registry
        self._settings = settings
        self._clock = clock
        self._enrolled = enrolled
        self._pending_handshakes: dict[str, int] = {}
        self._handshakes_pending = 0
        self._control_burst = settings.agent_max_control_frames_per_s * _CONTROL_BURST_S
        self._catalogs: dict[str, list[str]] = {}
        """Agent id -> the models it serves since its last MODELS frame, for `run` to write."""
        self._catalog_changed = asyncio.Event()

    async def run(self) -> None:
        """Write what connected agents serve as their catalogs change (a lifecycle loop), so a hub killed
        later still knows, on restart, which models are coming back (503 until then, not 404)."""
        while True:
            await self._catalog_changed.wait()
            self._catalog_changed.clear()
            catalogs, self._catalogs = self._catalogs, {}
            for agent_id, models in catalogs.items():
                await self._remember_serving(agent_id, models)  # an uncut store write: a shutdown waits for it

    def challenge(self) -> tuple[bytes, bytes] | Rejection:
        """A fresh nonce and the challenge frame carrying it, or a rejection while shutting down."""
        if self._lifecycle.closing:  # agents are turned away; they retry elsewhere or later
            return Rejection("shutting_down", "the hub is shutting down", retry=True)
        nonce = new_nonce()
        return nonce, encode_frame(ChallengeMessage(nonce, PROTOCOL_VERSION, __version__))

    def handshake_started(self, ip: str) -> Rejection | None:
        """Count a handshake from ``ip``, or refuse it when that address has too many in progress.

        Until its signature verifies, a connection costs the hub memory for nothing; one address cannot
        hold more than ``agent_max_pending_handshakes_per_ip`` of them, and all addresses together not
        more than ``agent_max_pending_handshakes`` (many addresses at once: what is pending stays bounded
        by the message limit times this). Pair with `handshake_over`."""
        if self._handshakes_pending >= self._settings.agent_max_pending_handshakes:
            return Rejection(
                "too_many_handshakes", f"{self._handshakes_pending} agent handshakes in progress", retry=True
            )
        pending = self._pending_handshakes.get(ip, 0)
        if pending >= self._settings.agent_max_pending_handshakes_per_ip:
            return Rejection("too_many_handshakes", f"{pending} agent handshakes from {ip} in progress", retry=True)
        self._pending_handshakes[ip] = pending + 1
        self._handshakes_pending += 1
        return None

    def handshake_over(self, ip: str) -> None:
        self._handshakes_pending -= 1
        pending = self._pending_handshakes.pop(ip, 1) - 1
        if pending > 0:
            self._pending_handshakes[ip] = pending

    async def hello(self, nonce: bytes, data: bytes, channel: AgentChannel) -> AgentSession | Rejection:
        """Check the agent's hello against the nonce; attach and welcome it, or say why not.

        Nothing big is decoded before the signature verifies: the envelope is at most
        `HELLO_META_MAX_BYTES`, and the catalog (the frame's payload) is decoded only after the check."""
        # A garbled handshake may be a transient fault (a proxy, a cut connection): the agent may retry.
        try:
            meta, payload = hello_parts(data)
            hello = decode_hello(meta)
        except ProtocolError as exc:
            return Rejection("protocol_error", str(exc), retry=True)
        rejection = _check_proof(hello, nonce)
        if rejection is not None:
            return rejection
        try:
            catalog = decode_catalog(payload)
        except ProtocolError as exc:
            return Rejection("protocol_error", str(exc), retry=True)
        problem = self.catalog_problem(catalog)
        if problem is not None:
            return Rejection("catalog_too_large", problem)
        result = await self._identify(hello)
        if isinstance(result, Rejection):
            return result
        agent = result
        if hello.name and hello.name[:NAME_MAX] != agent.name:
            # `--name` overrides the enrolment token's name, and is kept for offline listings too.
            await self._agents.rename(agent.id, hello.name)
            agent = dataclasses.replace(agent, name=hello.name[:NAME_MAX])
        settings = self._settings
        session = AgentSession(
            agent_id=agent.id,
            name=agent.name,
            channel=channel,
            clock=self._clock,
            models=catalog.models,
            backends=catalog.backends,
            max_concurrency=hello.max_concurrency,
            credit_window=settings.credit_window,
            version=hello.agent_version,
        )
        session.control_budget = self._control_burst
        # Written before the agent counts as online: a hub killed the moment after still knows, on restart,
        # that these models are coming back (503 until then, not 404).
        await self._remember_serving(agent.id, [m.id for m in catalog.models])
        channel.send(
            encode_frame(
                WelcomeMessage(
                    agent.id, settings.heartbeat_interval, settings.heartbeat_timeout, settings.credit_window
                )
            )
        )
        self._registry.attach(session, draining=hello.draining)
        if self._returning is not None:
            self._returning.arrived(agent.id)
        log.info("agent %s (%s) connected with %d models", agent.id, session.name, len(catalog.models))
        return session

    def catalog_problem(self, catalog: ModelsMessage) -> str | None:
        """Why an agent's catalog is refused (too many models, an overlong string), or None."""
        settings = self._settings
        if len(catalog.models) > settings.agent_max_models:
            return f"{len(catalog.models)} models, over this hub's limit of {settings.agent_max_models}"
        if len(catalog.backends) > _MAX_BACKENDS:
            return f"{len(catalog.backends)} backends, over this hub's limit of {_MAX_BACKENDS}"
        longest = settings.agent_max_string_length
        for model in catalog.models:
            if len(model.id) > longest or len(model.backend) > longest or len(model.kind) > longest:
                return f"a model name or backend over {longest} characters: {model.id[:64]!r}"
        for backend in catalog.backends:
            strings = (backend.url, backend.kind, backend.version or "", *backend.native_paths)
            if len(backend.native_paths) > _MAX_BACKENDS or any(len(x) > longest for x in strings):
                return f"a backend description over {longest} characters: {backend.url[:64]!r}"
        return None

    async def _identify(self, hello: HelloMessage) -> Agent | Rejection:
        agent = await self._agents.by_public_key(hello.public_key)
        if agent is not None:
            return agent
        if not hello.enrol_token:
            return Rejection(
                "unknown_agent", "this agent key is not enrolled; start the agent with a fresh enrolment token"
            )
        try:
            agent = await self._agents.enrol(hello.enrol_token, hello.public_key, hello.name)
        except ConflictError as exc:
            return Rejection("bad_token", str(exc))
        await self._enrolled.enrolled(agent.id, agent.owner_id)
        return agent

    async def _remember_serving(self, agent_id: str, models: list[str] | None) -> None:
        try:
            await self._agents.set_serving(agent_id, models)
        except StoreError:
            log.warning("could not record the models of agent %s", agent_id)

    def receive(self, session: AgentSession, data: bytes) -> None:
        """One message from a connected agent: its frames, in order. Raises ProtocolError on garbage."""
        registry = self._registry
        on_frame = session.on_frame
        for frame in iter_frames(data):
            ftype = frame.type
            message = frame.message
            if ftype != FrameType.DATA and ftype != FrameType.HEAD and ftype != FrameType.END:
                self._spend_control(session)
            if ftype == FrameType.MODELS and isinstance(message, ModelsMessage):
                session.last_rx = registry.now()
                problem = self.catalog_problem(message)
                if problem is not None:
                    raise AgentViolationError("catalog_too_large", problem)
                registry.on_models(session, message)
                self._catalogs[session.agent_id] = [m.id for m in message.models]
                self._catalog_changed.set()
            elif ftype == FrameType.STATE and isinstance(message, StateMessage):
                session.last_rx = registry.now()
                registry.on_state(session, message)
            elif ftype == FrameType.LOAD and isinstance(message, LoadMessage):
                session.last_rx = registry.now()
                registry.on_load(session, message)
            else:
                on_frame(ftype, frame.stream_id, message, frame.payload)
        session.deliver()

    def _spend_control(self, session: AgentSession) -> None:
        """A token bucket per connection: ``agent_max_control_frames_per_s``, bursts of ten seconds' worth."""
        now = self._clock.now()
        rate = self._settings.agent_max_control_frames_per_s
        budget = min(self._control_burst, session.control_budget + (now - session.control_at) * rate) - 1
        session.control_at = now
        if budget < 0:
            raise AgentViolationError("rate_limited", f"more than {rate:g} connection-level frames a second")
        session.control_budget = budget

    async def leave(self, session: AgentSession) -> None:
        """The agent's connection closed: fail its streams, forget it, and note when it was last seen."""
        self._registry.detach(session)
        log.info("agent %s disconnected", session.agent_id)
        # Closed by a hub shutdown, the agent will be back after the restart: remember what it served then.
        current = [m.id for m in session.models] if self._lifecycle.closing else None
        self._catalogs.pop(session.agent_id, None)  # what it served before it left is moot now
        await self._remember_serving(session.agent_id, current)
        try:
            await self._agents.touch({session.agent_id: self._clock.wall()})
        except StoreError:
            log.warning("could not record when agent %s was last seen", session.agent_id)
