"""The store on a real SQLite file: migrations, keys, agents and enrolment tokens, usage records."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from potluck.store.agents import NAME_MAX
from potluck.store.database import Store
from potluck.store.engine import MIGRATIONS_DIR, sqlite_url
from potluck.store.errors import ConflictError, NotFoundError, StoreError
from potluck.store.usage import UsageRecord


def database_bytes(db_path: Path) -> bytes:
    """Everything SQLite wrote for this database: the main file, and the WAL and shared memory if present."""
    return b"".join(p.read_bytes() for p in sorted(db_path.parent.glob(db_path.name + "*")))


def is_utc(when: datetime | None) -> bool:
    return when is not None and when.tzinfo is not None and when.utcoffset() == timedelta(0)


def usage(request_id: str, created_at: datetime, **overrides: object) -> UsageRecord:
    fields: dict[str, object] = {
        "request_id": request_id,
        "key_id": "key_1",
        "agent_id": "agt_1",
        "model": "m",
        "path": "/v1/chat/completions",
        "outcome": "ok",
        "status": 200,
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "queue_ms": 0,
        "ttft_ms": 12,
        "total_ms": 34,
        "created_at": created_at,
    }
    fields.update(overrides)
    return UsageRecord(**fields)  # type: ignore[arg-type]


# -- schema -------------------------------------------------------------------------------------


async def test_open_runs_migrations_on_a_new_file(db_path: Path) -> None:
    store = await Store.open(sqlite_url(db_path))
    assert await store.ping()
    await store.close()

    with sqlite3.connect(db_path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert {"api_keys", "agents", "agent_tokens", "usage_records", "alembic_version"} <= tables
    assert version == [(ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head(),)]
    assert journal == "wal"


async def test_reopening_is_idempotent_and_keeps_data(db_path: Path) -> None:
    store = await Store.open(sqlite_url(db_path))
    created = await store.keys.create("kept")
    await store.close()

    for _ in range(2):
        store = await Store.open(sqlite_url(db_path))
        keys = await store.keys.list()
        await store.close()
        assert [k.id for k in keys] == [created.key.id]


async def test_open_translates_database_failures_to_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        await Store.open(sqlite_url(tmp_path / "missing-dir" / "potluck.db"))
    # aiosqlite (0.22) does not await its worker thread's stop after a failed connect; the thread
    # then posts to this test's loop, which must still be open. Wait for it (it is already stopping).
    for thread in threading.enumerate():
        if "_connection_worker_thread" in thread.name:
            thread.join(timeout=2)


# -- API keys -------------------------------------------------------------------------------------


async def test_create_key_returns_the_secret_once_and_stores_only_its_hash(store: Store) -> None:
    created = await store.keys.create("laptop")

    assert created.secret.startswith("pk-")
    assert len(created.secret) >= 40
    assert created.key.name == "laptop"
    assert created.key.prefix == created.secret[:10]
    assert created.key.secret_hash == hashlib.sha256(created.secret.encode()).hexdigest()
    assert created.key.revoked_at is None
    assert is_utc(created.key.created_at)
    (listed,) = await store.keys.list()
    assert listed == created.key
    assert not hasattr(listed, "secret")


async def test_key_secret_never_reaches_the_database_file(sqlite_store: Store, db_path: Path) -> None:
    created = await sqlite_store.keys.create("laptop")
    await sqlite_store.keys.list()

    raw = database_bytes(db_path)

    assert created.key.secret_hash.encode() in raw  # the scan does see what was written
    assert created.secret.encode() not in raw
    assert created.secret[10:].encode() not in raw  # not even the part after the display prefix


async def test_keys_are_listed_oldest_first(store: Store) -> None:
    ids = [(await store.keys.create(f"k{i}")).key.id for i in range(3)]
    assert [k.id for k in await store.keys.list()] == ids


async def test_revoke_marks_the_key_and_hides_it_from_live_keys(store: Store) -> None:
    keep = await store.keys.create("keep")
    drop = await store.keys.create("drop")

    revoked = await store.keys.revoke(drop.key.id)

    assert revoked.id == drop.key.id
    assert is_utc(revoked.revoked_at)
    assert [k.id for k in await store.keys.list(include_revoked=False)] == [keep.key.id]
    assert [k.id for k in await store.keys.list()] == [keep.key.id, drop.key.id]


async def test_revoking_twice_keeps_the_first_revocation_time(store: Store) -> None:
    created = await store.keys.create("k")
    first = await store.keys.revoke(created.key.id)
    second = await store.keys.revoke(created.key.id)
    assert second.revoked_at == first.revoked_at


async def test_revoking_an_unknown_key_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError):
        await store.keys.revoke("key_nope")


# -- agents and enrolment tokens --------------------------------------------------------------------


async def test_enrolment_token_is_stored_only_as_a_hash(sqlite_store: Store, db_path: Path) -> None:
    token = await sqlite_store.agents.create_token("gpu-1")
    assert token.token.startswith("pat-")
    assert is_utc(token.created_at)
    raw = database_bytes(db_path)
    assert token.id.encode() in raw
    assert token.token.encode() not in raw
    assert token.token[4:].encode() not in raw


async def test_enrol_creates_an_agent_for_the_key(store: Store) -> None:
    token = await store.agents.create_token("gpu-1")

    agent = await store.agents.enrol(token.token, b"K" * 32, "box")

    assert agent.public_key == b"K" * 32
    assert agent.name == "box"
    assert is_utc(agent.created_at)
    found = await store.agents.by_public_key(b"K" * 32)
    assert found is not None
    assert found.id == agent.id
    assert is_utc(found.created_at)
    assert is_utc(found.last_seen_at)
    assert [a.id for a in await store.agents.list()] == [agent.id]
    assert await store.agents.by_public_key(b"X" * 32) is None


async def test_an_agent_that_sends_no_name_is_named_after_its_enrolment_token(store: Store) -> None:
    token = await store.agents.create_token("gpu-box-in-the-attic")

    agent = await store.agents.enrol(token.token, b"K" * 32, "")

    assert agent.name == "gpu-box-in-the-attic"
    assert [a.name for a in await store.agents.list()] == ["gpu-box-in-the-attic"]


async def test_rename_keeps_the_name_an_agent_chose_and_cuts_it_to_the_column(store: Store) -> None:
    token = await store.agents.create_token("from-the-token")
    agent = await store.agents.enrol(token.token, b"K" * 32, "x" * 500)
    assert agent.name == "x" * NAME_MAX  # an agent chooses its own name: never longer than the column

    assert await store.agents.rename(agent.id, "chosen")
    assert await store.agents.rename("agt_nobody", "ghost") is False

    assert [(a.id, a.name) for a in await store.agents.list()] == [(agent.id, "chosen")]


async def test_concurrent_enrolments_with_one_token_have_exactly_one_winner(store: Store) -> None:
    token = await store.agents.create_token("race")

    results = await asyncio.gather(
        *(store.agents.enrol(token.token, bytes([i]) * 32, f"agent-{i}") for i in range(20)),
        return_exceptions=True,
    )

    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1, results
    assert all(isinstance(e, ConflictError) for e in losers), losers
    assert [a.id for a in await store.agents.list()] == [winners[0].id]


async def test_used_token_cannot_enrol_again(store: Store) -> None:
    token = await store.agents.create_token("once")
    await store.agents.enrol(token.token, b"A" * 32, "a")
    with pytest.raises(ConflictError):
        await store.agents.enrol(token.token, b"B" * 32, "b")


async def test_unknown_token_cannot_enrol(store: Store) -> None:
    with pytest.raises(ConflictError):
        await store.agents.enrol("pat-made-up", b"A" * 32, "a")
    assert await store.agents.list() == []


async def test_same_public_key_cannot_enrol_twice_and_the_second_token_is_not_spent(store: Store) -> None:
    first = await store.agents.create_token("first")
    second = await store.agents.create_token("second")
    await store.agents.enrol(first.token, b"K" * 32, "a")

    with pytest.raises(ConflictError):
        await store.agents.enrol(second.token, b"K" * 32, "a-again")

    other = await store.agents.enrol(second.token, b"L" * 32, "b")  # the failed attempt rolled back
    assert {a.id for a in await store.agents.list()} == {
        (await store.agents.by_public_key(b"K" * 32)).id,  # type: ignore[union-attr]
        other.id,
    }


async def test_touch_records_last_seen_times(store: Store) -> None:
    token = await store.agents.create_token("t")
    agent = await store.agents.enrol(token.token, b"K" * 32, "a")
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    await store.agents.touch({agent.id: when})
    await store.agents.touch({})
    found = await store.agents.by_public_key(b"K" * 32)
    assert found is not None
    assert found.last_seen_at == when


# -- usage ----------------------------------------------------------------------------------------


async def test_usage_records_come_back_newest_first(store: Store) -> None:
    base = datetime(2030, 1, 1, tzinfo=UTC)
    records = [usage(f"req_{i}", base + timedelta(seconds=i)) for i in range(5)]
    await store.usage.append(records[:2])
    await store.usage.append(records[2:])
    await store.usage.append([])

    recent = await store.usage.recent()

    assert recent == list(reversed(records))
    assert [r.request_id for r in await store.usage.recent(limit=2)] == ["req_4", "req_3"]
    assert all(is_utc(r.created_at) for r in recent)


async def test_usage_keeps_nullable_fields(store: Store) -> None:
    record = usage("req_x", datetime.now(UTC), key_id=None, agent_id=None, ttft_ms=None, outcome="overloaded")
    await store.usage.append([record])
    assert await store.usage.recent() == [record]


async def test_aware_datetimes_in_other_zones_come_back_as_the_same_instant_in_utc(store: Store) -> None:
    east = timezone(timedelta(hours=2))
    await store.usage.append([usage("req_tz", datetime(2030, 1, 1, 14, 0, tzinfo=east))])
    (back,) = await store.usage.recent()
    assert back.created_at == datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert back.created_at.tzinfo == UTC


async def test_admin_drain_flag_is_kept_across_reopen(db_path: Path) -> None:
    store = await Store.open(sqlite_url(db_path))
    token = await store.agents.create_token("t")
    agent = await store.agents.enrol(token.token, b"\x07" * 32, "gpu")
    assert agent.drained is False
    assert await store.agents.set_drained(agent.id, True) is True
    assert await store.agents.set_drained("agt_missing", True) is False
    await store.close()

    reopened = await Store.open(sqlite_url(db_path))
    try:
        assert [a.drained for a in await reopened.agents.list()] == [True]
    finally:
        await reopened.close()
