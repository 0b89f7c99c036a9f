"""Cluster mode: this hub as one replica among several, coordinated through Redis.

Redis holds, under the ``potluck:`` prefix:

- ``replicas`` (a set) and ``replica:<id>`` (a lease with a TTL, renewed three times per lease): who is
  alive, the URL its peers reach it at, its version, queue depth and requests in flight;
- ``agents:<replica id>`` (a hash): the agents tunnelled to that replica and what they serve;
- the ``events`` channel: an agent joined, changed or left, a replica's load, or "reload your caches".

Each replica keeps the whole view in memory, updated by those events (a full re-read on every
(re)subscription and every lease period, so a lost event heals within one). Nothing on a request's path
reads Redis: the scheduler sees a remote agent as a proxy `AgentSession` whose channel is the peer link
to the replica that holds it (hub/cluster_peering.py keeps them, hub/cluster_link.py carries the frames).
Token chunks travel only over peer links.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Collection, Coroutine, Iterator
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from potluck import __version__
from potluck._shared.clock import Clock
from potluck.hub.accounting import ClusterLoad
from potluck.hub.cluster_link import PeerChannel
from potluck.hub.cluster_peering import Peering, local_sessions
from potluck.hub.cluster_view import (
    AgentEntry,
    Event,
    EventKind,
    ReplicaInfo,
    decode_agent,
    decode_event,
    decode_replica,
    encode,
    new_replica_id,
    raw,
    text,
)
from potluck.hub.registry import Registry
from potluck.hub.session import AgentSession, SessionState

log = logging.getLogger(__name__)

PREFIX = "potluck:"
EVENTS = PREFIX + "events"
RETRY_S = 0.5
"""Seconds between attempts to reach Redis while it is down."""


async def _nothing(_replica_id: str) -> None:
    return None


class Cluster:
    """This replica's membership, the cached cluster view, and the proxies of remote agents."""

    def __init__(
        self,
        *,
        redis_url: str,
        registry: Registry,
        clock: Clock,
        url: str,
        lease_s: float,
        credit_window: int,
        on_invalidate: Callable[[Callable[[], bool]], Coroutine[Any, Any, bool]],
        replica_id: str | None = None,
    ) -> None:
        self.replica_id = replica_id or new_replica_id()
        self.url = url
        self.registry = registry
        self.clock = clock
        self.lease_s = lease_s
        self.credit_window = credit_window
        self._on_invalidate = on_invalidate
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=lease_s / 2, socket_connect_timeout=lease_s / 2
        )
        self.started_at = clock.wall().timestamp()
        self._started_mono = clock.now()
        self._url_known = asyncio.Event()
        if url:
            self._url_known.set()
        self.redis_ok = False
        self.joined = False
        """The view was read from Redis at least once (until then remote agents are unknown here)."""
        self.replicas: dict[str, ReplicaInfo] = {}
        """Live replicas (this one included), from their leases."""
        self.agents: dict[str, dict[str, AgentEntry]] = {}
        """replica id -> agent id -> entry."""
        self.loads: dict[str, dict[str, int]] = {}
        """replica id -> agent id -> requests in flight, as the replica holding the agent last said."""
        self.queued: dict[str, dict[str, int]] = {}
        """replica id -> model -> requests waiting, as the replica last said."""
        self.peering = Peering(registry, clock, credit_window, self.remote_entries)
        """The links to the other replicas, and the proxies of their agents."""
        self._dirty: set[str] = set()
        self._leased = False
        """This replica's lease was set at least once (a later renewal finding none means it lapsed)."""
        self._published: dict[str, AgentEntry] = {}
        """What was last published per local agent, load aside."""
        self._wake = asyncio.Event()
        self._invalidate = asyncio.Event()
        self._cache_wanted = asyncio.Event()
        """Set: the shared caches must be read again (`reload_caches` does it)."""
        self._changes = 0
        """Changes this replica is making to what the replicas cache (`changing`)."""
        self._changes_made = 0
        self._no_changes = asyncio.Event()
        self._no_changes.set()
        self.on_replica_dead: Callable[[str], Coroutine[Any, Any, object]] = _nothing
        """Called (awaited) once a replica's lease is gone, before it is forgotten: the sweeper."""
        self.knows_agent: Callable[[str], bool] = lambda _agent_id: True
        """Whether the shared caches know an agent (one enrolled at another replica makes them reload)."""
        self.queue_depth: Callable[[], int] = lambda: registry.scheduler.queue_depth
        self.in_flight: Callable[[], int] = lambda: 0
        registry.observer = self

    def set_url(self, url: str) -> None:
        """The URL peers reach this replica at, once the hub is listening (the lease waits for it)."""
        if not self.url:
            self.url = url
        self._url_known.set()

    # -- the registry's observer: local agents are published ---------------------------------------------------

    def changed(self, session: AgentSession) -> None:
        if not isinstance(session.channel, PeerChannel):
            self._dirty.add(session.agent_id)
            self._wake.set()

    def left(self, session: AgentSession) -> None:
        if not isinstance(session.channel, PeerChannel):
            self._dirty.add(session.agent_id)
            self._wake.set()
            self.peering.reconcile()  # another replica may hold the agent too

    def invalidate(self) -> None:
        """Shared data changed here (keys, groups, prices...): every other replica reloads its caches."""
        self._invalidate.set()
        self._wake.set()

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """Bracket a change this replica makes to the database and its own caches (an admin or account call, a
        claim hold written). A cache reload that overlaps it may have read the database before the change and
        would put back what it replaced: such a reload is discarded and read again (`reload_caches`)."""
        self._changes += 1
        self._no_changes.clear()
        try:
            yield
        finally:
            self._changes -= 1
            self._changes_made += 1
            if not self._changes:
                self._no_changes.set()

    def _entry(self, session: AgentSession) -> AgentEntry:
        return AgentEntry(
            agent_id=session.agent_id,
            name=session.name,
            replica=self.replica_id,
            connected_at=self.started_at + (session.connected_at - self._started_mono),
            models=session.models,
            backends=session.backends,
            max_concurrency=session.max_concurrency,
            draining=session.state is not SessionState.ACTIVE,
            version=session.version,
            in_flight=len(session.streams),
        )

    # -- the loops (run in the hub's TaskGroup) ----------------------------------------------------------------

    async def run(self) -> None:
        """Keep the lease, publish local changes and follow the others', through Redis outages."""
        await self._url_known.wait()
        while True:
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._follow())
                    group.create_task(self._publish())
            except* (RedisError, OSError) as exc:
                if self.redis_ok:
                    log.warning("lost Redis (%s); serving from the cached cluster view", exc.exceptions[0])
                self.redis_ok = False
            await asyncio.sleep(RETRY_S)

    async def _publish(self) -> None:
        """Agent changes as they happen (only what others place by: models, capacity, draining); loads and
        the lease on a fixed cadence, so a busy replica costs Redis the same as an idle one."""
        interval = self.lease_s / 3
        await self._renew()
        await self._publish_all()
        last_load: tuple[dict[str, int], dict[str, int]] = ({}, {})
        next_beat = self.clock.now() + interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_beat - self.clock.now())):
                    await self._wake.wait()
            self._wake.clear()
            if self._invalidate.is_set():
                self._invalidate.clear()
                try:
                    await self.redis.publish(EVENTS, encode(Event(EventKind.INVALIDATE, self.replica_id)))
                except BaseException:
                    self._invalidate.set()  # Redis is away: tell the others once it is back
                    raise
            dirty, self._dirty = self._dirty, set()
            for agent_id in dirty:
                await self._publish_agent(agent_id)
            if self.clock.now() < next_beat:
                continue
            next_beat = self.clock.now() + interval
            load = ({a: len(s.streams) for a, s in self._local().items()}, self.registry.scheduler.queued_by_model())
            if load != last_load:
                last_load = load
                loads, queued = load
                event = Event(
                    EventKind.LOAD, self.replica_id, loads=loads, queue_depth=self.queue_depth(), queued=queued
                )
                await self.redis.publish(EVENTS, encode(event))
            await self._renew()

    async def _renew(self) -> None:
        info = ReplicaInfo(
            self.replica_id, self.url, __version__, self.started_at, self.queue_depth(), self.in_flight()
        )
        lease = PREFIX + "replica:" + self.replica_id
        async with self.redis.pipeline(transaction=False) as pipe:
            _ = pipe.exists(lease)
            _ = pipe.sadd(PREFIX + "replicas", self.replica_id)
            _ = pipe.set(lease, encode(info), px=int(self.lease_s * 1000))
            held, added, _ok = await pipe.execute()
        if not self.redis_ok:
            log.info("replica %s: Redis reachable", self.replica_id)
        self.redis_ok = True
        if self._leased and (not held or added):
            # Renewed too late (a stalled process, a slow Redis): a replica that saw no lease and no link may
            # have swept this one, removing its agents from the view. Publish them again.
            log.warning("replica %s: its lease lapsed; publishing its agents again", self.replica_id)
            await self._publish_all()
        self._leased = True

    async def _publish_all(self) -> None:
        """Our whole entry set, replacing what Redis held (after an outage or a Redis restart)."""
        self._published.clear()
        key = PREFIX + "agents:" + self.replica_id
        entries = {a: encode(self._entry(s)) for a, s in self._local().items()}
        async with self.redis.pipeline(transaction=True) as pipe:
            _ = pipe.delete(key)
            if entries:
                _ = pipe.hset(key, mapping=entries)  # type: ignore[arg-type]
            await pipe.execute()
        for agent_id in entries:
            self._dirty.add(agent_id)

    async def _publish_agent(self, agent_id: str) -> None:
        key = PREFIX + "agents:" + self.replica_id
        session = self._local().get(agent_id)
        if session is None:
            self._published.pop(agent_id, None)
            await self.redis.hdel(key, agent_id)
            event = Event(EventKind.LEFT, self.replica_id, agent_id=agent_id)
        else:
            entry = self._entry(session)
            placement = msgspec.structs.replace(entry, in_flight=0)
            if self._published.get(agent_id) == placement:
                return  # only its load changed: that goes out with the next LOAD event
            self._published[agent_id] = placement
            await self.redis.hset(key, agent_id, encode(entry))
            event = Event(EventKind.AGENT, self.replica_id, agent=entry)
        await self.redis.publish(EVENTS, encode(event))

    async def _follow(self) -> None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(EVENTS)
            if self.joined:
                # Back after losing Redis: changes the others made meanwhile were announced to nobody here.
                self.want_reload()
            await self._reload()
            reload_at = self.clock.now() + self.lease_s
            while True:
                message = await pubsub.get_message(timeout=self.lease_s / 3)
                if message is not None and isinstance(message.get("data"), bytes):
                    try:
                        event = decode_event(message["data"])
                    except msgspec.DecodeError:
                        log.warning("ignoring an undecodable cluster event")
                    else:
                        self._apply(event)
                if self.clock.now() >= reload_at:
                    await self._reload()
                    reload_at = self.clock.now() + self.lease_s
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def _reload(self) -> None:
        """Re-read every live replica and its agents; sweep the registrations of dead ones."""
        ids = sorted(text(i) for i in await self.redis.smembers(PREFIX + "replicas"))
        leases = await self.redis.mget([PREFIX + "replica:" + i for i in ids]) if ids else []
        replicas: dict[str, ReplicaInfo] = {}
        for replica_id, lease in zip(ids, leases, strict=True):
            if lease is not None:
                replicas[replica_id] = decode_replica(raw(lease))
            elif replica_id == self.replica_id:
                continue  # this replica is alive whatever Redis says: its next renewal restores the lease
            elif self.peering.linked(replica_id) and replica_id in self.replicas:
                # Its lease lapsed but its link still answers pings: slow, or cut off from Redis, not dead.
                # Sweeping it would release the holds of requests it is serving.
                log.warning("replica %s: its lease lapsed but its peer link is up; not sweeping it", replica_id)
                replicas[replica_id] = self.replicas[replica_id]
            else:
                await self._sweep(replica_id)
        agents: dict[str, dict[str, AgentEntry]] = {}
        for replica_id in replicas:
            if replica_id == self.replica_id:
                continue
            raw_entries = await self.redis.hgetall(PREFIX + "agents:" + replica_id)
            agents[replica_id] = {text(k): decode_agent(raw(v)) for k, v in raw_entries.items()}
        self.replicas = replicas
        self.agents = agents
        self.joined = True
        self.peering.reconcile()

    async def _sweep(self, replica_id: str) -> None:
        log.info("replica %s is dead (no lease); releasing its holds and removing its registrations", replica_id)
        try:
            await self.on_replica_dead(replica_id)
        except Exception:
            log.exception("sweeping dead replica %s failed; retrying at the next refresh", replica_id)
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            _ = pipe.srem(PREFIX + "replicas", replica_id)
            _ = pipe.delete(PREFIX + "agents:" + replica_id)
            await pipe.execute()
        await self.redis.publish(EVENTS, encode(Event(EventKind.REPLICA_GONE, replica_id)))

    def _apply(self, event: Event) -> None:
        if event.replica == self.replica_id:
            return
        kind = event.kind
        if kind is EventKind.AGENT and event.agent is not None:
            self.agents.setdefault(event.replica, {})[event.agent.agent_id] = event.agent
            if not self.knows_agent(event.agent.agent_id):
                self.want_reload()
        elif kind is EventKind.LEFT:
            self.agents.get(event.replica, {}).pop(event.agent_id, None)
        elif kind is EventKind.LOAD:
            self.loads[event.replica] = event.loads
            self.queued[event.replica] = event.queued
            info = self.replicas.get(event.replica)
            if info is not None:
                self.replicas[event.replica] = msgspec.structs.replace(info, queue_depth=event.queue_depth)
            return
        elif kind is EventKind.REPLICA_GONE:
            self.agents.pop(event.replica, None)
            self.replicas.pop(event.replica, None)
            self.loads.pop(event.replica, None)
            self.queued.pop(event.replica, None)
        elif kind is EventKind.INVALIDATE:
            self.want_reload()
            return
        self.peering.reconcile()

    def want_reload(self) -> None:
        """Have the shared caches read again; changes heard while a reload runs start one more after it."""
        self._cache_wanted.set()

    async def reload_caches(self) -> None:
        """Read the shared caches again whenever asked (a lifecycle loop, apart from the Redis loops, so a
        Redis outage never cuts a reload short)."""
        while True:
            await self._cache_wanted.wait()
            self._cache_wanted.clear()
            await self._no_changes.wait()
            try:
                applied = await self._on_invalidate(functools.partial(self._unchanged_since, self._changes_made))
            except Exception:
                # Most likely the database is away: an invalidation heard now must not be lost, so read again.
                log.warning("reloading the shared caches failed; retrying in %.1f s", RETRY_S, exc_info=True)
                self._cache_wanted.set()
                await asyncio.sleep(RETRY_S)
                continue
            if not applied:
                self._cache_wanted.set()  # a change here overlapped the read: read again once it is done
            self.peering.reconcile()

    def _unchanged_since(self, made: int) -> bool:
        """No change here is running, and none finished, since ``made`` changes had."""
        return not self._changes and self._changes_made == made

    # -- this replica's agents and the others' ---------------------------------------------------------------

    def _local(self) -> dict[str, AgentSession]:
        return local_sessions(self.registry)

    def own_entries(self) -> dict[str, AgentEntry]:
        """This replica's agents, as it publishes them."""
        return {a: self._entry(s) for a, s in self._local().items()}

    def remote_entries(self) -> dict[str, AgentEntry]:
        """Per agent held only elsewhere, the entry of the replica it connected to last."""
        best: dict[str, AgentEntry] = {}
        for replica_id, entries in self.agents.items():
            if replica_id not in self.replicas or replica_id == self.replica_id:
                continue
            for agent_id, entry in entries.items():
                current = best.get(agent_id)
                if current is None or entry.connected_at > current.connected_at:
                    best[agent_id] = entry
        return best

    def unlinked(self, models: tuple[str, ...], reachable: Collection[str] | None) -> bool:
        """Whether another live replica holds an agent serving one of ``models`` (among ``reachable``; None:
        any) that this replica cannot reach now: its peer link is down (reconnecting, or the replica is dying
        and its lease will say so within one)."""
        wanted = frozenset(models)
        for agent_id, entry in self.remote_entries().items():
            if reachable is not None and agent_id not in reachable:
                continue
            if not self.peering.linked(entry.replica) and any(m.id in wanted for m in entry.models):
                return True
        return False

    async def relinked(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a peer link to come up."""
        return await self.peering.relinked(timeout)

    def load(self) -> ClusterLoad:
        """The load of the whole cluster, which every replica's dynamic prices follow: requests in flight per
        agent (counted here for the agents tunnelled here, as their holder last said for the others, a heartbeat
        old at most) and the requests the other live replicas have waiting, per model."""
        in_flight: dict[str, int] = {}
        for agent_id, entry in self.remote_entries().items():
            in_flight[agent_id] = self.loads.get(entry.replica, {}).get(agent_id, entry.in_flight)
        for agent_id, session in self._local().items():
            in_flight[agent_id] = len(session.streams)
        queued: dict[str, int] = {}
        for replica_id, waiting in self.queued.items():
            if replica_id != self.replica_id and replica_id in self.replicas:
                for model, count in waiting.items():
                    queued[model] = queued.get(model, 0) + count
        return ClusterLoad(in_flight, queued)

    def drain(self) -> None:
        """This replica is shutting down: publish its agents as draining, so the others place nothing new on
        them through it (what they have running here finishes)."""
        self._dirty.update(self._local())
        self._wake.set()

    def peers(self) -> dict[str, ReplicaInfo]:
        """Live replicas other than this one: those to keep a link to."""
        return {i: r for i, r in self.replicas.items() if i != self.replica_id}

    async def close(self) -> None:
        """Leave the cluster: drop the lease and the registrations (best effort: Redis may be down)."""
        with contextlib.suppress(RedisError, OSError):
            async with asyncio.timeout(1.0):
                async with self.redis.pipeline(transaction=True) as pipe:
                    _ = pipe.srem(PREFIX + "replicas", self.replica_id)
                    _ = pipe.delete(PREFIX + "replica:" + self.replica_id, PREFIX + "agents:" + self.replica_id)
                    await pipe.execute()
                await self.redis.publish(EVENTS, encode(Event(EventKind.REPLICA_GONE, self.replica_id)))
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()
