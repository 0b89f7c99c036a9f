"""`potluck` — run the hub, run an agent, talk to a hub's user and admin APIs.

Hub and agent code is imported inside the command functions, so `potluck agent` works with the
base install (no database libraries). The user commands (`login`, `group ...`, `key ...`,
`agent-token ...`, `agent list|share|unshare|pause|resume|schedule|prices|set-price`, `usage`,
`earnings`, `balance`, `receipt get|key`, `admin ...`) use `potluck.cli.client`, which needs only
the standard library. `receipt verify` works offline, with the hub's public key.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar, cast

import click

from potluck import __version__

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
_AGENT_USER_COMMANDS = frozenset({"list", "share", "unshare", "pause", "resume", "schedule", "prices", "set-price"})


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


# -- the user API: login, groups, invites, keys, agents, accounts ----------------------------------

_hub_option = click.option(
    "--hub",
    "hub_url",
    metavar="URL",
    envvar="POTLUCK_HUB_URL",
    help="Hub URL, e.g. https://hub:8642 [default: the hub of the last `potluck login`].",
)
_password_stdin_option = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of standard input."
)


def _fail(exc: Exception, *, hint: str = "") -> click.ClickException:
    """A failure as click reports it: ``Error: <the hub's message>`` on stderr, exit status 1."""
    return click.ClickException(f"{exc}{hint}")


def _hub(hub_url: str | None) -> str:
    """The hub to talk to: ``--hub`` / ``POTLUCK_HUB_URL``, else the one stored by `potluck login`."""
    from potluck.cli.client import HubError, load_config, normalize_hub

    if hub_url:
        try:
            return normalize_hub(hub_url)
        except HubError as exc:
            raise click.BadParameter(str(exc), param_hint="--hub") from None
    try:
        stored = load_config().get("hub")
    except HubError as exc:
        raise _fail(exc) from None
    if not stored:
        raise click.UsageError("no hub: give --hub URL (or POTLUCK_HUB_URL), or run `potluck login --hub URL` first")
    return stored


def _session(hub_url: str | None) -> tuple[str, str]:
    """(hub, token) of the stored login. The token is only ever sent to the hub that issued it."""
    from potluck.cli.client import HubError, load_config

    hub = _hub(hub_url)
    try:
        config = load_config()
    except HubError as exc:
        raise _fail(exc) from None
    token = config.get("token")
    if not token or config.get("hub") != hub:
        raise click.ClickException(f"not logged in to {hub}: run `potluck login --hub {hub}`")
    return hub, token


def _call(method: str, hub: str, path: str, token: str, body: object = None) -> dict[str, Any]:
    """A user-API call; on failure the hub's message, exit status 1."""
    from potluck.cli.client import HubError, request

    try:
        return request(method, hub, path, token=token, body=body)
    except HubError as exc:
        hint = " (run `potluck login` again)" if exc.status == 401 else ""
        raise _fail(exc, hint=hint) from None


def _read_password(from_stdin: bool, *, confirm: bool) -> str:
    """The password from stdin's first line, or from a hidden prompt; never echoed."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n").rstrip("\r")
        if not password:
            raise click.UsageError("--password-stdin: standard input holds no password")
        return password
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=confirm))


def _warn_if_insecure(hub: str) -> None:
    from potluck.cli.client import is_insecure

    if is_insecure(hub):
        click.echo(
            f"warning: {hub} is plain HTTP off this machine; the password crosses the network unencrypted", err=True
        )


def _path_id(value: str) -> str:
    """An id as one URL path segment (so ``../`` cannot reach another route)."""
    from urllib.parse import quote

    return quote(value, safe="")


def _print_table(title: str, columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@cli.command()
@_hub_option
@click.option("--username", help="Account name [default: prompt].")
@_password_stdin_option
def login(hub_url: str | None, username: str | None, password_stdin: bool) -> None:
    """Log in to a hub and keep the session token in $XDG_CONFIG_HOME/potluck/cli.json."""
    from potluck.cli.client import HubError, load_config, request, save_config

    hub = _hub(hub_url)
    if not username:
        if password_stdin:
            raise click.UsageError("--password-stdin needs --username")
        username = str(click.prompt("Username"))
    password = _read_password(password_stdin, confirm=False)
    _warn_if_insecure(hub)
    try:
        answer = request("POST", hub, "/api/login", body={"username": username, "password": password})
        config = load_config()
        config.update(hub=hub, token=str(answer["token"]))
        path = save_config(config)
    except HubError as exc:
        raise _fail(exc) from None
    except KeyError:
        raise click.ClickException(f"{hub} answered the login without a token") from None
    expires = answer.get("expires_at") or "never"
    click.echo(f"logged in to {hub} as {username} (session expires {expires}); token saved to {path}")


@cli.command()
def logout() -> None:
    """Forget the stored session token (the hub URL is kept)."""
    from potluck.cli.client import HubError, load_config, request, save_config

    try:
        config = load_config()
        if "token" not in config:
            click.echo("not logged in")
            return
        try:  # revoke it on the hub too; forget it here whatever the hub says
            request("POST", config["hub"], "/api/logout", token=config["token"])
        except HubError as exc:
            click.echo(f"warning: the hub did not revoke the token: {exc}", err=True)
        del config["token"]
        path = save_config(config)
    except (HubError, OSError) as exc:
        raise _fail(exc) from None
    click.echo(f"logged out of {config.get('hub', 'the hub')}; token removed from {path}")


@cli.group("group")
def group_cmd() -> None:
    """Your groups on the hub: create, list, members, invite, join, leave."""


@group_cmd.command("create")
@_hub_option
@click.argument("name")
def group_create(hub_url: str | None, name: str) -> None:
    """Create a group; you become its owner."""
    hub, token = _session(hub_url)
    group = _call("POST", hub, "/api/groups", token, {"name": name})
    click.echo(f"created group {group.get('name', name)}: {group.get('id')}")


@group_cmd.command("list")
@_hub_option
def group_list(hub_url: str | None) -> None:
    """List the groups you are in, with your role in each."""
    hub, token = _session(hub_url)
    groups = _call("GET", hub, "/api/groups", token).get("groups", [])
    rows = [(str(g.get("id")), str(g.get("name")), str(g.get("role"))) for g in groups]
    _print_table("Your groups", ("id", "name", "your role"), rows)
    if not rows:
        click.echo("no groups yet; create one with `potluck group create NAME` or join with a code")


@group_cmd.command("members")
@_hub_option
@click.argument("group_id")
def group_members(hub_url: str | None, group_id: str) -> None:
    """List a group's members and their roles."""
    hub, token = _session(hub_url)
    members = _call("GET", hub, f"/api/groups/{_path_id(group_id)}/members", token).get("members", [])
    rows = [(str(m.get("user_id")), str(m.get("username")), str(m.get("role"))) for m in members]
    _print_table(f"Members of {group_id}", ("user id", "username", "role"), rows)


@group_cmd.command("invite")
@_hub_option
@click.argument("group_id")
@click.option("--max-uses", default=1, show_default=True, type=click.IntRange(1, 10000), help="Redemptions allowed.")
@click.option(
    "--expires-in", default="7d", show_default=True, help="Lifetime: seconds, or a number with s, m, h, d or w."
)
def group_invite(hub_url: str | None, group_id: str, max_uses: int, expires_in: str) -> None:
    """Make an invite code for a group (owner or admin). The code is shown only this once."""
    from potluck.cli.client import parse_duration

    try:
        expires_in_s = parse_duration(expires_in)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires-in") from None
    hub, token = _session(hub_url)
    invite = _call(
        "POST",
        hub,
        f"/api/groups/{_path_id(group_id)}/invites",
        token,
        {"max_uses": max_uses, "expires_in_s": expires_in_s},
    )
    click.echo(f"invite {invite.get('id')}: {invite.get('max_uses')} use(s), expires {invite.get('expires_at')}")
    click.echo("code (shown once; share it privately):")
    click.echo(str(invite.get("code")))


@group_cmd.command("join")
@_hub_option
@click.argument("code")
def group_join(hub_url: str | None, code: str) -> None:
    """Join a group with an invite code."""
    hub, token = _session(hub_url)
    answer = _call("POST", hub, "/api/invites/redeem", token, {"code": code.strip()})
    click.echo(f"joined group {answer.get('group_id')}")


@group_cmd.command("leave")
@_hub_option
@click.argument("group_id")
def group_leave(hub_url: str | None, group_id: str) -> None:
    """Leave a group (the owner cannot leave; delete the group instead)."""
    hub, token = _session(hub_url)
    _call("POST", hub, f"/api/groups/{_path_id(group_id)}/leave", token)
    click.echo(f"left group {group_id}")


# -- group billing -----------------------------------------------------------------------------------


def _amount(value: object) -> str:
    """A float from the hub without float noise or exponents for whole numbers (``1``, ``0.15``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _per_mtok(value: object) -> str:
    return "none" if value is None else f"{_amount(value)} credits per million tokens"


def _print_group_billing(group: dict[str, Any]) -> None:
    """The hub's answer to ``PATCH /api/groups/{id}``: the group's settings as they now are."""

    def yes_no(key: str) -> str:
        return "yes" if group.get(key) else "no"

    rows = [
        ("billing", str(group.get("billing"))),
        ("dynamic pricing", yes_no("dynamic_pricing")),
        ("min price", _per_mtok(group.get("min_price_per_mtok"))),
        ("max price", _per_mtok(group.get("max_price_per_mtok"))),
        ("default input", _per_mtok(group.get("default_input_per_mtok"))),
        ("default output", _per_mtok(group.get("default_output_per_mtok"))),
        ("max tokens cap", f"{group.get('max_tokens_cap')} completion tokens (holds, without max_tokens)"),
        ("members can share", yes_no("members_can_share")),
    ]
    _print_table(f"Billing of {group.get('name')} ({group.get('id')})", ("setting", "value"), rows)


def _price_bound(value: str, option: str) -> float | None:
    """``--min-price`` / ``--max-price``: credits per million tokens, or ``none`` to remove the bound."""
    import math

    if value.strip().lower() == "none":
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise click.BadParameter(
            f"{value!r} is not a price (credits per million tokens, at least 0; or 'none')", param_hint=option
        )
    return number


_price_type = click.FloatRange(min=0.0)


@group_cmd.command("billing")
@_hub_option
@click.argument("group_id")
@click.option(
    "--mode",
    type=click.Choice(["mutual", "credits"]),
    help="mutual: usage recorded, nothing charged; credits: requests pay in credits.",
)
@click.option(
    "--dynamic/--no-dynamic", "dynamic", default=None, help="A multiplier on prices that follows supply and demand."
)
@click.option("--min-price", metavar="X", help="Lowest price agents may set, credits per million tokens, or 'none'.")
@click.option("--max-price", metavar="X", help="Highest price agents may set, credits per million tokens, or 'none'.")
@click.option("--default-input", type=_price_type, metavar="X", help="Input price of agents without their own.")
@click.option("--default-output", type=_price_type, metavar="X", help="Output price of agents without their own.")
@click.option(
    "--max-tokens-cap",
    type=click.IntRange(min=1),
    metavar="N",
    help="Completion tokens a credit hold assumes for a request without max_tokens.",
)
def group_billing(
    hub_url: str | None,
    group_id: str,
    mode: str | None,
    dynamic: bool | None,
    min_price: str | None,
    max_price: str | None,
    default_input: float | None,
    default_output: float | None,
    max_tokens_cap: int | None,
) -> None:
    """Show or change a group's billing (owner); only the options given change."""
    changes: dict[str, Any] = {}
    if mode is not None:
        changes["billing"] = mode
    if dynamic is not None:
        changes["dynamic_pricing"] = dynamic
    if min_price is not None:
        changes["min_price_per_mtok"] = _price_bound(min_price, "--min-price")
    if max_price is not None:
        changes["max_price_per_mtok"] = _price_bound(max_price, "--max-price")
    if default_input is not None:
        changes["default_input_per_mtok"] = default_input
    if default_output is not None:
        changes["default_output_per_mtok"] = default_output
    if max_tokens_cap is not None:
        changes["max_tokens_cap"] = max_tokens_cap
    hub, token = _session(hub_url)
    # An empty PATCH changes nothing and answers the settings: the hub has no GET for one group.
    group = _call("PATCH", hub, f"/api/groups/{_path_id(group_id)}", token, changes)
    if changes:
        click.echo(f"updated group {group.get('id', group_id)}")
    _print_group_billing(group)


@group_cmd.command("prices")
@_hub_option
@click.argument("group_id")
def group_prices(hub_url: str | None, group_id: str) -> None:
    """What each model costs in a group now, per connected agent (any member)."""
    hub, token = _session(hub_url)
    answer = _call("GET", hub, f"/api/groups/{_path_id(group_id)}/prices", token)
    rows = [
        (
            str(p.get("model")),
            str(p.get("agent_id")),
            _amount(p.get("input_per_mtok")),
            _amount(p.get("output_per_mtok")),
            _amount(p.get("multiplier")),
            str(p.get("reason") or "—"),
        )
        for p in answer.get("data", [])
        if isinstance(p, dict)
    ]
    _print_table(f"Prices in {group_id}", ("model", "agent", "input/Mtok", "output/Mtok", "multiplier", "reason"), rows)
    if not rows:
        click.echo("no connected agent serves this group")
    click.echo(
        f"billing: {answer.get('billing')}; credits per million tokens: a request pays its agent's price"
        " times the multiplier"
    )


@cli.group("key")
def key_cmd() -> None:
    """Your API keys: create (for some or all of your groups), list, revoke."""


@key_cmd.command("create")
@_hub_option
@click.argument("name")
@click.option(
    "--group",
    "groups",
    metavar="GROUP_ID",
    multiple=True,
    help="A group the key reaches; repeatable [default: every group you are in, now and later].",
)
def key_create(hub_url: str | None, name: str, groups: tuple[str, ...]) -> None:
    """Create an API key for the OpenAI endpoint. The key is shown only this once."""
    hub, token = _session(hub_url)
    body: dict[str, object] = {"name": name}
    if groups:
        body["groups"] = list(groups)
    key = _call("POST", hub, "/api/keys", token, body)
    click.echo(f"created key {key.get('name', name)}: {key.get('id')} (groups: {_key_groups(key.get('groups'))})")
    click.echo("key (shown once; the hub keeps only its hash):")
    click.echo(str(key.get("key")))


def _key_groups(groups: object) -> str:
    """A key's groups for display: ``all`` for a key that follows its owner's memberships."""
    if groups is None:
        return "all"
    if isinstance(groups, list):
        return ", ".join(str(g) for g in groups) or "none"
    return str(groups)


@key_cmd.command("list")
@_hub_option
def key_list(hub_url: str | None) -> None:
    """List your API keys: id, name, prefix, groups, created, revoked (never the keys themselves)."""
    hub, token = _session(hub_url)
    keys = _call("GET", hub, "/api/keys", token).get("keys", [])
    rows = [
        (
            str(k.get("id")),
            str(k.get("name")),
            f"{k.get('prefix')}…",
            _key_groups(k.get("groups")),
            str(k.get("created_at")),
            str(k.get("revoked_at") or "—"),
        )
        for k in keys
    ]
    _print_table("Your API keys", ("id", "name", "prefix", "groups", "created", "revoked"), rows)
    if not rows:
        click.echo("no keys yet; create one with `potluck key create NAME`")


@key_cmd.command("revoke")
@_hub_option
@click.argument("key_id")
def key_revoke(hub_url: str | None, key_id: str) -> None:
    """Revoke one of your API keys; the hub refuses it from the next request on."""
    hub, token = _session(hub_url)
    answer = _call("DELETE", hub, f"/api/keys/{_path_id(key_id)}", token)
    click.echo(f"revoked key {answer.get('id', key_id)}")


@cli.group("agent-token")
def agent_token_cmd() -> None:
    """One-time enrolment tokens for agents you will own."""


@agent_token_cmd.command("create")
@_hub_option
@click.argument("name")
def agent_token_create(hub_url: str | None, name: str) -> None:
    """Make a one-time enrolment token; the agent that enrols with it belongs to you."""
    import shlex

    hub, token = _session(hub_url)
    answer = _call("POST", hub, "/api/agent-tokens", token, {"name": name})
    agent_token = str(answer.get("token"))
    click.echo(f"agent token {answer.get('id')} for {answer.get('name', name)} (one enrolment; shown once):")
    click.echo(agent_token)
    click.echo("run on the GPU machine:")
    click.echo(f"potluck agent --hub {shlex.quote(hub)} --token {shlex.quote(agent_token)}")


@agent.command("list")
@_hub_option
def agent_list(hub_url: str | None) -> None:
    """List your agents: id, name, state, groups, models (hot ones marked)."""
    hub, token = _session(hub_url)
    agents = _call("GET", hub, "/api/agents", token).get("agents", [])
    rows = []
    for a in agents:
        models = [m for m in a.get("models", []) if isinstance(m, dict)]
        models.sort(key=lambda m: (not m.get("hot"), str(m.get("id"))))
        listed = ", ".join(f"{m.get('id')}{' (hot)' if m.get('hot') else ''}" for m in models) or "—"
        groups = ", ".join(str(g) for g in a.get("groups", [])) or "—"
        rows.append((str(a.get("id")), str(a.get("name")), str(a.get("state")), groups, listed))
    _print_table("Your agents", ("id", "name", "state", "groups", "models (hot first)"), rows)
    if not rows:
        click.echo("no agents yet; make an enrolment token with `potluck agent-token create NAME`")


@agent.command("share")
@_hub_option
@click.argument("agent_id")
@click.argument("group_id")
def agent_share(hub_url: str | None, agent_id: str, group_id: str) -> None:
    """Share one of your agents into a group you own or administer."""
    hub, token = _session(hub_url)
    _call("POST", hub, f"/api/agents/{_path_id(agent_id)}/groups", token, {"group_id": group_id})
    click.echo(f"shared agent {agent_id} into group {group_id}")


@agent.command("unshare")
@_hub_option
@click.argument("agent_id")
@click.argument("group_id")
def agent_unshare(hub_url: str | None, agent_id: str, group_id: str) -> None:
    """Stop sharing one of your agents into a group."""
    hub, token = _session(hub_url)
    _call("DELETE", hub, f"/api/agents/{_path_id(agent_id)}/groups/{_path_id(group_id)}", token)
    click.echo(f"stopped sharing agent {agent_id} into group {group_id}")


# -- owner controls: pause, resume, schedule --------------------------------------------------------

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_GROUPS = {
    "daily": tuple(range(7)),
    "weekdays": tuple(range(5)),
    "weekends": (5, 6),
    "weekend": (5, 6),
}
_WINDOW = re.compile(r"^\s*(\S+)\s+(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})\s*$")
_WINDOW_EXAMPLES = "e.g. 'mon-fri 18:00-08:00', 'sat,sun 00:00-23:59' or 'daily 09:00-17:00'"


def _day(name: str, spec: str) -> int:
    name = name.lower()
    for names in (_DAY_NAMES, _FULL_DAY_NAMES):
        if name in names:
            return names.index(name)
    raise click.BadParameter(
        f"{spec!r}: unknown day {name!r} (mon, tue, wed, thu, fri, sat, sun; or daily, weekdays, weekends)"
    )


def _days(text: str, spec: str) -> list[int]:
    days: set[int] = set()
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            raise click.BadParameter(f"{spec!r}: empty day in {text!r}")
        if part in _DAY_GROUPS:
            days.update(_DAY_GROUPS[part])
            continue
        first, dash, last = part.partition("-")
        if not dash:
            days.add(_day(part, spec))
            continue
        start, end = _day(first, spec), _day(last, spec)
        days.update((start + i) % 7 for i in range((end - start) % 7 + 1))  # fri-mon wraps over the week end
    return sorted(days)


def _clock(text: str, spec: str) -> str:
    hours, _, minutes = text.partition(":")
    if not (0 <= int(hours) <= 23 and 0 <= int(minutes) <= 59):
        raise click.BadParameter(f"{spec!r}: {text} is not a time of day (HH:MM, 00:00 to 23:59)")
    return f"{int(hours):02d}:{int(minutes):02d}"


def parse_window(spec: str) -> dict[str, Any]:
    """``"mon-fri 18:00-08:00"`` as the hub's ``{"days": [0, 1, 2, 3, 4], "start": "18:00", "end": "08:00"}``.

    Days: ``mon`` … ``sun`` (or full names), ranges (``mon-fri``; ``fri-mon`` wraps), comma lists
    (``sat,sun``), ``daily``, ``weekdays``, ``weekends``. Monday = 0. A window that ends before it
    starts runs past midnight. Anything else is `click.BadParameter`.
    """
    match = _WINDOW.match(spec)
    if match is None:
        raise click.BadParameter(f"{spec!r} is not a window: expected 'DAYS HH:MM-HH:MM', {_WINDOW_EXAMPLES}")
    days = _days(match.group(1), spec)
    start, end = _clock(match.group(2), spec), _clock(match.group(3), spec)
    if start == end:
        raise click.BadParameter(f"{spec!r}: the window starts and ends at {start}, so it is empty")
    return {"days": days, "start": start, "end": end}


def _windows_option(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[dict[str, Any]]:
    return [parse_window(value) for value in values]


def local_timezone() -> str:
    """This machine's IANA zone name (``$TZ``, ``/etc/timezone``, ``/etc/localtime``, `time.tzname`), else UTC."""
    import contextlib
    import os
    import time
    from zoneinfo import ZoneInfo

    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    with contextlib.suppress(OSError):
        candidates.append(os.readlink("/etc/localtime"))
    candidates.extend(time.tzname)
    for candidate in candidates:
        name = candidate.split("zoneinfo/", 1)[-1].strip()
        if not name or name.startswith("/"):
            continue
        try:
            ZoneInfo(name)
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
            continue
        return name
    return "UTC"


def _format_days(days: Sequence[int]) -> str:
    wanted = sorted({d for d in days if isinstance(d, int) and 0 <= d <= 6})
    if len(wanted) == 7:
        return "daily"
    runs: list[list[int]] = []
    for day in wanted:
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{_DAY_NAMES[run[0]]}-{_DAY_NAMES[run[-1]]}")
        else:
            parts.extend(_DAY_NAMES[d] for d in run)
    return ",".join(parts)


def _format_schedule(schedule: object) -> str:
    if not isinstance(schedule, dict):
        return "always"
    windows = [w for w in schedule.get("windows", []) if isinstance(w, dict)]
    listed = "; ".join(f"{_format_days(w.get('days', []))} {w.get('start')}-{w.get('end')}" for w in windows)
    return f"{schedule.get('timezone', 'UTC')}: {listed or 'never (no windows)'}"


def _print_controls(answer: dict[str, Any]) -> None:
    """The hub's answer to ``PATCH /api/agents/{id}`` (it leaves out settings at their default)."""

    def yes_no(key: str) -> str:
        return "yes" if answer.get(key) else "no"

    rows = [
        ("paused", yes_no("paused")),
        ("own requests only", yes_no("own_requests_only")),
        ("own requests first", yes_no("own_requests_first")),
        ("schedule", _format_schedule(answer.get("schedule"))),
    ]
    _print_table("Owner controls", ("control", "value"), rows)


def _update_agent(hub_url: str | None, agent_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    hub, token = _session(hub_url)
    return _call("PATCH", hub, f"/api/agents/{_path_id(agent_id)}", token, changes)


@agent.command("pause")
@_hub_option
@click.argument("agent_id")
def agent_pause(hub_url: str | None, agent_id: str) -> None:
    """Pause one of your agents: no new work (what it runs finishes) until `potluck agent resume`."""
    answer = _update_agent(hub_url, agent_id, {"paused": True})
    click.echo(f"paused agent {answer.get('id', agent_id)}")
    _print_controls(answer)


@agent.command("resume")
@_hub_option
@click.argument("agent_id")
def agent_resume(hub_url: str | None, agent_id: str) -> None:
    """Resume a paused agent (it still takes work only inside its schedule's windows)."""
    answer = _update_agent(hub_url, agent_id, {"paused": False})
    click.echo(f"resumed agent {answer.get('id', agent_id)}")
    _print_controls(answer)


@agent.command("schedule")
@_hub_option
@click.argument("agent_id")
@click.option(
    "--tz",
    "timezone",
    metavar="ZONE",
    help="IANA time zone of the windows, e.g. Europe/Berlin [default: this machine's zone, else UTC].",
)
@click.option(
    "--window",
    "windows",
    multiple=True,
    metavar="'DAYS HH:MM-HH:MM'",
    callback=_windows_option,
    help="When the agent takes work, e.g. 'mon-fri 18:00-08:00' or 'daily 09:00-17:00'; repeatable. "
    "Replaces the whole schedule.",
)
@click.option("--always", is_flag=True, help="No schedule: available at any time (unless paused).")
@click.option("--own-only/--no-own-only", "own_only", default=None, help="Serve only your own keys' requests.")
@click.option("--own-first/--no-own-first", "own_first", default=None, help="Prefer your own keys' requests.")
def agent_schedule(
    hub_url: str | None,
    agent_id: str,
    timezone: str | None,
    windows: list[dict[str, Any]],
    always: bool,
    own_only: bool | None,
    own_first: bool | None,
) -> None:
    """Set when one of your agents takes work, and whose requests it serves."""
    changes: dict[str, Any] = {}
    if always:
        if windows or timezone:
            raise click.UsageError("--always cannot be combined with --window or --tz")
        changes["schedule"] = None
    elif windows:
        changes["schedule"] = {"timezone": timezone or local_timezone(), "windows": windows}
    elif timezone:
        raise click.UsageError("--tz needs at least one --window (or give --always)")
    if own_only is not None:
        changes["own_requests_only"] = own_only
    if own_first is not None:
        changes["own_requests_first"] = own_first
    if not changes:
        raise click.UsageError(
            "nothing to change: give --window, --always, --own-only/--no-own-only or --own-first/--no-own-first"
        )
    answer = _update_agent(hub_url, agent_id, changes)
    click.echo(f"updated agent {answer.get('id', agent_id)}")
    _print_controls(answer)


# -- agent prices ------------------------------------------------------------------------------------


def _print_agent_prices(agent_id: str, prices: object) -> None:
    listed = prices if isinstance(prices, dict) else {}
    rows = [
        (str(model), _amount(p.get("input_per_mtok")), _amount(p.get("output_per_mtok")))
        for model, p in sorted(listed.items())
        if isinstance(p, dict)
    ]
    _print_table(f"Prices of {agent_id}", ("model", "input/Mtok", "output/Mtok"), rows)
    if not rows:
        click.echo("no prices set: each group's default prices apply")
    else:
        click.echo("credits per million tokens; groups clamp them to their bounds")


def _agent_prices_path(agent_id: str) -> str:
    return f"/api/agents/{_path_id(agent_id)}/prices"


@agent.command("prices")
@_hub_option
@click.argument("agent_id")
def agent_prices(hub_url: str | None, agent_id: str) -> None:
    """Show the prices you set for one of your agents' models."""
    hub, token = _session(hub_url)
    answer = _call("GET", hub, _agent_prices_path(agent_id), token)
    _print_agent_prices(str(answer.get("agent_id", agent_id)), answer.get("prices"))


@agent.command("set-price")
@_hub_option
@click.argument("agent_id")
@click.argument("model")
@click.argument("input_per_mtok", type=click.FloatRange(min=0.0))
@click.argument("output_per_mtok", type=click.FloatRange(min=0.0))
def agent_set_price(
    hub_url: str | None, agent_id: str, model: str, input_per_mtok: float, output_per_mtok: float
) -> None:
    """Set one model's price on one of your agents, in credits per million tokens (the others stay)."""
    hub, token = _session(hub_url)
    # The hub replaces the whole map: read it, change this model, send it all back.
    current = _call("GET", hub, _agent_prices_path(agent_id), token).get("prices")
    prices = dict(current) if isinstance(current, dict) else {}
    prices[model] = {"input_per_mtok": input_per_mtok, "output_per_mtok": output_per_mtok}
    answer = _call("PUT", hub, _agent_prices_path(agent_id), token, prices)
    click.echo(
        f"set {model} on agent {agent_id}: {_amount(input_per_mtok)} in / {_amount(output_per_mtok)} out"
        " credits per million tokens"
    )
    _print_agent_prices(str(answer.get("agent_id", agent_id)), answer.get("prices"))


# -- credits and reports -----------------------------------------------------------------------------

_day_type = click.DateTime(formats=["%Y-%m-%d"])
_since_option = click.option("--since", type=_day_type, metavar="YYYY-MM-DD", help="From this day on (UTC).")
_until_option = click.option("--until", type=_day_type, metavar="YYYY-MM-DD", help="Up to this day, included (UTC).")
_csv_option = click.option("--csv", "as_csv", is_flag=True, help="Print the hub's CSV instead of a table.")


def _report_path(path: str, since: datetime | None, until: datetime | None, as_csv: bool) -> str:
    from urllib.parse import urlencode

    query = {}
    if since is not None:
        query["since"] = since.strftime("%Y-%m-%d")
    if until is not None:
        query["until"] = until.strftime("%Y-%m-%d")
    if as_csv:
        query["format"] = "csv"
    return f"{path}?{urlencode(query)}" if query else path


def _fetch(hub: str, path: str, token: str | None, *, accept: str = "application/json") -> bytes:
    """A GET whose answer is kept as the hub sent it (CSV, a signed receipt, the hub's key)."""
    from potluck.cli.client import HubError, request_bytes

    try:
        return request_bytes("GET", hub, path, token=token, accept=accept)
    except HubError as exc:
        hint = " (run `potluck login` again)" if exc.status == 401 else ""
        raise _fail(exc, hint=hint) from None


def _write_stdout(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _micro(row: dict[str, Any], key: str) -> int:
    value = row.get(f"{key}_micro")
    return value if isinstance(value, int) else 0


def _count(row: dict[str, Any], key: str) -> int:
    value = row.get(key)
    return value if isinstance(value, int) else 0


def _print_report(
    title: str, columns: tuple[str, ...], rows: Sequence[tuple[str, ...]], totals: tuple[str, ...]
) -> None:
    """A report table: the day and names left-aligned, the numbers right-aligned, totals in the footer."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_footer=True)
    for i, column in enumerate(columns):
        numeric = i >= len(columns) - sum(1 for t in totals if t)
        table.add_column(column, footer=totals[i], justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _report_rows(hub: str, path: str, token: str) -> list[dict[str, Any]]:
    return [r for r in _call("GET", hub, path, token).get("data", []) if isinstance(r, dict)]


@cli.command("usage")
@_hub_option
@_since_option
@_until_option
@_csv_option
def usage(hub_url: str | None, since: datetime | None, until: datetime | None, as_csv: bool) -> None:
    """Your requests per day, key and model: tokens and spend in credits."""
    hub, token = _session(hub_url)
    path = _report_path("/api/usage", since, until, as_csv)
    if as_csv:
        _write_stdout(_fetch(hub, path, token, accept="text/csv"))
        return
    data = _report_rows(hub, path, token)
    rows = [
        (
            str(r.get("day")),
            str(r.get("key_id") or "—"),
            str(r.get("model")),
            str(_count(r, "requests")),
            str(_count(r, "prompt_tokens")),
            str(_count(r, "completion_tokens")),
            _credits(_micro(r, "spend")),
        )
        for r in data
    ]
    totals = (
        "total",
        "",
        "",
        str(sum(_count(r, "requests") for r in data)),
        str(sum(_count(r, "prompt_tokens") for r in data)),
        str(sum(_count(r, "completion_tokens") for r in data)),
        _credits(sum(_micro(r, "spend") for r in data)),
    )
    columns = ("day", "key", "model", "requests", "prompt", "completion", "spend (credits)")
    _print_report("Your usage", columns, rows, totals)


@cli.command("earnings")
@_hub_option
@_since_option
@_until_option
@_csv_option
def earnings(hub_url: str | None, since: datetime | None, until: datetime | None, as_csv: bool) -> None:
    """What your agents served per day, agent and model, and what they earned in credits."""
    hub, token = _session(hub_url)
    path = _report_path("/api/earnings", since, until, as_csv)
    if as_csv:
        _write_stdout(_fetch(hub, path, token, accept="text/csv"))
        return
    data = _report_rows(hub, path, token)

    def tokens(r: dict[str, Any]) -> int:
        return _count(r, "prompt_tokens") + _count(r, "completion_tokens")

    rows = [
        (
            str(r.get("day")),
            str(r.get("agent_id") or "—"),
            str(r.get("model")),
            str(_count(r, "requests")),
            str(tokens(r)),
            _credits(_micro(r, "earned")),
        )
        for r in data
    ]
    totals = (
        "total",
        "",
        "",
        str(sum(_count(r, "requests") for r in data)),
        str(sum(tokens(r) for r in data)),
        _credits(sum(_micro(r, "earned") for r in data)),
    )
    _print_report("Your earnings", ("day", "agent", "model", "requests", "tokens", "earned (credits)"), rows, totals)


@cli.command("balance")
@_hub_option
def balance(hub_url: str | None) -> None:
    """Your credits: the balance you can spend, and what requests in flight hold."""
    hub, token = _session(hub_url)
    answer = _call("GET", hub, "/api/balance", token)
    rows = [
        ("balance", _credits(_micro(answer, "balance"))),
        ("held", _credits(_micro(answer, "held"))),
    ]
    _print_table("Your credits", ("", "credits"), rows)


# -- receipts -----------------------------------------------------------------------------------------


@cli.group("receipt")
def receipt_cmd() -> None:
    """Signed receipts: what a request cost, signed by the hub."""


def _credits(micro: int) -> str:
    """µcr as credits with 6 decimals, exactly (no float rounding)."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


@receipt_cmd.command("verify")
@click.argument("file", type=click.File("rb"))
@click.option(
    "--key",
    required=True,
    metavar="KEY",
    help="The hub's public key: a file or a base64 string; the JSON of GET /.well-known/potluck-hub-key works too.",
)
def receipt_verify(file: IO[bytes], key: str) -> None:
    """Check that the hub signed the receipt in FILE ('-': standard input), and show what it says."""
    from potluck.hub.receipts import ReceiptError, parse_public_key, verify_receipt

    key_path = Path(key)
    try:
        is_file = key_path.is_file()
    except OSError:  # e.g. a base64 key longer than a file name may be
        is_file = False
    try:
        key_text = key_path.read_text() if is_file else key
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {key}: {exc}", param_hint="--key") from None
    try:
        public_key = parse_public_key(key_text)
    except ReceiptError as exc:
        raise click.BadParameter(f"{exc} (give a key file or a base64 string)", param_hint="--key") from None
    try:
        receipt = verify_receipt(file.read(), public_key)
    except ReceiptError as exc:
        raise click.ClickException(f"invalid receipt: {exc}") from None
    estimated = " (estimated by the hub)" if receipt.tokens_estimated else ""
    rows = [
        ("request", receipt.request_id),
        ("issued", receipt.issued_at),
        ("outcome", receipt.outcome),
        ("model", receipt.model),
        ("tokens", f"{receipt.prompt_tokens} prompt + {receipt.completion_tokens} completion{estimated}"),
        (
            "price",
            f"{receipt.input_per_mtok:g} in / {receipt.output_per_mtok:g} out credits per million tokens"
            f" x {receipt.multiplier:g}",
        ),
        ("charged", f"{_credits(receipt.charged)} credits"),
        ("fee", f"{_credits(receipt.fee)} credits"),
        ("earned", f"{_credits(receipt.earned)} credits"),
        ("consumer", f"{receipt.consumer_id} (key {receipt.key_id})"),
        ("group", receipt.group_id or "—"),
        ("agent", receipt.agent_id),
        ("owner", receipt.owner_id or "—"),
        ("hub key", receipt.hub),
    ]
    _print_table("Receipt", ("field", "value"), rows)
    click.echo(f"valid: signed by hub key {receipt.hub}")


def _save_or_print(data: bytes, output: Path | None) -> None:
    if not data.endswith(b"\n"):
        data += b"\n"
    if output is None:
        _write_stdout(data)
        return
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc}") from None


_output_option = click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False, writable=True),
    metavar="FILE",
    help="Save to FILE instead of printing it.",
)


@receipt_cmd.command("get")
@_hub_option
@click.argument("request_id")
@_output_option
def receipt_get(hub_url: str | None, request_id: str, output: Path | None) -> None:
    """Fetch the signed receipt of a request you made or one of your agents served, as the hub sent it."""
    hub, token = _session(hub_url)
    data = _fetch(hub, f"/api/receipts/{_path_id(request_id)}", token)
    _save_or_print(data, output)
    if output is not None:
        click.echo(f"saved the receipt of {request_id} to {output}")


@receipt_cmd.command("key")
@_hub_option
@_output_option
def receipt_key(hub_url: str | None, output: Path | None) -> None:
    """Fetch the hub's public key (no login needed), for `potluck receipt verify --key`."""
    import json

    hub = _hub(hub_url)
    data = _fetch(hub, "/.well-known/potluck-hub-key", None)
    _save_or_print(data, output)
    if output is not None:
        try:
            fingerprint = json.loads(data).get("fingerprint")
        except (ValueError, AttributeError):
            fingerprint = None
        click.echo(f"saved hub key {fingerprint or '(no fingerprint)'} of {hub} to {output}")


@cli.group("admin")
def admin_cmd() -> None:
    """Hub administration with the admin token."""


@admin_cmd.command("create-user")
@_hub_option
@click.argument("username")
@click.option("--role", type=click.Choice(["user", "admin"]), default="user", show_default=True)
@click.option("--admin-token", envvar="POTLUCK_ADMIN_TOKEN", help="The hub's admin token.")
@_password_stdin_option
def admin_create_user(
    hub_url: str | None, username: str, role: str, admin_token: str | None, password_stdin: bool
) -> None:
    """Create an account. The password comes from a hidden prompt (asked twice) or --password-stdin."""
    from potluck.cli.client import HubError, request

    if not admin_token:
        raise click.UsageError("--admin-token (or POTLUCK_ADMIN_TOKEN) is required")
    hub = _hub(hub_url)
    password = _read_password(password_stdin, confirm=True)
    _warn_if_insecure(hub)
    try:
        user = request(
            "POST",
            hub,
            "/admin/users",
            token=admin_token,
            body={"username": username, "password": password, "role": role},
        )
    except HubError as exc:
        raise _fail(exc) from None
    click.echo(f"created {user.get('role', role)} {user.get('username', username)}: {user.get('id')}")


@admin_cmd.command("grant-credits")
@_hub_option
@click.argument("user_id")
@click.argument("amount", type=float)
@click.option("--reason", required=True, help="Why (kept in the ledger with the grant).")
@click.option("--admin-token", envvar="POTLUCK_ADMIN_TOKEN", help="The hub's admin token.")
def admin_grant_credits(hub_url: str | None, user_id: str, amount: float, reason: str, admin_token: str | None) -> None:
    """Add AMOUNT credits to a user's balance."""
    import math

    from potluck.cli.client import HubError, request

    if not admin_token:
        raise click.UsageError("--admin-token (or POTLUCK_ADMIN_TOKEN) is required")
    if not math.isfinite(amount):
        raise click.BadParameter(f"{amount} is not a number of credits", param_hint="AMOUNT")
    hub = _hub(hub_url)
    try:
        answer = request(
            "POST",
            hub,
            "/admin/credits",
            token=admin_token,
            body={"user_id": user_id, "amount": amount, "reason": reason},
        )
    except HubError as exc:
        raise _fail(exc) from None
    granted = _credits(round(amount * 1_000_000))
    click.echo(
        f"granted {granted} credits to {answer.get('user_id', user_id)} ({answer.get('txn_id')}); "
        f"balance now {_credits(_micro(answer, 'balance'))} credits"
    )


def main() -> None:
    cli()
