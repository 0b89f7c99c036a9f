"""`potluck hub migrate`: bring the configured database's schema to the newest revision (Alembic).

The hub migrates a SQLite file itself on start. A PostgreSQL database is shared by hub replicas, so a
replica never migrates it: it refuses to start on an older schema and says to run this command, once,
before starting replicas of a new version. Running it again is harmless.
"""

from __future__ import annotations

import click

from potluck.hub.settings import HubSettings


async def migrate(settings: HubSettings) -> tuple[str | None, str]:
    """Upgrade the settings' database to the newest migration; (revision before, revision now)."""
    from potluck.store.engine import migrate_database

    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return await migrate_database(settings.resolved_database_url)


def report(before: str | None, after: str) -> None:
    if before == after:
        click.echo(f"database schema already at revision {after}")
    else:
        click.echo(f"database schema migrated from revision {before or 'none'} to {after}")
