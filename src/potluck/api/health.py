"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from potluck.api import peer_admin
from potluck.api.context import HUB
from potluck.api.payloads import json_response
from potluck.api.schemas.service import Alive, NotReady, Ready


async def healthz(request: web.Request) -> web.Response:
    return json_response(Alive())


async def readyz(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    if hub.requests.closing:
        return json_response(NotReady(status="shutting_down"), 503)
    if not await hub.health.database_reachable():
        return json_response(NotReady(status="database_unavailable"), 503)
    cluster = hub.cluster
    if cluster is None:
        return json_response(Ready(agents=len(hub.registry.sessions)))
    if not cluster.joined:
        return json_response(NotReady(status="joining"), 503)
    return json_response(Ready(agents=len(hub.registry.sessions), cluster=peer_admin.health(cluster)))


async def metrics(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    hub.metrics.queue_depth.set(hub.registry.scheduler.queue_depth)
    hub.metrics.in_flight.set(hub.requests.in_flight)
    hub.metrics.agents.set(len(hub.registry.sessions))
    hub.metrics.ejected.set(len(hub.registry.scheduler.ejected()))
    body = generate_latest(hub.metrics.registry)
    if hub.cluster is not None:
        body = peer_admin.with_replica_label(body, hub.cluster.replica_id)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
