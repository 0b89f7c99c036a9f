"""`potluck agent list|share|unshare|pause|resume|schedule|prices|set-price`: your agents, through the hub.

These talk to the hub's user API with the stored login; none of them runs or probes anything on this
machine (the daemon and `agent scan` are in `potluck.cli.main`).
"""

from __future__ import annotations

from typing import Any

import click

from potluck.cli.output import NONE, format_amount, id_lines, ids, print_table
from potluck.cli.schedule import format_schedule, local_timezone, parse_window
from potluck.cli.session import call, hub_option, logged_in, path_id


@click.command("list")
@hub_option
def agent_list(hub_url: str | None) -> None:
    """List your agents: id, name, state, groups, models (hot ones marked)."""
    hub, token = logged_in(hub_url)
    agents = call("GET", hub, "/api/agents", token).get("agents", [])
    rows = []
    for a in agents:
        models = [m for m in a.get("models", []) if isinstance(m, dict)]
        models.sort(key=lambda m: (not m.get("hot"), str(m.get("id"))))
        listed = ", ".join(f"{m.get('id')}{' (hot)' if m.get('hot') else ''}" for m in models) or NONE
        groups = id_lines(a.get("groups") or [])
        rows.append((str(a.get("id")), str(a.get("name")), str(a.get("state")), groups, listed))
    print_table("Your agents", (ids("id"), "name", "state", ids("groups"), "models (hot first)"), rows)
    if not rows:
        click.echo("no agents yet; make an enrolment token with `potluck agent-token create NAME`")
    holds = [
        (str(a.get("id")), str(h.get("model")), str(h.get("group_id")), str(h.get("kind")), str(h.get("reason")))
        for a in agents
        for h in a.get("holds") or []
        if isinstance(h, dict)
    ]
    if holds:
        columns = (ids("agent"), "model", ids("group"), "held", "why")
        print_table("Out of routing (flagged by spot checks, or parked below a throughput floor)", columns, holds)


@click.command("share")
@hub_option
@click.argument("agent_id")
@click.argument("group_id")
def agent_share(hub_url: str | None, agent_id: str, group_id: str) -> None:
    """Share one of your agents into a group you own or administer."""
    hub, token = logged_in(hub_url)
    call("POST", hub, f"/api/agents/{path_id(agent_id)}/groups", token, {"group_id": group_id})
    click.echo(f"shared agent {agent_id} into group {group_id}")


@click.command("unshare")
@hub_option
@click.argument("agent_id")
@click.argument("group_id")
def agent_unshare(hub_url: str | None, agent_id: str, group_id: str) -> None:
    """Stop sharing one of your agents into a group."""
    hub, token = logged_in(hub_url)
    call("DELETE", hub, f"/api/agents/{path_id(agent_id)}/groups/{path_id(group_id)}", token)
    click.echo(f"stopped sharing agent {agent_id} into group {group_id}")


# -- owner controls: pause, resume, schedule --------------------------------------------------------


def _windows_option(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[dict[str, Any]]:
    return [parse_window(value) for value in values]


def _print_controls(answer: dict[str, Any]) -> None:
    """The hub's answer to ``PATCH /api/agents/{id}`` (it leaves out settings at their default)."""

    def yes_no(key: str) -> str:
        return "yes" if answer.get(key) else "no"

    rows = [
        ("paused", yes_no("paused")),
        ("own requests only", yes_no("own_requests_only")),
        ("own requests first", yes_no("own_requests_first")),
        ("schedule", format_schedule(answer.get("schedule"))),
    ]
    print_table("Owner controls", ("control", "value"), rows)


def _update_agent(hub_url: str | None, agent_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    hub, token = logged_in(hub_url)
    return call("PATCH", hub, f"/api/agents/{path_id(agent_id)}", token, changes)


@click.command("pause")
@hub_option
@click.argument("agent_id")
def agent_pause(hub_url: str | None, agent_id: str) -> None:
    """Pause one of your agents: no new work (what it runs finishes) until `potluck agent resume`."""
    answer = _update_agent(hub_url, agent_id, {"paused": True})
    click.echo(f"paused agent {answer.get('id', agent_id)}")
    _print_controls(answer)


@click.command("resume")
@hub_option
@click.argument("agent_id")
def agent_resume(hub_url: str | None, agent_id: str) -> None:
    """Resume a paused agent (it still takes work only inside its schedule's windows)."""
    answer = _update_agent(hub_url, agent_id, {"paused": False})
    click.echo(f"resumed agent {answer.get('id', agent_id)}")
    _print_controls(answer)


@click.command("schedule")
@hub_option
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
        (str(model), format_amount(p.get("input_per_mtok")), format_amount(p.get("output_per_mtok")))
        for model, p in sorted(listed.items())
        if isinstance(p, dict)
    ]
    print_table(f"Prices of {agent_id}", ("model", "input/Mtok", "output/Mtok"), rows)
    if not rows:
        click.echo("no prices set: each group's default prices apply")
    else:
        click.echo("credits per million tokens; groups clamp them to their bounds")


def _agent_prices_path(agent_id: str) -> str:
    return f"/api/agents/{path_id(agent_id)}/prices"


@click.command("prices")
@hub_option
@click.argument("agent_id")
def agent_prices(hub_url: str | None, agent_id: str) -> None:
    """Show the prices you set for one of your agents' models."""
    hub, token = logged_in(hub_url)
    answer = call("GET", hub, _agent_prices_path(agent_id), token)
    _print_agent_prices(str(answer.get("agent_id", agent_id)), answer.get("prices"))


@click.command("set-price")
@hub_option
@click.argument("agent_id")
@click.argument("model")
@click.argument("input_per_mtok", type=click.FloatRange(min=0.0))
@click.argument("output_per_mtok", type=click.FloatRange(min=0.0))
def agent_set_price(
    hub_url: str | None, agent_id: str, model: str, input_per_mtok: float, output_per_mtok: float
) -> None:
    """Set one model's price on one of your agents, in credits per million tokens (the others stay)."""
    hub, token = logged_in(hub_url)
    # The hub replaces the whole map: read it, change this model, send it all back.
    current = call("GET", hub, _agent_prices_path(agent_id), token).get("prices")
    prices = dict(current) if isinstance(current, dict) else {}
    prices[model] = {"input_per_mtok": input_per_mtok, "output_per_mtok": output_per_mtok}
    answer = call("PUT", hub, _agent_prices_path(agent_id), token, prices)
    click.echo(
        f"set {model} on agent {agent_id}: {format_amount(input_per_mtok)} in / {format_amount(output_per_mtok)} out"
        " credits per million tokens"
    )
    _print_agent_prices(str(answer.get("agent_id", agent_id)), answer.get("prices"))


# Attached to the `agent` group in `potluck.cli.main`.
COMMANDS: tuple[click.Command, ...] = (
    agent_list,
    agent_share,
    agent_unshare,
    agent_pause,
    agent_resume,
    agent_schedule,
    agent_prices,
    agent_set_price,
)
