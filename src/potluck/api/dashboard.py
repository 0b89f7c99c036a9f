"""The dashboard's JSON endpoints (``/api/dashboard/...``); bodies in `potluck.api.schemas.dashboard`.

Authenticated as a user (`potluck.api.users.current_user`) and scoped to them (`potluck.hub.observe_stream.Scope`).
Live figures are built from memory (api/dashboard_views.py); daily ones from the rollup table, in a
bounded number of queries whatever the data. The stream is in api/dashboard_stream.py.
"""

from __future__ import annotations

import csv
import io

import msgspec
from aiohttp import web

from potluck.api import dashboard_stream
from potluck.api.billing import credits
from potluck.api.context import HUB
from potluck.api.dashboard_views import machine, model_rows, now_view
from potluck.api.payloads import iso, json_response, query_as
from potluck.api.schemas.dashboard import (
    GroupShares,
    HoldsView,
    MachinesView,
    MemberShare,
    ModelQuery,
    ModelsView,
    OpenHold,
    UsageDay,
    UsageQuery,
    UsageTotals,
    UsageView,
)
from potluck.api.schemas.scheduling import RouteExplanation
from potluck.api.users import current_user
from potluck.hub.errors import InvalidRequestError, PermissionDeniedError
from potluck.hub.observe_stream import Scope
from potluck.hub.observe_usage import DailyModel, Share, User
from potluck.hub.scoring import Want
from potluck.hub.services import HubServices


async def _viewer(request: web.Request) -> tuple[HubServices, Scope]:
    user = await current_user(request)
    hub = request.app[HUB]
    return hub, hub.dashboards.scope(user.id)


async def now(request: web.Request) -> web.Response:
    hub, scope = await _viewer(request)
    return json_response(now_view(hub, scope))


async def models(request: web.Request) -> web.Response:
    hub, scope = await _viewer(request)
    return json_response(ModelsView(generated_at=iso(hub.clock.wall()), models=model_rows(hub, scope)))


async def machines(request: web.Request) -> web.Response:
    """The viewer's agents (every agent for an admin): one query for the enrolled agents' names."""
    hub, scope = await _viewer(request)
    agents = await hub.agents.all()
    if not scope.viewer.admin:
        agents = [a for a in agents if hub.access.agent_owner.get(a.id) == scope.viewer.user_id]
    listed = [machine(hub, a) for a in agents]
    listed.sort(key=lambda m: (m.state == "offline", m.name, m.id))
    return json_response(MachinesView(generated_at=iso(hub.clock.wall()), machines=listed))


def _day(row: DailyModel) -> UsageDay:
    return UsageDay(
        day=row.day,
        model=row.model,
        requests=row.requests,
        not_served=row.not_served,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        spent=credits(row.spent),
        spent_micro=row.spent,
        served=row.served,
        earned=credits(row.earned),
        earned_micro=row.earned,
    )


def _share(user_id: str, username: str, role: str, consumed: Share | None, contributed: Share | None) -> MemberShare:
    used = consumed.amount if consumed is not None else 0
    gave = contributed.amount if contributed is not None else 0
    return MemberShare(
        user_id=user_id,
        username=username,
        role=role,
        consumed_requests=consumed.requests if consumed is not None else 0,
        consumed_tokens=consumed.tokens if consumed is not None else 0,
        consumed=credits(used),
        consumed_micro=used,
        contributed_requests=contributed.requests if contributed is not None else 0,
        contributed_tokens=contributed.tokens if contributed is not None else 0,
        contributed=credits(gave),
        contributed_micro=gave,
    )


async def _series(request: web.Request) -> tuple[HubServices, User, str, str, list[UsageDay]]:
    user = await current_user(request)
    hub = request.app[HUB]
    query = query_as(request, UsageQuery)
    since, until = hub.charts.days(hub.clock.wall().date(), query.days)
    rows = await hub.charts.daily(user, since, until)
    return hub, user, since, until, [_day(r) for r in rows]


async def usage(request: web.Request) -> web.Response:
    """Daily series from the rollups, and the members' shares of the groups the viewer manages: four
    queries at most, whatever the days, models, groups or members."""
    hub, user, since, until, series = await _series(request)
    groups = await hub.charts.shares(user, hub.dashboards.viewer(user.id).admin, since, until)
    spent = sum(d.spent_micro for d in series)
    earned = sum(d.earned_micro for d in series)
    return json_response(
        UsageView(
            since=since,
            until=until,
            series=series,
            totals=UsageTotals(
                requests=sum(d.requests for d in series),
                spent=credits(spent),
                spent_micro=spent,
                served=sum(d.served for d in series),
                earned=credits(earned),
                earned_micro=earned,
            ),
            groups=[
                GroupShares(
                    group_id=g.group_id,
                    name=g.name,
                    members=[
                        _share(uid, name, role, g.consumed.get(uid), g.contributed.get(uid))
                        for uid, name, role in g.members
                    ],
                )
                for g in groups
            ],
        )
    )


async def usage_csv(request: web.Request) -> web.Response:
    _hub, _user, since, until, series = await _series(request)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=UsageDay.__struct_encode_fields__, lineterminator="\n")
    writer.writeheader()
    writer.writerows(msgspec.to_builtins(series))
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="potluck-usage-{since}-{until}.csv"'},
    )


async def holds(request: web.Request) -> web.Response:
    hub, scope = await _viewer(request)
    mine = sorted(hub.accounting.ledger.holds_of(scope.viewer.user_id))
    total = sum(amount for _request_id, amount in mine)
    return json_response(
        HoldsView(
            held=credits(total),
            held_micro=total,
            holds=[OpenHold(request_id=r, amount=credits(a), amount_micro=a) for r, a in mine],
        )
    )


async def explain(request: web.Request) -> web.Response:
    """`GET /admin/route-explain` for an admin's browser session: no group limit."""
    hub, scope = await _viewer(request)
    if not scope.viewer.admin:
        raise PermissionDeniedError("Route-explain is for admins")
    model = query_as(request, ModelQuery).model.strip()
    if not model:
        raise InvalidRequestError("Give the model to explain as `?model=`", param="model")
    explanation = hub.registry.explain(Want((model,))).as_dict()
    return json_response(msgspec.convert({"model": model, "key_id": None, **explanation}, RouteExplanation))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/dashboard/now", now)
    app.router.add_get("/api/dashboard/models", models)
    app.router.add_get("/api/dashboard/machines", machines)
    app.router.add_get("/api/dashboard/usage", usage)
    app.router.add_get("/api/dashboard/usage.csv", usage_csv)
    app.router.add_get("/api/dashboard/holds", holds)
    app.router.add_get("/api/dashboard/explain", explain)
    app.router.add_get("/api/dashboard/stream", dashboard_stream.stream)
