"""Peer links between hub replicas (cluster mode): the WebSocket both ends, and nothing else.

Each replica dials every other live replica at ``/cluster/peer`` (the outbound link carries its own
requests to their agents, hub/cluster_link.py), and accepts the others' links. A link authenticates
with a key derived from the cluster secret (`peer_token`), compared in constant time; the replica's id
travels in ``x-potluck-replica``.

Both ends ping a link once per replica lease and drop it when the pong takes more than half a lease
(aiohttp's heartbeat). A replica that is only slow (a busy machine, a long pause) keeps its links; one
that stopped is dropped within a lease and a half, about when its lease says it is dead anyway. While a
link is down, requests for the agents behind it wait for it to come back (hub/requests.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from potluck.hub.cluster import Cluster  # needs Redis: the `cluster` extra

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler

from potluck._shared.outbox import Outbox
from potluck.api.context import HUB
from potluck.api.ws_direct import DirectQueue, DirectWebSocketResponse, failure_of, read_directly
from potluck.hub.cluster_link import InboundLink, OutboundLink
from potluck.hub.errors import AuthError
from potluck.hub.lifecycle import Loop
from potluck.hub.settings import HubSettings
from potluck.protocol.agent import ProtocolError

log = logging.getLogger(__name__)

PATH = "/cluster/peer"
REPLICA_HEADER = "x-potluck-replica"
DIAL_PERIOD_S = 0.2
MAX_MESSAGE = 64 << 20
PeerLink = InboundLink | OutboundLink


def peer_token(secret: str) -> str:
    """The link credential: an HMAC of the cluster secret, so the secret itself never crosses the network."""
    return hmac.new(secret.encode(), b"potluck-peer-link-v1", hashlib.sha256).hexdigest()


class WebSocketTransport:
    """`PeerTransport` over an aiohttp WebSocket, coalescing what is sent in one loop turn."""

    __slots__ = ("_closing", "_outbox", "_ws")

    def __init__(self, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._outbox = Outbox(ws.send_bytes, self._on_error)
        self._closing: asyncio.Task[bool] | None = None

    def send(self, data: bytes) -> None:
        self._outbox.put(data)

    def close(self) -> None:
        self._outbox.close()
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._ws.close())

    def _on_error(self, exc: BaseException) -> None:
        log.info("a peer link failed (%s); closing it", exc)
        self.close()


async def peer_connect(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    cluster = hub.cluster
    replica = request.headers.get(REPLICA_HEADER, "")
    credential = request.headers.get("Authorization", "").removeprefix("Bearer ")
    expected = peer_token(hub.settings.cluster_secret or "")
    if cluster is None or not replica or not hmac.compare_digest(credential.encode(), expected.encode()):
        raise AuthError("peer links need the cluster secret")
    ws = DirectWebSocketResponse(max_msg_size=MAX_MESSAGE, compress=False, heartbeat=cluster.lease_s)
    await ws.prepare(request)
    async with asyncio.TaskGroup() as waiting:  # the link's requests waiting for a slot of this replica's agents
        link = cluster.peering.inbound_up(replica, WebSocketTransport(ws), waiting.create_task)
        try:
            await _pump(ws, ws.queue, link)
        finally:
            cluster.peering.inbound_down(link)  # cancels the waits
    return ws


async def _pump(
    ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, queue: DirectQueue | None, link: PeerLink
) -> None:
    """Frames from the peer go to the link from the socket's read callback (api/ws_direct.py); this task
    reads what queues (the close, and messages read before delivery began)."""
    receive = link.receive
    if queue is not None:
        queue.deliver = receive
    try:
        async for msg in ws:
            try:
                if msg.type is WSMsgType.BINARY:
                    receive(msg.data)
                    continue
                if (failure := failure_of(msg)) is not None:
                    raise failure
            except ProtocolError as exc:
                log.warning("replica %s broke the peer protocol (%s); closing the link", link.replica_id, exc)
            break
    finally:
        if queue is not None:
            queue.deliver = None
    await ws.close()


async def run_links(cluster: Cluster, secret: str) -> None:
    """Keep one outbound link to every live peer replica, for as long as the hub runs."""
    headers = {REPLICA_HEADER: cluster.replica_id, "Authorization": "Bearer " + peer_token(secret)}
    dialing: dict[str, asyncio.Task[None]] = {}
    async with aiohttp.ClientSession(headers=headers) as http, asyncio.TaskGroup() as group:
        while True:
            for replica_id, info in cluster.peers().items():
                task = dialing.get(replica_id)
                if task is None or task.done():
                    dialing[replica_id] = group.create_task(_link(cluster, http, replica_id, info.url))
            await asyncio.sleep(DIAL_PERIOD_S)


async def _link(cluster: Cluster, http: aiohttp.ClientSession, replica_id: str, url: str) -> None:
    try:
        async with asyncio.timeout(cluster.lease_s):
            ws = await http.ws_connect(
                url.rstrip("/") + PATH, heartbeat=cluster.lease_s, max_msg_size=MAX_MESSAGE, compress=0
            )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.debug("cannot reach replica %s at %s (%s)", replica_id, url, exc)
        await asyncio.sleep(DIAL_PERIOD_S)
        return
    # Safe to switch now: a replica sends nothing on a new link before this one asks (its heartbeat comes a
    # lease later).
    queue = read_directly(ws, MAX_MESSAGE)
    link = cluster.peering.link_up(replica_id, WebSocketTransport(ws))
    log.info("peer link to replica %s (%s) is up", replica_id, url)
    try:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            await _pump(ws, queue, link)
    finally:
        cluster.peering.link_down(link)
        log.info("peer link to replica %s is down", replica_id)


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, peer_connect)


def cluster_loops(cluster: Cluster | None, settings: HubSettings) -> dict[str, Loop]:
    """The background loops of cluster mode, for the hub's TaskGroup (none on a single hub)."""
    if cluster is None:
        return {}
    return {
        "cluster": cluster.run,
        "cluster-caches": cluster.reload_caches,
        "peer-links": functools.partial(run_links, cluster, settings.cluster_secret or ""),
    }


_UNCHANGING = frozenset({"GET", "HEAD", "OPTIONS"})
CLIENT_API = "/v1/"
"""Client requests change nothing the replicas cache, and their hot path must not pay for a reload."""


@web.middleware
async def invalidate_on_change(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A successful change through any route but the client API: the other replicas reload their caches.

    Not only ``/admin/`` and ``/api/``: the dashboard's forms (``/join/<code>`` redeems an invite, ``/signup``
    makes a user) change memberships and users as the account API does."""
    cluster = request.app[HUB].cluster
    if cluster is None or request.method in _UNCHANGING or request.path.startswith(CLIENT_API):
        return await handler(request)
    with cluster.changing():  # a reload of this replica's caches overlapping the change is read again
        response = await handler(request)
    if response.status < 400:
        cluster.invalidate()
    return response
