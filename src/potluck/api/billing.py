"""Credits, prices, reports and receipts (see hub/accounting.py for the rules).

Amounts are shown in credits (floats) with the exact micro-credit integers beside them
(``*_micro``); reports come as JSON or, with ``?format=csv``, as CSV.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import msgspec
from aiohttp import web

from potluck.api.admin import require_admin
from potluck.api.context import HUB
from potluck.api.payloads import body_as, json_response, query_as
from potluck.api.schemas.billing import (
    AgentPrices,
    AgentPriceTable,
    Balance,
    CreditGrant,
    EarningsReport,
    EarningsRow,
    Grant,
    GroupPrices,
    GroupUsageReport,
    GroupUsageRow,
    HubKey,
    ModelPrice,
    PriceQuote,
    ReportQuery,
    UsageReport,
    UsageRow,
)
from potluck.api.schemas.common import Reply
from potluck.api.users import current_user
from potluck.hub.agents import Price
from potluck.hub.bounds import LAST_DAY
from potluck.hub.errors import InvalidRequestError
from potluck.hub.pricing import MICRO
from potluck.hub.receipts import signed_document


def credits(micro: int) -> float:
    return micro / MICRO


async def grant_credits(request: web.Request) -> web.Response:
    hub = await require_admin(request)
    body = await body_as(request, Grant)
    txn = await hub.credits.grant(body.user_id, body.amount, body.reason)
    balance = (await hub.credits.balance(body.user_id)).free
    return json_response(
        CreditGrant(txn_id=txn, user_id=body.user_id, balance=credits(balance), balance_micro=balance), status=201
    )


async def balance(request: web.Request) -> web.Response:
    user = await current_user(request)
    mine = await request.app[HUB].credits.balance(user.id)
    free, held = mine.free, mine.held
    return json_response(Balance(balance=credits(free), held=credits(held), balance_micro=free, held_micro=held))


async def put_prices(request: web.Request) -> web.Response:
    user = await current_user(request)
    body = await body_as(request, AgentPriceTable, param="prices")
    prices = {m: Price(p.input_per_mtok, p.output_per_mtok) for m, p in body.items()}
    saved = await request.app[HUB].agents.set_prices(user, request.match_info["agent_id"], prices)
    return json_response(AgentPrices(agent_id=request.match_info["agent_id"], prices=_prices_view(saved)))


async def get_prices(request: web.Request) -> web.Response:
    user = await current_user(request)
    agent_id = request.match_info["agent_id"]
    return json_response(
        AgentPrices(agent_id=agent_id, prices=_prices_view(request.app[HUB].agents.prices_of(user, agent_id)))
    )


def _prices_view(prices: dict[str, Price]) -> AgentPriceTable:
    return {
        m: ModelPrice(input_per_mtok=p.input_per_mtok, output_per_mtok=p.output_per_mtok) for m, p in prices.items()
    }


async def group_prices(request: web.Request) -> web.Response:
    """What each model costs in this group now: per agent, with the dynamic multiplier and its reason."""
    user = await current_user(request)
    hub = request.app[HUB]
    group_id = request.match_info["group_id"]
    await hub.groups.require_role(user, group_id)
    accounting = hub.accounting
    rows = []
    for agent_id, slots in accounting.agents_in(group_id):
        for model in sorted(slots.models):
            quote = accounting.quote(group_id, agent_id, model)
            rows.append(
                PriceQuote(
                    model=model,
                    agent_id=agent_id,
                    input_per_mtok=quote.price.input_per_mtok,
                    output_per_mtok=quote.price.output_per_mtok,
                    multiplier=quote.multiplier,
                    reason=quote.reason,
                )
            )
    return json_response(GroupPrices(group_id=group_id, billing=accounting.mode(group_id), data=rows))


def _day(text: str | None, name: str, *, end: bool = False) -> datetime | None:
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidRequestError(f"`{name}` must be a date like 2026-11-22", param=name) from None
    if day.date() > LAST_DAY:
        raise InvalidRequestError(f"`{name}` must be on or before {LAST_DAY.isoformat()}", param=name)
    return day + timedelta(days=1) if end else datetime.combine(day.date(), time(), UTC)


Report = UsageReport | EarningsReport | GroupUsageReport


def _report(query: ReportQuery, rows: Sequence[Any], kind: type[Report], row: type[Reply], name: str) -> web.Response:
    """Rows as ``{"data": [...]}`` JSON, or as CSV with ``?format=csv``; money in credits and micro-credits."""
    report = msgspec.convert(
        {"data": [_money(asdict(r)) for r in rows if is_dataclass(r) and not isinstance(r, type)]}, kind
    )
    if query.format == "json":
        return json_response(report)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=row.__struct_encode_fields__, lineterminator="\n")
    writer.writeheader()
    writer.writerows(msgspec.to_builtins(report.data))
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="potluck-{name}.csv"'},
    )


def _money(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("spend", "earned"):
        if key in row:
            row[f"{key}_micro"] = row[key]
            row[key] = credits(row[key])
    return row


async def usage_report(request: web.Request) -> web.Response:
    """Your requests per day, key and model: tokens and spend."""
    user = await current_user(request)
    query = query_as(request, ReportQuery)
    rows = await request.app[HUB].reports.usage(user, _day(query.since, "since"), _day(query.until, "until", end=True))
    return _report(query, rows, UsageReport, UsageRow, "usage")


async def earnings_report(request: web.Request) -> web.Response:
    """Your agents' earnings per day, agent and model."""
    user = await current_user(request)
    query = query_as(request, ReportQuery)
    rows = await request.app[HUB].reports.earnings(
        user, _day(query.since, "since"), _day(query.until, "until", end=True)
    )
    return _report(query, rows, EarningsReport, EarningsRow, "earnings")


async def group_usage(request: web.Request) -> web.Response:
    """The group's totals per day, member and model (owner, admin)."""
    user = await current_user(request)
    group_id = request.match_info["group_id"]
    query = query_as(request, ReportQuery)
    since, until = _day(query.since, "since"), _day(query.until, "until", end=True)
    rows = await request.app[HUB].reports.group_totals(user, group_id, since, until)
    return _report(query, rows, GroupUsageReport, GroupUsageRow, f"group-{group_id}")


async def receipt(request: web.Request) -> web.Response:
    """The signed receipt of a settled request, for its consumer and the serving agent's owner."""
    user = await current_user(request)
    stored = await request.app[HUB].reports.receipt(user, request.match_info["request_id"])
    return web.Response(
        body=signed_document(stored.payload.encode(), stored.signature), content_type="application/json"
    )


async def hub_key(request: web.Request) -> web.Response:
    return json_response(msgspec.convert(request.app[HUB].accounting.signer.public_key_document(), HubKey))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/admin/credits", grant_credits)
    app.router.add_get("/api/balance", balance)
    app.router.add_get("/api/agents/{agent_id}/prices", get_prices)
    app.router.add_put("/api/agents/{agent_id}/prices", put_prices)
    app.router.add_get("/api/groups/{group_id}/prices", group_prices)
    app.router.add_get("/api/groups/{group_id}/usage", group_usage)
    app.router.add_get("/api/usage", usage_report)
    app.router.add_get("/api/earnings", earnings_report)
    app.router.add_get("/api/receipts/{request_id}", receipt)
    app.router.add_get("/.well-known/potluck-hub-key", hub_key)
