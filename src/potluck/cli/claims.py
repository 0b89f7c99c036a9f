"""`potluck group policy|approve|revoke|claims|rule|lift|spot-check` and `potluck agent events`: who may serve
which model name in a group, who is held out of routing for one and why, and spot checks, through the hub's
user API."""

from __future__ import annotations

from typing import Any

import click

from potluck.cli.output import NONE, format_time, ids, print_table
from potluck.cli.session import call, hub_option, logged_in, path_id
from potluck.protocol.accounts import ClaimPolicy


def _pair(group_id: str, agent_id: str, model: str) -> str:
    return f"{path_id(group_id)}/{path_id(agent_id)}/{path_id(model)}"


@click.command("policy")
@hub_option
@click.argument("group_id")
@click.argument("policy", type=click.Choice([p.value for p in ClaimPolicy]))
def group_policy(hub_url: str | None, group_id: str, policy: str) -> None:
    """Who may serve which model name in the group (owner): anyone shared in (open), or approved agents only."""
    hub, token = logged_in(hub_url)
    call("PUT", hub, f"/api/groups/{path_id(group_id)}/claims/policy", token, {"policy": policy})
    click.echo(f"group {group_id}: policy {policy}")


@click.command("approve")
@hub_option
@click.argument("group_id")
@click.argument("agent_id")
@click.argument("model")
def group_approve(hub_url: str | None, group_id: str, agent_id: str, model: str) -> None:
    """Approve an agent to serve a model name in the group (owner, admin)."""
    hub, token = logged_in(hub_url)
    call("PUT", hub, f"/api/groups/{path_id(group_id)}/approvals/{path_id(agent_id)}/{path_id(model)}", token)
    click.echo(f"approved agent {agent_id} for {model} in group {group_id}")


@click.command("revoke")
@hub_option
@click.argument("group_id")
@click.argument("agent_id")
@click.argument("model")
def group_revoke(hub_url: str | None, group_id: str, agent_id: str, model: str) -> None:
    """Withdraw an approval (owner, admin)."""
    hub, token = logged_in(hub_url)
    call("DELETE", hub, f"/api/groups/{path_id(group_id)}/approvals/{path_id(agent_id)}/{path_id(model)}", token)
    click.echo(f"agent {agent_id} no longer approved for {model} in group {group_id}")


@click.command("lift")
@hub_option
@click.argument("group_id")
@click.argument("agent_id")
@click.argument("model")
def group_lift(hub_url: str | None, group_id: str, agent_id: str, model: str) -> None:
    """Put a flagged or parked agent back in routing for a model (owner, admin)."""
    hub, token = logged_in(hub_url)
    call("DELETE", hub, f"/api/groups/{path_id(group_id)}/holds/{path_id(agent_id)}/{path_id(model)}", token)
    click.echo(f"agent {agent_id} back in routing for {model} in group {group_id}")


@click.command("claims")
@hub_option
@click.argument("group_id")
def group_claims(hub_url: str | None, group_id: str) -> None:
    """The group's serving policy, approvals, agents held out (and why), floors and references."""
    hub, token = logged_in(hub_url)
    claims = call("GET", hub, f"/api/groups/{path_id(group_id)}/claims", token)
    click.echo(f"policy: {claims.get('policy')}")
    approvals = [
        (str(a.get("agent_id")), str(a.get("model")), str(a.get("approved_by")), format_time(a.get("approved_at")))
        for a in claims.get("approvals", [])
    ]
    print_table("Approved", (ids("agent"), "model", ids("by"), "when"), approvals)
    holds = [
        (str(h.get("agent_id")), str(h.get("model")), str(h.get("kind")), str(h.get("reason")))
        for h in claims.get("holds", [])
    ]
    print_table("Held out of routing", (ids("agent"), "model", "kind", "why"), holds)
    rules = [
        (str(r.get("model")), _or_none(r.get("min_tokens_per_s")), _or_none(r.get("reference_prompt")))
        for r in claims.get("rules", [])
    ]
    print_table("Model rules", ("model", "min tokens/s", "reference prompt"), rules)


def _or_none(value: object) -> str:
    return NONE if value is None else str(value)


@click.command("rule")
@hub_option
@click.argument("group_id")
@click.argument("model")
@click.option("--min-tokens-per-s", type=click.FloatRange(min=0, min_open=True), help="The throughput floor.")
@click.option("--reference-prompt", help="Pin a prompt for spot checks (with --reference-answer).")
@click.option("--reference-answer", help="Its expected greedy answer.")
def group_rule(
    hub_url: str | None,
    group_id: str,
    model: str,
    min_tokens_per_s: float | None,
    reference_prompt: str | None,
    reference_answer: str | None,
) -> None:
    """Set a model's rule in the group (owner, admin); MODEL `*` sets a floor for every model. Options left out
    are cleared."""
    hub, token = logged_in(hub_url)
    body: dict[str, Any] = {}
    if min_tokens_per_s is not None:
        body["min_tokens_per_s"] = min_tokens_per_s
    if reference_prompt is not None:
        body["reference_prompt"] = reference_prompt
    if reference_answer is not None:
        body["reference_answer"] = reference_answer
    call("PUT", hub, f"/api/groups/{path_id(group_id)}/model-rules/{path_id(model)}", token, body)
    click.echo(f"group {group_id}: rule for {model} set" if body else f"group {group_id}: rule for {model} cleared")


@click.command("spot-check")
@hub_option
@click.argument("group_id")
@click.argument("model")
@click.option("--rounds", default=1, show_default=True, type=click.IntRange(1, 1000), help="Checks to run.")
def group_spot_check(hub_url: str | None, group_id: str, model: str, rounds: int) -> None:
    """Run spot checks of a model in the group now (owner, admin); never billed."""
    hub, token = logged_in(hub_url)
    body = {"model": model, "rounds": rounds}
    report = call("POST", hub, f"/api/groups/{path_id(group_id)}/spot-checks", token, body)
    rows = []
    for n, check in enumerate(report.get("rounds", []), 1):
        for answer in check.get("answers", []):
            agrees = answer.get("agrees")
            verdict = "not judged" if agrees is None else "agrees" if agrees else "DISAGREES"
            text = answer.get("text")
            rows.append((str(n), str(check.get("mode")), str(answer.get("agent_id")), verdict, str(text or NONE)))
    print_table(f"Spot checks of {model}", ("#", "mode", ids("agent"), "verdict", "answer"), rows)
    flagged = report.get("flagged") or []
    click.echo(f"flagged: {', '.join(flagged)}" if flagged else "nobody flagged")


@click.command("events")
@hub_option
def agent_events(hub_url: str | None) -> None:
    """Your agents taken out of routing for a model (flagged by spot checks, parked below a floor) or put back."""
    hub, token = logged_in(hub_url)
    events = call("GET", hub, "/api/claim-events", token).get("events", [])
    rows = [
        (
            format_time(e.get("at")),
            str(e.get("change")),
            str(e.get("kind")),
            str(e.get("agent_id")),
            str(e.get("model")),
            str(e.get("group_id")),
            str(e.get("reason")),
        )
        for e in events
    ]
    print_table("Your agents' holds", ("when", "change", "kind", ids("agent"), "model", ids("group"), "why"), rows)
    if not rows:
        click.echo("none of your agents was flagged or parked since the hub started")


AGENT_COMMANDS: tuple[click.Command, ...] = (agent_events,)
"""Subcommands of `potluck agent`."""

COMMANDS: tuple[click.Command, ...] = (
    group_policy,
    group_approve,
    group_revoke,
    group_lift,
    group_claims,
    group_rule,
    group_spot_check,
)
"""Subcommands of `potluck group`."""
