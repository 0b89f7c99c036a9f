"""`potluck group ...` and `potluck invite revoke`: your groups on the hub, their members and invites,
billing and prices."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from potluck.cli.output import format_amount, format_time, ids, print_table
from potluck.cli.session import call, hub_option, logged_in, path_id
from potluck.protocol.accounts import BillingMode


@click.group("group")
def group_cmd() -> None:
    """Your groups on the hub: create, list, members, invites, join, leave, delete."""


@group_cmd.command("create")
@hub_option
@click.argument("name")
def group_create(hub_url: str | None, name: str) -> None:
    """Create a group; you become its owner."""
    hub, token = logged_in(hub_url)
    group = call("POST", hub, "/api/groups", token, {"name": name})
    click.echo(f"created group {group.get('name', name)}: {group.get('id')}")


@group_cmd.command("list")
@hub_option
def group_list(hub_url: str | None) -> None:
    """List the groups you are in, with your role in each."""
    hub, token = logged_in(hub_url)
    groups = call("GET", hub, "/api/groups", token).get("groups", [])
    rows = [(str(g.get("id")), str(g.get("name")), str(g.get("role"))) for g in groups]
    print_table("Your groups", (ids("id"), "name", "your role"), rows)
    if not rows:
        click.echo("no groups yet; create one with `potluck group create NAME` or join with a code")


@group_cmd.command("members")
@hub_option
@click.argument("group_id")
def group_members(hub_url: str | None, group_id: str) -> None:
    """List a group's members and their roles."""
    hub, token = logged_in(hub_url)
    members = call("GET", hub, f"/api/groups/{path_id(group_id)}/members", token).get("members", [])
    rows = [(str(m.get("user_id")), str(m.get("username")), str(m.get("role"))) for m in members]
    print_table(f"Members of {group_id}", (ids("user id"), "username", "role"), rows)


@group_cmd.command("invite")
@hub_option
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
    hub, token = logged_in(hub_url)
    invite = call(
        "POST",
        hub,
        f"/api/groups/{path_id(group_id)}/invites",
        token,
        {"max_uses": max_uses, "expires_in_s": expires_in_s},
    )
    expires = format_time(invite.get("expires_at"))
    click.echo(f"invite {invite.get('id')}: {invite.get('max_uses')} use(s), expires {expires}")
    click.echo("code (shown once; share it privately):")
    click.echo(str(invite.get("code")))


@group_cmd.command("join")
@hub_option
@click.argument("code")
def group_join(hub_url: str | None, code: str) -> None:
    """Join a group with an invite code."""
    hub, token = logged_in(hub_url)
    answer = call("POST", hub, "/api/invites/redeem", token, {"code": code.strip()})
    click.echo(f"joined group {answer.get('group_id')}")


@group_cmd.command("leave")
@hub_option
@click.argument("group_id")
def group_leave(hub_url: str | None, group_id: str) -> None:
    """Leave a group (the owner cannot leave; delete the group instead)."""
    hub, token = logged_in(hub_url)
    call("POST", hub, f"/api/groups/{path_id(group_id)}/leave", token)
    click.echo(f"left group {group_id}")


@group_cmd.command("delete")
@hub_option
@click.argument("group_id")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation.")
def group_delete(hub_url: str | None, group_id: str, assume_yes: bool) -> None:
    """Delete a group (owner): its members, invites, aliases and agent sharing go with it."""
    hub, token = logged_in(hub_url)
    if not assume_yes:
        click.confirm(f"Delete group {group_id} for every member?", abort=True)
    call("DELETE", hub, f"/api/groups/{path_id(group_id)}", token)
    click.echo(f"deleted group {group_id}")


@group_cmd.command("remove-member")
@hub_option
@click.argument("group_id")
@click.argument("user_id")
def group_remove_member(hub_url: str | None, group_id: str, user_id: str) -> None:
    """Remove a member from a group (owner or admin; never the owner). Their keys stop reaching it at once."""
    hub, token = logged_in(hub_url)
    call("DELETE", hub, f"/api/groups/{path_id(group_id)}/members/{path_id(user_id)}", token)
    click.echo(f"removed {user_id} from group {group_id}")


def _invite_state(invite: dict[str, Any], now: datetime) -> str:
    if invite.get("revoked"):
        return "revoked"
    uses, max_uses = invite.get("uses"), invite.get("max_uses")
    if isinstance(uses, int) and isinstance(max_uses, int) and uses >= max_uses:
        return "used up"
    try:
        expired = datetime.fromisoformat(str(invite.get("expires_at"))) <= now
    except ValueError:
        expired = False
    return "expired" if expired else "active"


@group_cmd.command("invites")
@hub_option
@click.argument("group_id")
def group_invites(hub_url: str | None, group_id: str) -> None:
    """List a group's invites (owner or admin): id, uses, expiry and state; never the codes."""
    hub, token = logged_in(hub_url)
    invites = call("GET", hub, f"/api/groups/{path_id(group_id)}/invites", token).get("invites", [])
    now = datetime.now(UTC)
    rows = [
        (
            str(i.get("id")),
            f"{i.get('uses')}/{i.get('max_uses')}",
            format_time(i.get("expires_at")),
            _invite_state(i, now),
        )
        for i in invites
        if isinstance(i, dict)
    ]
    print_table(f"Invites of {group_id}", (ids("id"), "uses", "expires", "state"), rows)
    if not rows:
        click.echo(f"no invites; make one with `potluck group invite {group_id}`")


@click.group("invite")
def invite_cmd() -> None:
    """Invite codes of your groups (make one with `potluck group invite`, list with `potluck group invites`)."""


@invite_cmd.command("revoke")
@hub_option
@click.argument("group_id")
@click.argument("invite_id")
def invite_revoke(hub_url: str | None, group_id: str, invite_id: str) -> None:
    """Revoke an invite of a group (owner or admin): its code stops working at once."""
    hub, token = logged_in(hub_url)
    call("DELETE", hub, f"/api/groups/{path_id(group_id)}/invites/{path_id(invite_id)}", token)
    click.echo(f"revoked invite {invite_id} of group {group_id}")


# -- group billing -----------------------------------------------------------------------------------


def _per_mtok(value: object) -> str:
    return "none" if value is None else f"{format_amount(value)} credits per million tokens"


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
    print_table(f"Billing of {group.get('name')} ({group.get('id')})", ("setting", "value"), rows)


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
@hub_option
@click.argument("group_id")
@click.option(
    "--mode",
    type=click.Choice([m.value for m in BillingMode]),
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
    hub, token = logged_in(hub_url)
    # An empty PATCH changes nothing and answers the settings: the hub has no GET for one group.
    group = call("PATCH", hub, f"/api/groups/{path_id(group_id)}", token, changes)
    if changes:
        click.echo(f"updated group {group.get('id', group_id)}")
    _print_group_billing(group)


@group_cmd.command("prices")
@hub_option
@click.argument("group_id")
def group_prices(hub_url: str | None, group_id: str) -> None:
    """What each model costs in a group now, per connected agent (any member)."""
    hub, token = logged_in(hub_url)
    answer = call("GET", hub, f"/api/groups/{path_id(group_id)}/prices", token)
    rows = [
        (
            str(p.get("model")),
            str(p.get("agent_id")),
            format_amount(p.get("input_per_mtok")),
            format_amount(p.get("output_per_mtok")),
            format_amount(p.get("multiplier")),
            str(p.get("reason") or "—"),
        )
        for p in answer.get("data", [])
        if isinstance(p, dict)
    ]
    columns = ("model", ids("agent"), "input/Mtok", "output/Mtok", "multiplier", "reason")
    print_table(f"Prices in {group_id}", columns, rows)
    if not rows:
        click.echo("no connected agent serves this group")
    click.echo(
        f"billing: {answer.get('billing')}; credits per million tokens: a request pays its agent's price"
        " times the multiplier"
    )


COMMANDS: tuple[click.Command, ...] = (group_cmd, invite_cmd)
