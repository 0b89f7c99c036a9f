"""Accounts on a hub: log in and out, API keys, agent enrolment tokens, and the admin commands."""

from __future__ import annotations

import sys

import click

from potluck.cli.output import format_credits, micro_field, print_table
from potluck.cli.session import call, fail, hub_option, logged_in, path_id, resolve_hub
from potluck.protocol.accounts import UserRole

_password_stdin_option = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of standard input."
)


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


@click.command()
@hub_option
@click.option("--username", help="Account name [default: prompt].")
@_password_stdin_option
def login(hub_url: str | None, username: str | None, password_stdin: bool) -> None:
    """Log in to a hub and keep the session token in $XDG_CONFIG_HOME/potluck/cli.json."""
    from potluck.cli.client import HubError, load_config, request, save_config

    hub = resolve_hub(hub_url)
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
        raise fail(exc) from None
    except KeyError:
        raise click.ClickException(f"{hub} answered the login without a token") from None
    expires = answer.get("expires_at") or "never"
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
def key_create(hub_url: str | None, name: str, groups: tuple[str, ...]) -> None:
    """Create an API key for the OpenAI endpoint. The key is shown only this once."""
    hub, token = logged_in(hub_url)
    body: dict[str, object] = {"name": name}
    if groups:
        body["groups"] = list(groups)
    key = call("POST", hub, "/api/keys", token, body)
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
            _key_groups(k.get("groups")),
            str(k.get("created_at")),
            str(k.get("revoked_at") or "—"),
        )
        for k in keys
    ]
    print_table("Your API keys", ("id", "name", "prefix", "groups", "created", "revoked"), rows)
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


@click.group("admin")
def admin_cmd() -> None:
    """Hub administration with the admin token."""


@admin_cmd.command("create-user")
@hub_option
@click.argument("username")
@click.option("--role", type=click.Choice([r.value for r in UserRole]), default=UserRole.USER.value, show_default=True)
@click.option("--admin-token", envvar="POTLUCK_ADMIN_TOKEN", help="The hub's admin token.")
@_password_stdin_option
def admin_create_user(
    hub_url: str | None, username: str, role: str, admin_token: str | None, password_stdin: bool
) -> None:
    """Create an account. The password comes from a hidden prompt (asked twice) or --password-stdin."""
    from potluck.cli.client import HubError, request

    if not admin_token:
        raise click.UsageError("--admin-token (or POTLUCK_ADMIN_TOKEN) is required")
    hub = resolve_hub(hub_url)
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
        raise fail(exc) from None
    click.echo(f"created {user.get('role', role)} {user.get('username', username)}: {user.get('id')}")


@admin_cmd.command("grant-credits")
@hub_option
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
    hub = resolve_hub(hub_url)
    try:
        answer = request(
            "POST",
            hub,
            "/admin/credits",
            token=admin_token,
            body={"user_id": user_id, "amount": amount, "reason": reason},
        )
    except HubError as exc:
        raise fail(exc) from None
    granted = format_credits(round(amount * 1_000_000))
    click.echo(
        f"granted {granted} credits to {answer.get('user_id', user_id)} ({answer.get('txn_id')}); "
        f"balance now {format_credits(micro_field(answer, 'balance'))} credits"
    )


COMMANDS: tuple[click.Command, ...] = (login, logout, key_cmd, agent_token_cmd, admin_cmd)
