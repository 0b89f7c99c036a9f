"""The hub on PostgreSQL (real processes, a real server): `potluck hub migrate`, the refusal to start on an
older schema, and the accounting scenarios of the SQLite suite, with the ledger audited afterwards."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from potluck.store.database import Store
from potluck.store.engine import head_revision
from testing.postgres import PostgresServer
from tests.e2e.test_accounting import (
    test_twenty_concurrent_requests_against_a_balance_for_one_admit_exactly_one as twenty_against_one,
)
from tests.e2e.test_billing_mix import test_usage_earnings_ledger_and_receipts_agree_on_a_mix_of_outcomes as mix

pytestmark = pytest.mark.slow


def _potluck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "potluck", *args], capture_output=True, text=True, timeout=60, check=False
    )


def _problems(url: str) -> list[str]:
    async def audit() -> list[str]:
        store = await Store.open(url)
        try:
            return await store.audit.problems(allow_open_holds=False)
        finally:
            await store.close()

    return asyncio.run(audit())


def test_a_hub_refuses_an_unmigrated_database_and_hub_migrate_migrates_it_once(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.create_database().replace("postgresql+asyncpg://", "postgresql://")

    refused = _potluck("hub", "--port", "0", "--data-dir", str(tmp_path), "--database-url", url)
    assert refused.returncode == 2, refused.stderr
    assert "empty database" in refused.stderr
    assert "run `potluck hub migrate`" in refused.stderr

    first = _potluck("hub", "--database-url", url, "migrate")
    again = _potluck("hub", "--database-url", url, "migrate")
    assert (first.returncode, first.stdout.strip()) == (
        0,
        f"database schema migrated from revision none to {head_revision()}",
    )
    assert (again.returncode, again.stdout.strip()) == (0, f"database schema already at revision {head_revision()}")
    # The hubs of the tests below start on databases migrated this way.


def test_usage_earnings_ledger_and_receipts_agree_on_postgresql(hub_factory: Any, postgres_url: str) -> None:
    mix(lambda *args: hub_factory("--database-url", postgres_url, *args))
    assert _problems(postgres_url) == []


def test_twenty_concurrent_requests_for_one_balance_admit_one_on_postgresql(
    hub_factory: Any, postgres_url: str
) -> None:
    twenty_against_one(lambda *args: hub_factory("--database-url", postgres_url, *args))
    assert _problems(postgres_url) == []
