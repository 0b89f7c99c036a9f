"""`potluck admin ...`: hub administration with the admin token (``--admin-token`` / ``POTLUCK_ADMIN_TOKEN``).

Accounts and credits (`create-user`, `grant-credits`), and the listings an operator needs to find
ids: `users`, `keys`, `agents` and a user's `requests`.
"""

from __future__ import annotations

from typing import Any

import click

from potluck.cli.history import before_option, limit_option, print_requests, requests_path
from potluck.cli.output import NONE, format_credits, format_time, ids, micro_field, numeric, print_table
from potluck.cli.passwords import password_stdin_option, read_password, warn_if_insecure
from potluck.cli.session import fail, hub_option, resolve_hub
from potluck.protocol.accounts import UserRole

admin_token_option = click.option("--admin-token", envvar="POTLUCK_ADMIN_TOKEN", help="The hub's admin token.")


def _admin(hub_url: str | None, admin_token: str | None) -> tuple[str, str]:
    """(hub, admin token); a usage error without a token."""
    if not admin_token:
        raise click.UsageError("--admin-token (or POTLUCK_ADMIN_TOKEN) is required")
    return resolve_hub(hub_url), admin_token


def _call(hub: str, admin_token: str, method: str, path: str, body: object = None) -> dict[str, Any]:
    from potluck.cli.client import HubError, request

    try:
        return request(method, hub, path, token=admin_token, body=body)
    except HubError as exc:
        raise fail(exc) from None


def _rows(answer: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [row for row in answer.get(key, []) if isinstance(row, dict)]


def _limit(value: object) -> str:
    return NONE if value is None else str(value)


@click.group("admin")
def admin_cmd() -> None:
    """Hub administration with the admin token."""


@admin_cmd.command("create-user")
@hub_option
@click.argument("username")
@click.option("--role", type=click.Choice([r.value for r in UserRole]), default=UserRole.USER.value, show_default=True)
@admin_token_option
@password_stdin_option
def admin_create_user(
    hub_url: str | None, username: str, role: str, admin_token: str | None, password_stdin: bool
) -> None:
    """Create an account. The password comes from a hidden prompt (asked twice) or --password-stdin."""
    hub, admin_token = _admin(hub_url, admin_token)
    password = read_password(password_stdin, confirm=True)
    warn_if_insecure(hub)
    body = {"username": username, "password": password, "role": role}
    user = _call(hub, admin_token, "POST", "/admin/users", body)
    click.echo(f"created {user.get('role', role)} {user.get('username', username)}: {user.get('id')}")


@admin_cmd.command("grant-credits")
@hub_option
@click.argument("user_id")
@click.argument("amount", type=float)
@click.option("--reason", required=True, help="Why (kept in the ledger with the grant).")
@admin_token_option
def admin_grant_credits(hub_url: str | None, user_id: str, amount: float, reason: str, admin_token: str | None) -> None:
    """Add AMOUNT credits to a user's balance."""
    import math

    hub, admin_token = _admin(hub_url, admin_token)
    if not math.isfinite(amount):
        raise click.BadParameter(f"{amount} is not a number of credits", param_hint="AMOUNT")
    body = {"user_id": user_id, "amount": amount, "reason": reason}
    answer = _call(hub, admin_token, "POST", "/admin/credits", body)
    granted = format_credits(round(amount * 1_000_000))
    click.echo(
        f"granted {granted} credits to {answer.get('user_id', user_id)} ({answer.get('txn_id')}); "
        f"balance now {format_credits(micro_field(answer, 'balance'))} credits"
    )


@admin_cmd.command("users")
@hub_option
@admin_token_option
def admin_users(hub_url: str | None, admin_token: str | None) -> None:
    """List every account: id, username, role, limits (requests and tokens per minute) and credits."""
    hub, admin_token = _admin(hub_url, admin_token)
    users = _rows(_call(hub, admin_token, "GET", "/admin/users"), "users")
    rows = [
        (
            str(u.get("id")),
            str(u.get("username")),
            str(u.get("role")),
            _limit(u.get("rpm")),
            _limit(u.get("tpm")),
            format_credits(micro_field(u, "balance")),
        )
        for u in users
    ]
    columns = (ids("id"), "username", "role", numeric("rpm"), numeric("tpm"), numeric("credits"))
    print_table("Users", columns, rows)


@admin_cmd.command("keys")
@hub_option
@admin_token_option
def admin_keys(hub_url: str | None, admin_token: str | None) -> None:
    """List every API key, revoked ones included: id, name, prefix, created, revoked (never a key)."""
    hub, admin_token = _admin(hub_url, admin_token)
    keys = _rows(_call(hub, admin_token, "GET", "/admin/keys"), "keys")
    rows = [
        (
            str(k.get("id")),
            str(k.get("name")),
            f"{k.get('prefix')}…",
            format_time(k.get("created_at")),
            format_time(k.get("revoked_at")),
        )
        for k in keys
    ]
    print_table("API keys", (ids("id"), "name", "prefix", "created", "revoked"), rows)


@admin_cmd.command("agents")
@hub_option
@admin_token_option
def admin_agents(hub_url: str | None, admin_token: str | None) -> None:
    """List every enrolled agent: id, name, state, models (hot first), requests in flight, last seen."""
    hub, admin_token = _admin(hub_url, admin_token)
    agents = _rows(_call(hub, admin_token, "GET", "/admin/agents"), "agents")
    rows = []
    for a in agents:
        models = [m for m in a.get("models", []) if isinstance(m, dict)]
        models.sort(key=lambda m: (not m.get("hot"), str(m.get("id"))))
        listed = ", ".join(f"{m.get('id')}{' (hot)' if m.get('hot') else ''}" for m in models) or NONE
        state = str(a.get("state"))
        if a.get("drained_by_admin"):
            state += " (admin)"
        load = f"{a.get('in_flight', 0)}/{a.get('max_concurrency', 0)}"
        rows.append((str(a.get("id")), str(a.get("name")), state, listed, load, format_time(a.get("last_seen"))))
    columns = (ids("id"), "name", "state", "models (hot first)", numeric("in flight"), "last seen")
    print_table("Agents", columns, rows)


@admin_cmd.command("requests")
@hub_option
@click.argument("user_id")
@limit_option
@before_option
@admin_token_option
def admin_requests(hub_url: str | None, user_id: str, limit: int, before: str | None, admin_token: str | None) -> None:
    """A user's recent requests, newest first, as `potluck requests` shows one's own."""
    hub, admin_token = _admin(hub_url, admin_token)
    answer = _call(hub, admin_token, "GET", requests_path(limit, before, user_id))
    print_requests(f"Requests of {user_id}", answer, f"potluck admin requests {user_id} --limit {limit}")
