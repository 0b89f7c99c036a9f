"""The hub on PostgreSQL (real processes, a real server): `potluck hub migrate`, the refusal to start on an
older schema, and the billing mix of the SQLite suite, with the ledger audited afterwards (three replicas
racing for one balance: test_postgres_replicas.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from potluck.cli.main import cli
from potluck.store.database import Store
from potluck.store.engine import head_revision
from testing.postgres import PostgresServer
from tests.e2e.test_billing_mix import test_usage_earnings_ledger_and_receipts_agree_on_a_mix_of_outcomes as mix

pytestmark = pytest.mark.slow


def _potluck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "potluck", *args], capture_output=True, text=True, timeout=60, check=False
    )


def ledger_problems(url: str) -> list[str]:
    """What `store.audit` finds wrong with the ledger at ``url``, open holds included (none may be left)."""

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
    head = head_revision()

    refused = _potluck("hub", "--port", "0", "--data-dir", str(tmp_path), "--database-url", url)
    assert refused.returncode == 2, refused.stderr
    assert "empty database" in refused.stderr
    assert "run `potluck hub migrate`" in refused.stderr

    # In process (the command is the same function; a process start here costs seconds on this box).
    runner = CliRunner()
    first = runner.invoke(cli, ["hub", "--database-url", url, "migrate"])
    again = runner.invoke(cli, ["hub", "--database-url", url, "migrate"])
    assert (first.exit_code, first.output.strip()) == (0, f"database schema migrated from revision none to {head}")
    assert (again.exit_code, again.output.strip()) == (0, f"database schema already at revision {head}")
    # The hubs below start on clones of a template that the same upgrade (store.engine) migrated.


def test_usage_earnings_ledger_and_receipts_agree_on_postgresql(hub_factory: Any, postgres_url: str) -> None:
    mix(lambda *args: hub_factory("--database-url", postgres_url, *args))
    assert ledger_problems(postgres_url) == []
