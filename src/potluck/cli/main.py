"""`potluck` — run the hub, run an agent, talk to a hub's user and admin APIs.

This module holds the root group, `potluck hub`, and the `potluck agent` daemon (with `agent scan`);
the user commands live in their own modules and are attached here: `accounts` (`login`, `logout`,
`key ...`, `agent-token ...`, `admin ...`), `groups` (`group ...`), `fleet` (`agent list|share|unshare|
pause|resume|schedule|prices|set-price`) and `billing` (`usage`, `earnings`, `balance`, `receipt ...`).

Hub and agent code is imported inside the command functions, so `potluck agent` works with the
base install (no database libraries). The user commands use `potluck.cli.client`, which needs only
the standard library. `receipt verify` works offline, with the hub's public key.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from potluck import __version__
from potluck.cli import accounts, billing, fleet, groups

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
@click.version_option(__version__, prog_name="potluck")
def cli() -> None:
    """Pool GPUs running local LLM servers behind one OpenAI-compatible endpoint."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="POTLUCK_HUB_HOST", help="Address to bind.")
@click.option("--port", default=8642, show_default=True, envvar="POTLUCK_HUB_PORT", help="Port (0: any free port).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="POTLUCK_HUB_DATA_DIR",
    help="Where the SQLite database and the admin token hash live [default: $XDG_DATA_HOME/potluck/hub].",
)
@click.option("--database-url", envvar="POTLUCK_HUB_DATABASE_URL", help="SQLAlchemy URL instead of the SQLite file.")
@click.option("--admin-token", envvar="POTLUCK_ADMIN_TOKEN", help="Admin token (else generated on first start).")
@click.option("--max-queue", default=256, show_default=True, envvar="POTLUCK_HUB_MAX_QUEUE", help="Waiting requests.")
@click.option(
    "--queue-timeout", default=30.0, show_default=True, envvar="POTLUCK_HUB_QUEUE_TIMEOUT", help="Max queue wait (s)."
)
@click.option("--max-body-bytes", default=32 * 1024 * 1024, show_default=True, envvar="POTLUCK_HUB_MAX_BODY_BYTES")
@click.option("--heartbeat-interval", default=5.0, show_default=True, envvar="POTLUCK_HUB_HEARTBEAT_INTERVAL")
@click.option("--heartbeat-timeout", default=15.0, show_default=True, envvar="POTLUCK_HUB_HEARTBEAT_TIMEOUT")
@click.option(
    "--first-byte-timeout",
    default=600.0,
    show_default=True,
    envvar="POTLUCK_HUB_FIRST_BYTE_TIMEOUT",
    help="Seconds to wait for an agent's first response byte.",
)
@click.option(
    "--idle-timeout",
    default=300.0,
    show_default=True,
    envvar="POTLUCK_HUB_IDLE_TIMEOUT",
    help="Seconds a response may stall between bytes.",
)
@click.option("--max-attempts", default=3, show_default=True, envvar="POTLUCK_HUB_MAX_ATTEMPTS")
@click.option(
    "--scheduler-policy",
    type=click.Choice(["potluck", "least_loaded", "round_robin"]),
    default="potluck",
    show_default=True,
    envvar="POTLUCK_HUB_SCHEDULER_POLICY",
    help="How agents are picked (the others exist to compare against).",
)
@click.option(
    "--score-weight",
    "score_weights",
    multiple=True,
    envvar="POTLUCK_HUB_SCORE_WEIGHTS",
    help="NAME=VALUE over the default score weights (hot, alias, owner, cold, load, latency, reliability, gpu).",
)
@click.option(
    "--queue-user-share",
    default=0.5,
    show_default=True,
    envvar="POTLUCK_HUB_QUEUE_USER_SHARE",
    help="Largest share of the wait queue one user may hold.",
)
@click.option("--eject-failures", default=5, show_default=True, envvar="POTLUCK_HUB_EJECT_FAILURES")
@click.option("--eject-base-s", default=30.0, show_default=True, envvar="POTLUCK_HUB_EJECT_BASE_S")
@click.option("--eject-max-percent", default=50.0, show_default=True, envvar="POTLUCK_HUB_EJECT_MAX_PERCENT")
@click.option("--retry-budget-percent", default=20.0, show_default=True, envvar="POTLUCK_HUB_RETRY_BUDGET_PERCENT")
@click.option(
    "--platform-fee-percent",
    default=0.0,
    show_default=True,
    envvar="POTLUCK_HUB_PLATFORM_FEE_PERCENT",
    help="Share of each credits charge the platform keeps.",
)
@click.option(
    "--signing-key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="POTLUCK_HUB_SIGNING_KEY_FILE",
    help="Ed25519 key signing receipts [default: <data-dir>/hub-signing-key].",
)
@click.option("--reprice-interval", default=10.0, show_default=True, envvar="POTLUCK_HUB_REPRICE_INTERVAL")
@click.option("--shutdown-timeout", default=30.0, show_default=True, envvar="POTLUCK_HUB_SHUTDOWN_TIMEOUT")
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    envvar="POTLUCK_HUB_HEADER_TIMEOUT",
    help="Seconds a client has to send a request's headers.",
)
@click.option(
    "--body-timeout",
    default=30.0,
    show_default=True,
    envvar="POTLUCK_HUB_BODY_TIMEOUT",
    help="Seconds a request body may go without a byte.",
)
@click.option(
    "--max-pending-connections-per-ip",
    default=64,
    show_default=True,
    envvar="POTLUCK_HUB_MAX_PENDING_CONNECTIONS_PER_IP",
    help="Slow connections one address may hold before it gets no more (0: no cap).",
)
@click.option(
    "--keepalive-timeout",
    default=75.0,
    show_default=True,
    envvar="POTLUCK_HUB_KEEPALIVE_TIMEOUT",
    help="Seconds an idle keep-alive connection stays open.",
)
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False), envvar="POTLUCK_HUB_TLS_CERT")
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False), envvar="POTLUCK_HUB_TLS_KEY")
@click.option(
    "--allow-insecure-http",
    is_flag=True,
    envvar="POTLUCK_HUB_ALLOW_INSECURE_HTTP",
    help="Serve plain HTTP off loopback (only behind a TLS-terminating proxy).",
)
@click.option("--log-level", default="info", show_default=True, envvar="POTLUCK_HUB_LOG_LEVEL")
def hub(**options: object) -> None:
    """Run the hub: the OpenAI-compatible endpoint agents connect to."""
    from potluck._shared.logging import configure_logging
    from potluck._shared.paths import default_data_dir
    from potluck.app import load_admin_token, serve
    from potluck.hub.settings import HubSettings

    if options["data_dir"] is None:
        options["data_dir"] = default_data_dir("hub")
    options["score_weights"] = ",".join(cast("tuple[str, ...]", options["score_weights"]))
    settings = HubSettings(**options)  # type: ignore[arg-type]
    try:
        settings.validate()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(settings.log_level)
    token_hash, new_token = load_admin_token(settings)
    if new_token is not None:
        click.echo(f"admin token (shown once; only its hash is kept): {new_token}")

    def listening(url: str) -> None:
        click.echo(f"listening {url}")
        sys.stdout.flush()

    _run(lambda: serve(settings, token_hash, on_listening=listening))


@cli.group(invoke_without_command=True)
@click.option("--hub", "hub_url", envvar="POTLUCK_AGENT_HUB", help="Hub URL, e.g. https://hub:8642 (required to run).")
@click.option("--token", envvar="POTLUCK_AGENT_TOKEN", help="One-time enrolment token (first run only).")
@click.option(
    "--backend",
    "backends",
    multiple=True,
    envvar="POTLUCK_AGENT_BACKENDS",
    help="URL[,kind=KIND] of a local server; repeatable. Without any, local backends are auto-detected.",
)
@click.option(
    "--scan-ports",
    default="",
    envvar="POTLUCK_AGENT_SCAN_PORTS",
    help="Extra loopback ports to probe, comma-separated (turns auto-detection on).",
)
@click.option(
    "--auto/--no-auto",
    "auto_detect",
    default=None,
    envvar="POTLUCK_AGENT_AUTO_DETECT",
    help="Probe loopback for backends [default: on when no --backend is given].",
)
@click.option("--name", envvar="POTLUCK_AGENT_NAME", help="Display name [default: host name].")
@click.option("--max-concurrency", default=8, show_default=True, envvar="POTLUCK_AGENT_MAX_CONCURRENCY")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="POTLUCK_AGENT_DATA_DIR",
    help="Where the agent's key lives [default: $XDG_DATA_HOME/potluck/agent].",
)
@click.option("--drain-timeout", default=30.0, show_default=True, envvar="POTLUCK_AGENT_DRAIN_TIMEOUT")
@click.option("--catalog-interval", default=1.0, show_default=True, envvar="POTLUCK_AGENT_CATALOG_INTERVAL")
@click.option("--rescan-interval", default=30.0, show_default=True, envvar="POTLUCK_AGENT_RESCAN_INTERVAL")
@click.option("--metrics-interval", default=5.0, show_default=True, envvar="POTLUCK_AGENT_METRICS_INTERVAL")
@click.option(
    "--allow-insecure", is_flag=True, envvar="POTLUCK_AGENT_ALLOW_INSECURE", help="Allow plain ws:// off loopback."
)
@click.option("--log-level", default="info", show_default=True, envvar="POTLUCK_AGENT_LOG_LEVEL")
@click.pass_context
def agent(ctx: click.Context, /, **options: object) -> None:
    """Run an agent next to a GPU: dial out to the hub and serve its requests with local backends."""
    if ctx.invoked_subcommand in _AGENT_USER_COMMANDS:
        return  # user-API commands: the stored login and their own --hub, none of the daemon's options
    from potluck._shared.logging import configure_logging
    from potluck._shared.paths import default_data_dir
    from potluck.agent.daemon import AgentDaemon, FatalAgentError
    from potluck.agent.settings import AgentSettings

    try:
        options["scan_ports"] = _ports(str(options["scan_ports"]))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    ctx.obj = options
    if ctx.invoked_subcommand is not None:
        return
    if not options["hub_url"]:
        raise click.UsageError("--hub is required to run the agent")
    if options["data_dir"] is None:
        options["data_dir"] = default_data_dir("agent")
    if not options["name"]:
        options.pop("name")
    options["backends"] = tuple(options["backends"])  # type: ignore[arg-type]
    settings = AgentSettings(**options)  # type: ignore[arg-type]
    try:
        settings.validate()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(settings.log_level)

    async def main() -> None:
        await AgentDaemon(settings).run()

    try:
        _run(main)
    except FatalAgentError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


# `potluck agent SUBCOMMAND` that talk to the hub's user API rather than run or probe anything here.
_AGENT_USER_COMMANDS = frozenset(command.name for command in fleet.COMMANDS)


def _ports(text: str) -> tuple[int, ...]:
    ports = []
    for part in text.split(","):
        if part.strip():
            port = int(part)
            if not 0 < port < 65536:
                raise ValueError(f"--scan-ports: {port} is not a port")
            ports.append(port)
    return tuple(ports)


@agent.command("scan")
@click.pass_obj
def agent_scan(options: dict[str, object]) -> None:
    """Probe loopback for LLM servers and print what answers, as a table."""
    from rich.console import Console
    from rich.table import Table

    from potluck.agent.scan import scan_local

    ports: tuple[int, ...] = options["scan_ports"]  # type: ignore[assignment]
    configured: tuple[str, ...] = tuple(options["backends"])  # type: ignore[arg-type]
    backends = _run_result(lambda: scan_local(ports, configured))
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


for command in (*accounts.COMMANDS, *groups.COMMANDS, *billing.COMMANDS):
    cli.add_command(command)
for command in fleet.COMMANDS:
    agent.add_command(command)


def main() -> None:
    cli()
