"""Composition root: builds the hub's services and its aiohttp application, and runs it.

`create_app(settings)` wires everything; its cleanup context owns the store and the hub's
background tasks. `serve(settings)` runs the app with graceful shutdown: on SIGTERM the hub
answers 503 to new requests, tells agents to drain, lets in-flight responses finish up to
``shutdown_timeout``, then closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from functools import partial
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from potluck._shared.clock import SystemClock
from potluck.api import (
    admin,
    agent_ws,
    billing,
    dashboard,
    dialect_routes,
    health,
    openai,
    openapi,
    peer,
    peer_admin,
    requests,
    scheduling,
    users,
)
from potluck.api import (
    claims as claims_api,
)
from potluck.api import web as pages
from potluck.api.bodies import check_body
from potluck.api.context import HUB
from potluck.api.cors import add_cors, cors_of
from potluck.api.dashboard_stream import StreamRenderer
from potluck.api.errors import error_middleware
from potluck.api.front import Front
from potluck.api.guard import CONNECTION_GUARD, ConnectionGuard, GuardedSite, guard_requests
from potluck.api.install import add_routes as add_install_routes
from potluck.hub.access import AccessMap
from potluck.hub.accounting import Accounting, GroupBilling
from potluck.hub.accounts import Accounts
from potluck.hub.agents import Agents
from potluck.hub.aliases import Aliases
from potluck.hub.auth import AdminAuth
from potluck.hub.claims import Claims, Sample
from potluck.hub.cluster_cache import reload_shared
from potluck.hub.cluster_sweep import sweep_dead_replica
from potluck.hub.cluster_view import new_replica_id
from potluck.hub.controls import parse_controls
from potluck.hub.credits import Credits
from potluck.hub.dispatch import Dispatcher, DispatchSettings
from potluck.hub.gate import AgentGate
from potluck.hub.groups import Groups
from potluck.hub.health import Health
from potluck.hub.holds import HoldBook, LocalHoldBook, SharedHoldBook
from potluck.hub.invites import Invites
from potluck.hub.keys import Keys
from potluck.hub.ledger import Ledger
from potluck.hub.lifecycle import Lifecycle, Loop
from potluck.hub.limits import Limits, MemoryRateLimiter, RateLimiter
from potluck.hub.metering import UsageJournal
from potluck.hub.metrics import HubMetrics
from potluck.hub.observe import Observer
from potluck.hub.observe_fleet import FleetWatch
from potluck.hub.observe_stream import Dashboards
from potluck.hub.observe_usage import UsageCharts
from potluck.hub.receipts import HubSigner
from potluck.hub.registry import Registry
from potluck.hub.reports import Reports
from potluck.hub.requests import RequestOwner
from potluck.hub.returning import Returning
from potluck.hub.scheduler import EjectionSettings, Scheduler, ScoreWeights
from potluck.hub.services import HubServices
from potluck.hub.settings import HubSettings
from potluck.hub.spotcheck import SpotChecker, SpotCheckSettings
from potluck.hub.throttle import LoginThrottle
from potluck.hub.throughput import FloorSettings, ThroughputFloor
from potluck.protocol.accounts import UserRole
from potluck.store.database import Store

log = logging.getLogger(__name__)

ADMIN_TOKEN_FILE = "admin_token.sha256"  # noqa: S105 - a file name
ADMIN_USERNAME = "admin"
DEFAULT_GROUP = "default"


def load_admin_token(settings: HubSettings) -> tuple[str, str | None]:
    """The admin token's hash, and the token itself if it was generated just now (to print once).

    A token given by option or environment wins and is not stored. Otherwise the hash kept in the
    data dir is used; on first start a token is generated and only its hash is kept.
    """
    if settings.admin_token:
        return AdminAuth.hash_token(settings.admin_token), None
    path = settings.data_dir / ADMIN_TOKEN_FILE
    if path.exists():
        return path.read_text().strip(), None
    token = "padm-" + secrets.token_urlsafe(32)
    ensure_data_dir(settings.data_dir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(AdminAuth.hash_token(token) + "\n")
    return AdminAuth.hash_token(token), token


async def _run_periodic(interval: float, tick: Callable[[], None]) -> None:
    while True:
        await asyncio.sleep(interval)
        tick()


POLL_MAX_S = 1.0
POLL_MIN_S = 0.01


async def _run_poll(registry: Registry, clock: SystemClock) -> None:
    """Offer the queue to free slots when a request that waited for a hot slot may take a cold one: at the
    scheduler's next wake-up, and at least every second."""
    while True:
        wake = registry.scheduler.next_wakeup()
        delay = POLL_MAX_S if wake is None else min(POLL_MAX_S, max(POLL_MIN_S, wake - clock.now()))
        await asyncio.sleep(delay)
        registry.poll()


def create_app(settings: HubSettings, admin_token_hash: str) -> web.Application:
    guard = ConnectionGuard(
        SystemClock(),
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        max_pending_per_ip=settings.max_pending_connections_per_ip,
    )
    # A replica tells the others when a change went through; a single hub pays no middleware for it.
    replica = [peer.invalidate_on_change] if settings.redis_url is not None else []
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[error_middleware, guard_requests, check_body, *replica],
    )
    app[CONNECTION_GUARD] = guard

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        ensure_data_dir(settings.data_dir)
        store = await Store.open(settings.resolved_database_url)
        clock = SystemClock()
        metrics = HubMetrics(CollectorRegistry())
        claim_view = await Claims.load(store)
        scheduler = Scheduler(
            clock,
            max_queue=settings.max_queue,
            queue_timeout=settings.queue_timeout,
            policy=settings.scheduler_policy,
            weights=ScoreWeights.parse(settings.score_weights),
            ejection=EjectionSettings(
                failures=settings.eject_failures,
                base_s=settings.eject_base_s,
                max_s=settings.eject_base_s * 10,
                max_percent=settings.eject_max_percent,
            ),
            user_share=settings.queue_user_share,
            claims=claim_view,
        )
        access = await load_access(store)
        access.hub_aliases = settings.parsed_model_aliases()
        journal = UsageJournal(store.usage.append, on_drop=metrics.usage_dropped.inc)
        keys = await Keys.load(store, access, journal)
        registry = Registry(scheduler, clock, heartbeat_timeout=settings.heartbeat_timeout, access=access)
        metrics.stream_resets = registry.stream_resets
        replica_id = new_replica_id() if settings.redis_url is not None else None
        registry.admin_drained.update(a.id for a in await store.agents.list() if a.drained)
        on_drop = lambda _txn: metrics.ledger_dropped.inc()  # noqa: E731
        if store.is_sqlite:
            ledger, released = await Ledger.recover(store.ledger, store.ledger.append, on_drop=on_drop)
            book: HoldBook = LocalHoldBook(ledger)
        else:
            # Replicas share the database: it decides every hold. Only this replica's own leftovers are
            # released (another replica's open holds may be in flight; a dead one's are the sweeper's).
            ledger = Ledger(store.ledger.append, on_drop=on_drop)
            shared = SharedHoldBook(store.holds, replica_id=replica_id)
            released, book = await shared.recover(), shared
        # Among replicas, another one's usage records and receipts may be in flight, so that crash repair
        # belongs to whoever sweeps a dead replica (hub/cluster_sweep.py), not to every start.
        zeroed, rebuilt = await store.usage.reconcile_with_receipts() if replica_id is None else (0, 0)
        if released or zeroed or rebuilt:
            log.warning(
                "recovered after an unclean stop: %d open holds released, %d usage records unbilled, %d rebuilt",
                released,
                zeroed,
                rebuilt,
            )
        accounting = Accounting(
            ledger,
            HubSigner.load_or_create(settings.resolved_signing_key_file),
            access,
            scheduler,
            fee_percent=settings.platform_fee_percent,
            holds=book,
        )
        for group in await store.groups.all():
            accounting.set_billing(group.id, GroupBilling.of(group))
        accounting.prices = await store.billing.prices()
        dispatcher = Dispatcher(
            registry,
            clock,
            DispatchSettings(
                max_attempts=settings.max_attempts,
                first_byte_timeout=settings.first_byte_timeout,
                idle_timeout=settings.idle_timeout,
                retry_budget_percent=settings.retry_budget_percent,
            ),
            metrics,
        )
        cluster = None
        limiter: RateLimiter = MemoryRateLimiter(clock)
        cluster_loops: dict[str, Loop] = {}
        if settings.redis_url is not None:
            # Only a replica needs Redis: the `cluster` extra, imported here so a single hub never does.
            from potluck.hub.cluster import Cluster
            from potluck.hub.cluster_limits import ClusterRateLimiter

            cluster = Cluster(
                redis_url=settings.redis_url,
                registry=registry,
                clock=clock,
                url=settings.advertise_url or "",
                lease_s=settings.replica_lease_s,
                credit_window=settings.credit_window,
                on_invalidate=partial(reload_shared, store, access, keys, accounting, registry, claim_view),
                replica_id=replica_id,
            )
            cluster.on_replica_dead = partial(sweep_dead_replica, store.holds, store.usage, clock)
            cluster.knows_agent = lambda agent_id: agent_id in access.agent_owner
            accounting.cluster_load = cluster.load  # dynamic prices follow the whole cluster's load
            shared_limiter = ClusterRateLimiter(cluster.redis, clock, lambda: len(cluster.replicas))
            limiter = shared_limiter
            cluster_loops["cluster-limits"] = shared_limiter.run
        lifecycle = Lifecycle()
        returning = Returning(clock, await store.agents.serving(), settings.restart_grace_s)
        observer = Observer(clock)
        observer.seed_day(await store.rollups.last_day(clock.wall() - timedelta(hours=24)))
        requests = RequestOwner(
            access=access,
            limiter=limiter,
            accounting=accounting,
            dispatcher=dispatcher,
            journal=journal,
            metrics=metrics,
            clock=clock,
            lifecycle=lifecycle,
            returning=returning,
            relinking=cluster,
            observer=observer,
        )
        if cluster is not None:
            cluster.in_flight = lambda: requests.in_flight
        groups = Groups(store, access, registry, accounting)
        agents = Agents(store, access, registry, accounting, groups)
        claims = Claims(store, claim_view, access, registry, groups, clock)
        if cluster is not None:  # holds taken by spot checks and the throughput floor, away from any API call
            claims.on_saved = cluster.invalidate
            claims.changing = cluster.changing
        floor = ThroughputFloor(
            claims,
            FloorSettings(
                window=settings.throughput_window,
                strikes=settings.throughput_strikes,
                min_tokens=settings.throughput_min_tokens,
                cool_down_s=settings.throughput_cool_down_s,
            ),
        )
        spot_checks = SpotChecker(
            claims,
            registry,
            requests,
            clock,
            SpotCheckSettings(
                percent=settings.spot_check_percent,
                interval_s=settings.spot_check_interval_s,
                strikes=settings.spot_check_strikes,
                window=settings.spot_check_window,
                similarity=settings.spot_check_similarity,
            ),
        )

        def served(sample: Sample) -> None:
            floor.served(sample)
            spot_checks.served(sample)

        requests.on_served = served
        gate = AgentGate(
            agents=store.agents,
            registry=registry,
            settings=settings,
            clock=clock,
            enrolled=agents,
            lifecycle=lifecycle,
            returning=returning,
        )
        app[HUB] = HubServices(
            settings=settings,
            clock=clock,
            keys=keys,
            admin=AdminAuth(admin_token_hash),
            registry=registry,
            requests=requests,
            gate=gate,
            lifecycle=lifecycle,
            journal=journal,
            metrics=metrics,
            accounts=Accounts(store, access, LoginThrottle(clock)),
            groups=groups,
            invites=Invites(store, groups),
            agents=agents,
            aliases=Aliases(store, access, groups),
            credits=Credits(access, accounting),
            reports=Reports(store, journal, accounting, groups),
            health=Health(store),
            access=access,
            limiter=limiter,
            accounting=accounting,
            claims=claims,
            spot_checks=spot_checks,
            dashboards=Dashboards(
                observer,
                FleetWatch(registry, clock),
                access,
                admin=lambda u: u in access.admins,
                closing=lambda: lifecycle.closing,
            ),
            charts=UsageCharts(store, journal),
            cluster=cluster,
        )
        app[HUB].dashboards.renderer = StreamRenderer(app[HUB])
        lifecycle.start(
            {
                "heartbeat": partial(_run_periodic, settings.heartbeat_interval, registry.heartbeat),
                # Owner controls' availability windows: changes apply within a second.
                "schedules": partial(_run_periodic, 1.0, registry.apply_schedules),
                "scheduler-poll": partial(_run_poll, registry, clock),
                "usage-journal": journal.run,
                "ledger": book.run,
                "reprice": partial(_run_periodic, settings.reprice_interval, accounting.reprice),
                "connection-guard": guard.run,
                "claims": claims.run,
                "agent-catalogs": gate.run,
                "parked-cool-down": partial(_run_periodic, 1.0, floor.expire),
                **({"spot-checks": spot_checks.run} if settings.spot_check_percent > 0 else {}),
                "dashboards": app[HUB].dashboards.run,
                **peer.cluster_loops(cluster, settings),
                **cluster_loops,
            }
        )
        try:
            yield
        finally:
            await lifecycle.close()
            await claims.flush()
            if cluster is not None:
                await cluster.close()
            await journal.close()
            await book.close()
            await store.close()

    app.cleanup_ctx.append(lifecycle)
    openai.add_routes(app)
    dialect_routes.add_routes(app)
    agent_ws.add_routes(app)
    peer.add_routes(app)
    peer_admin.add_routes(app)
    admin.add_routes(app)
    users.add_routes(app)
    health.add_routes(app)
    scheduling.add_routes(app)
    billing.add_routes(app)
    claims_api.add_routes(app)
    requests.add_routes(app)
    dashboard.add_routes(app)
    openapi.add_routes(app)
    add_install_routes(app, settings)
    pages.add_routes(app)
    add_cors(app, settings)
    return app


async def load_access(store: Store) -> AccessMap:
    """The admin user and its default group (made on first start), and who reaches which agent.

    Keys and agents from before accounts existed, or made with the admin token, belong to the admin
    user; such agents are shared into the default group, so a single-user hub works with no setup.
    """
    admin = await store.users.by_username(ADMIN_USERNAME)
    if admin is None:
        admin = await store.users.create(ADMIN_USERNAME, None, UserRole.ADMIN)
    default = await store.groups.find(admin.id, DEFAULT_GROUP)
    if default is None:
        default = await store.groups.create(DEFAULT_GROUP, admin.id)
    access = AccessMap(admin.id, default.id)
    access.user_groups = await store.groups.memberships()
    access.agent_groups = await store.agents.sharing()
    everyone = await store.users.all()
    access.user_limits = {u.id: Limits(rpm=u.rpm, tpm=u.tpm) for u in everyone}
    access.usernames = {u.id: u.username for u in everyone}
    access.admins = {u.id for u in everyone if u.role == UserRole.ADMIN}
    for alias in await store.aliases.list():
        access.set_alias(alias.group_id, alias.alias, alias.models)
    for agent in await store.agents.list():
        owner = agent.owner_id or admin.id
        access.agent_owner[agent.id] = owner
        access.agent_controls[agent.id] = parse_controls(agent.controls)
        if owner == admin.id and agent.id not in access.agent_groups:
            await store.agents.share(agent.id, default.id)
            access.agent_groups[agent.id] = {default.id}
    return access


def _ssl_context(settings: HubSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def serve(
    settings: HubSettings, admin_token_hash: str, on_listening: Callable[[str], None] | None = None
) -> None:
    """Run the hub until SIGTERM/SIGINT, then shut down gracefully."""
    app = create_app(settings, admin_token_hash)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=1.0,
        keepalive_timeout=settings.keepalive_timeout,
    )
    await runner.setup()
    ssl_context = _ssl_context(settings)
    front = Front(
        app[HUB],
        max_body=settings.max_body_bytes,
        keepalive_timeout=settings.keepalive_timeout,
        cors=cors_of(settings),
    )
    site = GuardedSite(
        runner,
        app[CONNECTION_GUARD],
        settings.host,
        settings.port,
        front=front,
        ssl_context=ssl_context,
        backlog=4096,
    )
    await site.start()
    port = _bound_port(runner) or settings.port
    scheme = "https" if ssl_context else "http"
    url = f"{scheme}://{settings.host}:{port}"
    log.info("hub listening on %s (data dir %s)", url, settings.data_dir)
    cluster = app[HUB].cluster
    if cluster is not None:
        cluster.set_url(settings.advertise_url or url)
    if on_listening is not None:
        on_listening(url)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    lifecycle = app[HUB].lifecycle
    try:
        stopping = asyncio.ensure_future(stop.wait())
        crashed = asyncio.ensure_future(lifecycle.stopped.wait())
        await asyncio.wait((stopping, crashed), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        crashed.cancel()
        await _graceful_shutdown(app, settings)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    if lifecycle.crashed is not None:
        raise SystemExit("the hub stopped because a background loop crashed (see the log above)")


async def _graceful_shutdown(app: web.Application, settings: HubSettings) -> None:
    hub = app[HUB]
    log.info("shutting down: refusing new requests, draining %d in flight", hub.requests.in_flight)
    hub.lifecycle.closing = True
    hub.dashboards.close()
    hub.registry.drain_all(settings.shutdown_timeout)
    if hub.cluster is not None:
        hub.cluster.drain()
    if not await hub.requests.wait_idle(settings.shutdown_timeout):
        log.warning("shutdown deadline reached with %d requests in flight", hub.requests.in_flight)
    if hub.cluster is not None and not await hub.cluster.peering.wait_forwarded(settings.shutdown_timeout):
        log.warning("shutdown deadline reached with %d forwarded requests running", hub.cluster.peering.forwarding)
    for session in list(hub.registry.sessions.values()):
        session.channel.close()
    with contextlib.suppress(Exception):
        await hub.journal.flush()


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None


def ensure_data_dir(path: Path) -> None:
    """The data dir holds the database and the admin token hash: readable by its owner only."""
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        path.chmod(0o700)
