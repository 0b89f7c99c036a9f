"""Usage records: one per client request, appended in batches (no write per request on the hot path)."""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from potluck.store import rollups
from potluck.store.engine import uncut_write
from potluck.store.tables import ROLLUP_DIMENSIONS, api_keys, ledger_txns, receipts, usage_records


class UsageRecord(msgspec.Struct, frozen=True, gc=False):
    """One request as the usage journal keeps it (a struct: built once per request, on the hot path)."""

    request_id: str
    key_id: str | None
    agent_id: str | None
    model: str
    path: str
    outcome: str
    """``ok``, ``client_cancelled``, ``agent_failed``, ``upstream_error``, ``timeout``, ``overloaded``..."""
    status: int
    prompt_tokens: int
    completion_tokens: int
    queue_ms: int
    ttft_ms: int | None
    total_ms: int
    created_at: datetime
    user_id: str | None = None
    """The consumer: the key's user."""
    group_id: str | None = None
    """The group the request was served through and billed in."""
    owner_id: str | None = None
    """The serving agent's owner."""
    tokens_estimated: bool = False
    """The backend reported no usage, so the hub estimated the tokens."""
    flagged: bool = False
    """The agent's reported counts were implausible (the hub's estimate was billed instead)."""
    charged: int = 0
    """What the consumer paid, in micro-credits (0 in a mutual group)."""
    earned: int = 0
    """What the agent's owner earned, in micro-credits."""
    cache_read_tokens: int = 0
    """The part of ``prompt_tokens`` the backend read from its prompt cache (when it said)."""
    cache_write_tokens: int = 0
    """The part of ``prompt_tokens`` the backend wrote to its prompt cache (when it said)."""
    reasoning_tokens: int = 0
    """The part of ``completion_tokens`` spent reasoning (when the backend said)."""


_FIELDS: tuple[str, ...] = UsageRecord.__struct_fields__
_VALUES = operator.attrgetter(*_FIELDS)


@functools.cache
def _insert_plan(dialect: Dialect) -> tuple[str, tuple[tuple[int, Callable[[Any], Any]], ...]]:
    """The usage insert in this database's own SQL, and the conversions its values need (by position).

    Every served request writes a record, so the batch goes to the driver's executemany as plain tuples:
    SQLAlchemy's per-row parameter processing cost more than the insert itself. The SQL and the
    conversions (timestamps, booleans) are still SQLAlchemy's, compiled once from the table."""
    compiled = insert(usage_records).compile(dialect=dialect)
    order = tuple(compiled.positiontup or ())
    if order != _FIELDS:
        raise RuntimeError(f"{dialect.name} binds the usage insert as {order}, not in the record's field order")
    # The processors SQLAlchemy runs itself for this statement (the dialect's, e.g. SQLite's timestamp text).
    processors = compiled._bind_processors  # SQLAlchemy keeps them per compiled statement only
    converters: list[tuple[int, Callable[[Any], Any]]] = []
    for i, name in enumerate(order):
        convert = processors.get(name)
        if convert is not None:
            if not callable(convert):
                raise RuntimeError(f"{dialect.name} binds usage_records.{name} as a tuple type")
            converters.append((i, convert))
    return compiled.string, tuple(converters)


def _converted(values: tuple[Any, ...], converters: tuple[tuple[int, Callable[[Any], Any]], ...]) -> tuple[Any, ...]:
    row = list(values)
    for i, convert in converters:
        row[i] = convert(row[i])
    return tuple(row)


_IN_CHUNK = 500
"""Request ids per ``IN (...)`` query (SQLite allows 32,766 parameters, asyncpg 32,767)."""
_ROLLED = ("request_id", "created_at", "model", *ROLLUP_DIMENSIONS, "charged", "earned")
"""What a record's rollup row is found by, and what zeroing its charge takes out of it."""


class UsageRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def append(self, records: list[UsageRecord]) -> None:
        """Write a batch in one transaction (group commit). Records already stored (by request id) are skipped, so
        a batch may be sent again after a failure that left it unclear whether it went in."""
        if not records:
            return
        try:
            await self._insert(records)
        except IntegrityError:
            # A batch whose commit went in but whose answer was lost (a connection cut by a database restart) meets
            # its own rows when the journal sends it again: without this, it would fail, and block every later
            # batch behind it, forever.
            stored = await self._stored([r.request_id for r in records])
            if not stored:
                raise
            await self._insert([r for r in records if r.request_id not in stored])

    @uncut_write
    async def _insert(self, records: list[UsageRecord]) -> None:
        if not records:
            return
        # Built by hand: dataclasses.asdict deep-copies every field and cost more than the insert.
        values = _VALUES
        tuples = [values(r) for r in records]
        rows = [dict(zip(_FIELDS, t, strict=True)) for t in tuples]
        async with self._engine.begin() as conn:
            sql, converters = _insert_plan(conn.dialect)
            if converters:
                tuples = [_converted(t, converters) for t in tuples]
            await conn.exec_driver_sql(sql, tuples)
            await rollups.add_batch(conn, rows)
            await _mark_keys_used(conn, records)

    async def _stored(self, request_ids: list[str]) -> set[str]:
        found: set[str] = set()
        async with self._engine.connect() as conn:
            for start in range(0, len(request_ids), _IN_CHUNK):
                chunk = request_ids[start : start + _IN_CHUNK]
                query = select(usage_records.c.request_id).where(usage_records.c.request_id.in_(chunk))
                found.update(str(rid) for rid in (await conn.execute(query)).scalars())
        return found

    async def recent(self, limit: int = 100) -> list[UsageRecord]:
        query = select(*(usage_records.c[name] for name in _FIELDS)).order_by(usage_records.c.created_at.desc())
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).mappings().all()
        return [UsageRecord(**row) for row in rows]

    @uncut_write
    async def reconcile_with_receipts(self, replica_id: str | None = None) -> tuple[int, int]:
        """After a crash, make usage records agree with the ledger, whose receipts are written with settlements.

        Usage records and ledger batches are committed separately, so a crash can leave either one
        ahead. A record that says it was charged but whose settlement never reached the database is
        set back to zero (its hold was released on recovery or by the sweeper); a receipt without a
        record gets one rebuilt from the receipt, so no settled usage goes missing from reports. With
        ``replica_id``, only the requests whose holds that (dead) replica placed are looked at: the
        other replicas' records and receipts may be in flight. The rollups change by exactly what the
        records did. Returns (zeroed, rebuilt).
        """
        r = usage_records.c
        unsettled = select(*(r[name] for name in _ROLLED)).where(
            r.charged > 0, ~r.request_id.in_(select(receipts.c.request_id))
        )
        orphans = select(receipts.c.payload, receipts.c.created_at).where(
            ~receipts.c.request_id.in_(select(r.request_id))
        )
        if replica_id is not None:
            held_there = select(ledger_txns.c.request_id).where(
                ledger_txns.c.kind == "hold", ledger_txns.c.replica_id == replica_id
            )
            unsettled = unsettled.where(r.request_id.in_(held_there))
            orphans = orphans.where(receipts.c.request_id.in_(held_there))
        async with self._engine.begin() as conn:
            zeroed = [dict(row) for row in (await conn.execute(unsettled)).mappings()]
            if zeroed:
                await conn.execute(
                    update(usage_records)
                    .where(r.request_id.in_([row["request_id"] for row in zeroed]))
                    .values(charged=0, earned=0)
                )
                await rollups.add_batch(conn, [rollups.uncharged(row) for row in zeroed], count_requests=False)
            rows = [
                _record_from_receipt(json.loads(payload), created_at)
                for payload, created_at in (await conn.execute(orphans)).all()
            ]
            if rows:
                await conn.execute(insert(usage_records), rows)
                await rollups.add_batch(conn, rows)
        return len(zeroed), len(rows)


async def _mark_keys_used(conn: AsyncConnection, records: list[UsageRecord]) -> None:
    """Each key's ``last_used_at``: one UPDATE per key in the batch, never moved back in time."""
    last: dict[str, datetime] = {}
    for r in records:
        if r.key_id is not None and (r.key_id not in last or last[r.key_id] < r.created_at):
            last[r.key_id] = r.created_at
    if not last:
        return
    await conn.execute(_MARK_USED, [{"key": key, "at": at} for key, at in last.items()])


_MARK_USED = (
    update(api_keys)
    .where(api_keys.c.id == bindparam("key"))
    .where(or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < bindparam("at")))
    .values(last_used_at=bindparam("at"))
)


def _record_from_receipt(receipt: dict[str, object], created_at: datetime) -> dict[str, object]:
    return {
        "request_id": receipt["request_id"],
        "key_id": receipt.get("key_id") or None,
        "agent_id": receipt.get("agent_id"),
        "model": receipt["model"],
        "path": "",
        "outcome": receipt.get("outcome", "ok"),
        "status": 200,
        "prompt_tokens": receipt["prompt_tokens"],
        "completion_tokens": receipt["completion_tokens"],
        "queue_ms": 0,
        "ttft_ms": None,
        "total_ms": 0,
        "created_at": created_at,
        "user_id": receipt.get("consumer_id"),
        "group_id": receipt.get("group_id"),
        "owner_id": receipt.get("owner_id"),
        "tokens_estimated": bool(receipt.get("tokens_estimated", False)),
        "flagged": False,
        "charged": receipt["charged"],
        "earned": receipt["earned"],
    }
