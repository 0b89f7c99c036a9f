"""Accounts on a hub: log in and out, API keys and agent enrolment tokens (admin commands: `cli/admin.py`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from potluck.cli.admin import admin_cmd
from potluck.cli.output import format_time, id_lines, ids, print_table
from potluck.cli.passwords import password_stdin_option, read_password, warn_if_insecure
from potluck.cli.session import call, fail, hub_option, logged_in, path_id, resolve_hub

# The hub's own ranges (msgspec and constants only: importable without the hub's extras).
from potluck.hub.bounds import MAX_CONCURRENCY, MAX_KEY_LIFETIME_S, MAX_PRIORITY, MAX_RATE


@click.command()
@hub_option
@click.option("--username", help="Account name [default: prompt].")
@password_stdin_option
def login(hub_url: str | None, username: str | None, password_stdin: bool) -> None:
    """Log in to a hub and keep the session token in $XDG_CONFIG_HOME/potluck/cli.json."""
    from potluck.cli.client import HubError, load_config, request, save_config

    hub = resolve_hub(hub_url)
    if not username:
        if password_stdin:
            raise click.UsageError("--password-stdin needs --username")
        username = str(click.prompt("Username"))
    password = read_password(password_stdin, confirm=False)
    warn_if_insecure(hub)
    try:
        answer = request("POST", hub, "/api/login", body={"username": username, "password": password})
        config = load_config()
        config.update(hub=hub, token=str(answer["token"]))
        path = save_config(config)
    except HubError as exc:
        raise fail(exc) from None
    except KeyError:
        raise click.ClickException(f"{hub} answered the login without a token") from None
    expires = format_time(answer["expires_at"]) if answer.get("expires_at") else "never"
    click.echo(f"logged in to {hub} as {username} (session expires {expires}); token saved to {path}")


@click.command()
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
        raise fail(exc) from None
    click.echo(f"logged out of {config.get('hub', 'the hub')}; token removed from {path}")


@click.group("key")
def key_cmd() -> None:
    """Your API keys: create (for some or all of your groups), list, revoke."""


FC = TypeVar("FC", bound=Callable[..., Any])


def _limit_option(name: str, what: str, most: int) -> Callable[[FC], FC]:
    return click.option(name, type=click.IntRange(1, most), metavar="N", help=f"{what} [default: no limit].")


def _models(values: tuple[str, ...]) -> list[str] | None:
    """``--models a,b --models c`` as ``["a", "b", "c"]``; None (any model) when not given."""
    if not values:
        return None
    models = [m.strip() for value in values for m in value.split(",")]
    if any(not m for m in models):
        raise click.BadParameter(f"an empty model name in {', '.join(map(repr, values))}", param_hint="--models")
    return list(dict.fromkeys(models))


def _expires_in_s(text: str, now: datetime) -> int:
    """``--expires``: a duration from now (``30d``), or a date or time in UTC unless it names its zone."""
    from potluck.cli.client import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError:
        seconds = _seconds_until(text, now)
    if seconds > MAX_KEY_LIFETIME_S:
        raise click.BadParameter(
            f"{text!r} is more than {MAX_KEY_LIFETIME_S // 86_400} days away", param_hint="--expires"
        )
    return seconds


def _seconds_until(text: str, now: datetime) -> int:
    import math
    from datetime import UTC

    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration (3600, 30m, 12h, 30d, 2w) nor a UTC date or time"
            " (2026-12-31, 2026-12-31T18:00)",
            param_hint="--expires",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    # The hub takes a lifetime, not a time: round down, so the key never outlives the time given by more
    # than the call's own latency.
    seconds = math.floor((when - now).total_seconds())
    if seconds < 1:
        raise click.BadParameter(f"{text!r} is not in the future", param_hint="--expires")
    return seconds


def _key_settings(key: dict[str, object]) -> str:
    """What a new key is limited to, as one line; empty when nothing is."""
    parts = []
    models = key.get("models")
    if isinstance(models, list):
        parts.append("models " + ", ".join(str(m) for m in models))
    if key.get("expires_at"):
        parts.append(f"expires {format_time(key['expires_at'])}")
    for field, label in (("rpm", "rpm"), ("tpm", "tpm"), ("max_concurrency", "max concurrency")):
        if key.get(field) is not None:
            parts.append(f"{label} {key[field]}")
    if key.get("priority") not in (None, 1):
        parts.append(f"priority {key['priority']}")
    if key.get("prefer_own"):
        parts.append("prefers your own agents")
    return "; ".join(parts)


@key_cmd.command("create")
@hub_option
@click.argument("name")
@click.option(
    "--group",
    "groups",
    metavar="GROUP_ID",
    multiple=True,
    help="A group the key reaches; repeatable [default: every group you are in, now and later].",
)
@click.option(
    "--models",
    "models",
    metavar="MODEL[,MODEL...]",
    multiple=True,
    help="The only models (or aliases) the key may use; comma-separated or repeated [default: any].",
)
@click.option(
    "--expires",
    metavar="WHEN",
    help="When the key stops working: a duration from now (30d, 12h, 3600) or a UTC date or time"
    " (2026-12-31, 2026-12-31T18:00) [default: never].",
)
@_limit_option("--rpm", "Requests per minute", MAX_RATE)
@_limit_option("--tpm", "Tokens per minute", MAX_RATE)
@_limit_option("--max-concurrency", "Requests in flight at once", MAX_CONCURRENCY)
@click.option(
    "--priority",
    type=click.IntRange(1, MAX_PRIORITY),
    default=1,
    show_default=True,
    metavar="N",
    help=f"Weight in the fair queue, 1 to {MAX_PRIORITY}: a key of priority 2 gets twice the turns of one of 1.",
)
@click.option("--prefer-own", is_flag=True, help="Route to your own agents first when they can take the request.")
def key_create(
    hub_url: str | None,
    name: str,
    groups: tuple[str, ...],
    models: tuple[str, ...],
    expires: str | None,
    rpm: int | None,
    tpm: int | None,
    max_concurrency: int | None,
    priority: int,
    prefer_own: bool,
) -> None:
    """Create an API key for the OpenAI endpoint, with optional limits. The key is shown only this once."""
    from datetime import UTC

    body: dict[str, object] = {"name": name, "priority": priority, "prefer_own": prefer_own}
    if groups:
        body["groups"] = list(groups)
    allowed = _models(models)
    if allowed is not None:
        body["models"] = allowed
    if expires is not None:
        body["expires_in_s"] = _expires_in_s(expires, datetime.now(UTC))
    for field, value in (("rpm", rpm), ("tpm", tpm), ("max_concurrency", max_concurrency)):
        if value is not None:
            body[field] = value
    hub, token = logged_in(hub_url)
    key = call("POST", hub, "/api/keys", token, body)
    click.echo(f"created key {key.get('name', name)}: {key.get('id')} (groups: {_key_groups(key.get('groups'))})")
    settings = _key_settings(key)
    if settings:
        click.echo(f"limits: {settings}")
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
@hub_option
def key_list(hub_url: str | None) -> None:
    """List your API keys: id, name, prefix, groups, created, revoked (never the keys themselves)."""
    hub, token = logged_in(hub_url)
    keys = call("GET", hub, "/api/keys", token).get("keys", [])
    rows = [
        (
            str(k.get("id")),
            str(k.get("name")),
            f"{k.get('prefix')}…",
            "all" if k.get("groups") is None else id_lines(k.get("groups")),
            format_time(k.get("created_at")),
            format_time(k.get("revoked_at")),
        )
        for k in keys
    ]
    print_table("Your API keys", (ids("id"), "name", "prefix", ids("groups"), "created", "revoked"), rows)
    if not rows:
        click.echo("no keys yet; create one with `potluck key create NAME`")


@key_cmd.command("revoke")
@hub_option
@click.argument("key_id")
def key_revoke(hub_url: str | None, key_id: str) -> None:
    """Revoke one of your API keys; the hub refuses it from the next request on."""
    hub, token = logged_in(hub_url)
    answer = call("DELETE", hub, f"/api/keys/{path_id(key_id)}", token)
    click.echo(f"revoked key {answer.get('id', key_id)}")


@click.group("agent-token")
def agent_token_cmd() -> None:
    """One-time enrolment tokens for agents you will own."""


@agent_token_cmd.command("create")
@hub_option
@click.argument("name")
def agent_token_create(hub_url: str | None, name: str) -> None:
    """Make a one-time enrolment token; the agent that enrols with it belongs to you."""
    import shlex

    hub, token = logged_in(hub_url)
    answer = call("POST", hub, "/api/agent-tokens", token, {"name": name})
    agent_token = str(answer.get("token"))
    click.echo(f"agent token {answer.get('id')} for {answer.get('name', name)} (one enrolment; shown once):")
    click.echo(agent_token)
    click.echo("run on the GPU machine:")
    click.echo(f"potluck agent --hub {shlex.quote(hub)} --token {shlex.quote(agent_token)}")


COMMANDS: tuple[click.Command, ...] = (login, logout, key_cmd, agent_token_cmd, admin_cmd)
