"""`potluck` — run the hub, run an agent, talk to a hub's user and admin APIs.

This module holds the root group, `potluck hub`, and the `potluck agent` daemon (with `agent scan`);
the user commands live in their own modules and are attached here: `accounts` (`login`, `logout`,
`key ...`, `agent-token ...`, `admin ...`), `groups` (`group ...`), `fleet` (`agent list|share|unshare|
pause|resume|schedule|prices|set-price`), `billing` (`usage`, `earnings`, `balance`, `receipt ...`) and
`tools` (`claude`, `codex`: launch a coding tool against the hub).

Hub and agent code is imported inside the command functions, so `potluck agent` works with the
base install (no database libraries) and `potluck hub` without the hub's extras says what to
install. The exception is the two settings classes: the options of `potluck hub` and `potluck agent`
are generated from their fields (`potluck.cli.options`), and both modules import nothing heavy.
The user commands use `potluck.cli.client`, which needs only the standard library. `receipt verify`
works offline, with the hub's public key.
"""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from potluck._shared import heap
from potluck.agent.settings import AgentSettings
from potluck.cli import accounts, billing, claims, completion, doctor, fleet, groups, tools, tray
from potluck.cli.options import build, settings_options
from potluck.hub.settings import HubSettings

T = TypeVar("T")


def _run(coro_factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine on uvloop when available."""
    _run_result(coro_factory)


def _run_result(coro_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every POSIX platform
        return asyncio.run(coro_factory())
    return uvloop.run(coro_factory())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="potluck", prog_name="potluck")
def cli() -> None:
    """Pool GPUs running local LLM servers behind one OpenAI-compatible endpoint."""


class SetupError(click.ClickException):
    """The command cannot run as installed or configured: a message, no traceback, exit status 2."""

    exit_code = 2


@cli.group(invoke_without_command=True)
@settings_options(HubSettings)
@click.pass_context
def hub(ctx: click.Context, /, **options: object) -> None:
    """Run the hub: the OpenAI-compatible endpoint agents connect to."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = build(HubSettings, options)
        return
    try:
        from potluck.app import load_admin_token, serve
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] == "potluck":
            raise
        raise SetupError(
            f"potluck hub needs the hub's extra dependencies (no module {exc.name!r}): pip install 'potluck[hub]'"
        ) from None
    from potluck._shared.logging import configure_logging

    settings = _hub_settings(options)
    configure_logging(settings.log_level)
    token_hash, new_token = load_admin_token(settings)
    if new_token is not None:
        click.echo(f"admin token (shown once; only its hash is kept): {new_token}")

    listened: list[str] = []

    def listening(url: str) -> None:
        listened.append(url)
        heap.settle()  # started: what startup built stays for good
        click.echo(f"listening {url}")
        sys.stdout.flush()

    from potluck.store.errors import SchemaOutdatedError

    try:
        _run(lambda: serve(settings, token_hash, on_listening=listening))
    except SchemaOutdatedError as exc:
        raise SetupError(str(exc)) from None
    except OSError as exc:
        if listened or exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
            raise
        raise SetupError(f"cannot listen on {settings.host}:{settings.port}: {os.strerror(exc.errno)}") from None


def _hub_settings(options: dict[str, object]) -> HubSettings:
    """The hub's settings from its options, checked: a usage error names a bad one."""
    settings = build(HubSettings, options)
    try:
        settings.validate()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if settings.redis_url is not None and importlib.util.find_spec("redis") is None:
        raise SetupError("a hub replica (--redis-url) needs the cluster's dependencies: pip install 'potluck[cluster]'")
    return settings


@hub.command("migrate")
@click.pass_obj
def hub_migrate(settings: HubSettings) -> None:
    """Migrate the database (--database-url, else the SQLite file in --data-dir) to the newest schema."""
    try:
        from potluck.cli.database import migrate, report
    except ModuleNotFoundError as exc:
        raise SetupError(f"potluck hub migrate needs the hub's extra dependencies (no module {exc.name!r})") from None
    from potluck.store.errors import StoreError

    try:
        before, after = _run_result(lambda: migrate(settings))
    except (StoreError, OSError) as exc:
        raise SetupError(f"cannot migrate the database: {exc}") from None
    report(before, after)


@cli.group(invoke_without_command=True)
@settings_options(AgentSettings)
@click.pass_context
def agent(ctx: click.Context, /, **options: object) -> None:
    """Run an agent next to a GPU: dial out to the hub and serve its requests with local backends.

    Without --name the hub shows the name of the enrolment token the agent enrolled with.
    """
    if ctx.invoked_subcommand in _AGENT_USER_COMMANDS:
        return  # user-API commands: the stored login and their own --hub, none of the daemon's options
    if ctx.invoked_subcommand is not None:
        ctx.obj = build(AgentSettings, {**options, "hub_url": options["hub_url"] or ""})
        return
    if not options["hub_url"]:
        raise click.UsageError("--hub is required to run the agent")
    settings = build(AgentSettings, options)
    try:
        settings.validate()
        settings = settings.with_token_from_file()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    from potluck._shared.logging import configure_logging
    from potluck.agent.daemon import AgentDaemon, FatalAgentError

    configure_logging(settings.log_level)

    async def main() -> None:
        heap.settle()
        await AgentDaemon(settings).run()

    try:
        _run(main)
    except FatalAgentError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


# `potluck agent SUBCOMMAND` that talk to the hub's user API rather than run or probe anything here.
_AGENT_USER_COMMANDS = frozenset(command.name for command in fleet.COMMANDS)


@agent.command("scan")
@click.pass_obj
def agent_scan(settings: AgentSettings) -> None:
    """Probe loopback for LLM servers and print what answers, as a table."""
    from rich.console import Console
    from rich.table import Table

    from potluck.agent.scan import scan_local

    backends = _run_result(lambda: scan_local(settings.scan_ports, settings.backends))
    table = Table(title="Local LLM backends")
    for column in ("URL", "kind", "healthy", "version", "models (hot first)"):
        table.add_column(column)
    for backend in backends:
        models = sorted(backend.models, key=lambda m: (not m.hot, m.id))
        listed = ", ".join(f"{m.id}{' (hot)' if m.hot else ''}" for m in models) or "—"
        table.add_row(backend.url, backend.kind, "yes" if backend.healthy else "no", backend.version or "—", listed)
    Console().print(table)
    if not backends:
        click.echo("nothing found; start a backend or give --backend / --scan-ports")


for command in (*accounts.COMMANDS, *groups.COMMANDS, *billing.COMMANDS, *tools.COMMANDS, *completion.COMMANDS):
    cli.add_command(command)
cli.add_command(doctor.doctor)
cli.add_command(tray.tray)
for command in fleet.COMMANDS:
    agent.add_command(command)
for command in claims.COMMANDS:
    groups.group_cmd.add_command(command)
for command in claims.AGENT_COMMANDS:
    agent.add_command(command)


def main() -> None:
    # One name whatever the launcher (`potluck`, `python -m potluck`): completion asks through _POTLUCK_COMPLETE.
    cli(prog_name="potluck")
