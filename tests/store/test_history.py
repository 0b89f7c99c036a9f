"""One user's requests, newest first, paged by request id: order, ties, and no other user's records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from potluck.store.database import Store
from potluck.store.errors import NotFoundError
from tests.store.test_reports import record

T0 = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)


async def test_newest_first_with_ties_by_request_id_and_only_the_users_records(store: Store) -> None:
    await store.usage.append(
        [
            record(1, T0),
            record(2, T0 + timedelta(seconds=1)),
            # Three in the same instant: ordered by request id, descending.
            record(3, T0 + timedelta(seconds=2)),
            record(5, T0 + timedelta(seconds=2)),
            record(4, T0 + timedelta(seconds=2)),
            record(6, T0 + timedelta(seconds=3), user_id="bob"),
            record(7, T0 - timedelta(days=1), user_id=None),
        ]
    )
    page = await store.history.page("alice", limit=10)
    assert [r.request_id for r in page] == ["req_5", "req_4", "req_3", "req_2", "req_1"]
    assert page[0] == record(5, T0 + timedelta(seconds=2))
    assert [r.request_id for r in await store.history.page("bob", limit=10)] == ["req_6"]
    assert await store.history.page("carol", limit=10) == []


async def test_pages_continue_after_the_cursor_through_ties(store: Store) -> None:
    await store.usage.append([record(n, T0 + timedelta(seconds=n // 3)) for n in range(1, 8)])
    await store.usage.append([record(20 + n, T0 + timedelta(seconds=n), user_id="bob") for n in range(3)])

    seen: list[str] = []
    before = None
    while True:
        page = await store.history.page("alice", limit=2, before=before)
        seen += [r.request_id for r in page]
        if len(page) < 2:
            break
        before = page[-1].request_id
    assert seen == ["req_7", "req_6", "req_5", "req_4", "req_3", "req_2", "req_1"]


async def test_a_cursor_must_be_a_request_of_the_same_user(store: Store) -> None:
    await store.usage.append([record(1, T0), record(2, T0, user_id="bob")])
    with pytest.raises(NotFoundError):
        await store.history.page("alice", limit=5, before="req_2")
    with pytest.raises(NotFoundError):
        await store.history.page("alice", limit=5, before="req_nope")
    assert await store.history.page("alice", limit=5, before="req_1") == []
