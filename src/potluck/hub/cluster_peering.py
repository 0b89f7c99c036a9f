"""A replica's peer links and the proxies of the agents the other replicas hold.

`Peering` keeps, per other replica, the outbound link this replica places requests over and the inbound
link that replica places requests on this one's agents over (api/peer.py runs both WebSockets; the frames
are hub/cluster_link.py's). It makes the registry's proxies match the cluster view (hub/cluster.py): one
proxy `AgentSession` per agent held only elsewhere, reachable over a link that is up, carrying that
replica's published models, capacity and draining state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from potluck._shared.clock import Clock
from potluck._shared.waiting import wait_set
from potluck.hub.cluster_link import InboundLink, OutboundLink, PeerChannel, PeerTransport
from potluck.hub.cluster_view import AgentEntry
from potluck.hub.registry import Registry
from potluck.hub.session import AgentSession, SessionState
from potluck.protocol.agent import ModelsMessage, StateMessage


def local_sessions(registry: Registry) -> dict[str, AgentSession]:
    """The agents tunnelled to this replica (not the proxies of other replicas' agents)."""
    return {a: s for a, s in registry.sessions.items() if not isinstance(s.channel, PeerChannel)}


class Peering:
    """Links to the other replicas, and the registry's proxies of their agents."""

    def __init__(
        self,
        registry: Registry,
        clock: Clock,
        credit_window: int,
        wanted: Callable[[], dict[str, AgentEntry]],
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.credit_window = credit_window
        self._wanted = wanted
        """Per agent held only elsewhere, the entry of the replica to reach it through (the cluster view)."""
        self.links: dict[str, OutboundLink] = {}
        """Outbound peer links that are up, by the replica they reach."""
        self.inbound: dict[str, InboundLink] = {}
        self._forward_idle = asyncio.Event()
        self._reconciling = False
        self._relinked = asyncio.Event()
        """Set, and replaced by a fresh one, whenever a link comes up (`relinked` waits on it)."""

    # -- proxies of remote agents --------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Make the registry's proxies match the view: one per remote agent reachable over a link that is up."""
        if self._reconciling:
            return
        self._reconciling = True
        try:
            self._reconcile_now()
        finally:
            self._reconciling = False

    def _reconcile_now(self) -> None:
        registry = self.registry
        wanted = self._wanted()
        for agent_id, session in list(registry.sessions.items()):
            channel = session.channel
            if not isinstance(channel, PeerChannel):
                continue
            entry = wanted.get(agent_id)
            if entry is None or entry.replica != channel.link.replica_id or channel.link.closed:
                registry.detach(session)
                channel.close()
        for agent_id, entry in wanted.items():
            link = self.links.get(entry.replica)
            if link is None or link.closed:
                continue
            existing = registry.sessions.get(agent_id)
            if existing is None:
                self._attach_proxy(link, entry)
            elif isinstance(existing.channel, PeerChannel):
                if existing.models != entry.models or existing.backends != entry.backends:
                    registry.on_models(existing, ModelsMessage(entry.models, entry.backends))
                if existing.max_concurrency != entry.max_concurrency or (
                    (existing.state is SessionState.DRAINING) != entry.draining
                ):
                    registry.on_state(existing, StateMessage(0, entry.draining, entry.max_concurrency))

    def _attach_proxy(self, link: OutboundLink, entry: AgentEntry) -> None:
        channel = link.channel(entry.agent_id)
        session = AgentSession(
            agent_id=entry.agent_id,
            name=entry.name,
            channel=channel,
            clock=self.clock,
            models=entry.models,
            backends=entry.backends,
            max_concurrency=entry.max_concurrency,
            credit_window=self.credit_window,
            version=entry.version,
            remote=True,
        )
        channel.session = session
        self.registry.attach(session, draining=entry.draining)

    # -- peer links (api/peer.py runs the sockets) ---------------------------------------------------------------

    def linked(self, replica_id: str) -> bool:
        """Whether this replica's outbound link to ``replica_id`` is up."""
        link = self.links.get(replica_id)
        return link is not None and not link.closed

    def link_up(self, replica_id: str, transport: PeerTransport) -> OutboundLink:
        link = OutboundLink(replica_id, transport, self.clock)
        old = self.links.get(replica_id)
        if old is not None:
            self.link_down(old)
        self.links[replica_id] = link
        self.reconcile()
        self._relinked.set()
        self._relinked = asyncio.Event()
        return link

    async def relinked(self, timeout: float) -> bool:
        """Wait for the next outbound link to come up (its proxies are in the registry by then); False after
        ``timeout`` seconds without one."""
        return await wait_set(self._relinked, timeout)

    def link_down(self, link: OutboundLink) -> None:
        if self.links.get(link.replica_id) is link:
            del self.links[link.replica_id]
        for session in link.close():
            self.registry.detach(session)
        self.reconcile()

    def inbound_up(
        self,
        replica_id: str,
        transport: PeerTransport,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
    ) -> InboundLink:
        """``spawn``: the task group of the link's socket, for requests waiting for a slot here."""
        link = InboundLink(replica_id, transport, self.registry, spawn, self._forward_idle.set, self._agent_failed)
        self.inbound[replica_id] = link
        return link

    def inbound_down(self, link: InboundLink) -> None:
        if self.inbound.get(link.replica_id) is link:
            del self.inbound[link.replica_id]
        link.close()

    def _agent_failed(self, agent_id: str, model: str) -> None:
        """An agent of this replica broke the protocol on a stream forwarded from another: as on our own."""
        self.registry.scheduler.report(agent_id, model, ok=False)

    @property
    def forwarding(self) -> int:
        """Requests of other replicas running on this replica's agents."""
        return sum(link.running for link in self.inbound.values())

    async def wait_forwarded(self, timeout: float) -> bool:
        """Wait until no other replica's request runs here, or the timeout."""
        try:
            async with asyncio.timeout(timeout):
                while self.forwarding:
                    self._forward_idle.clear()
                    await self._forward_idle.wait()
        except TimeoutError:
            return False
        return True
