"""`potluck requests`: your recent requests with their ids, for `potluck receipt get ID`."""

from __future__ import annotations

from typing import Any

import click

from potluck.cli.output import NONE, format_credits, format_time, ids, micro_field, numeric, print_table
from potluck.cli.session import call, hub_option, logged_in

DEFAULT_LIMIT = 20
limit_option = click.option(
    "--limit",
    type=click.IntRange(1, 500),
    default=DEFAULT_LIMIT,
    show_default=True,
    metavar="N",
    help="How many requests (1 to 500).",
)
before_option = click.option(
    "--before", metavar="REQUEST_ID", help="Older than this request (the id the previous page names)."
)


def requests_path(limit: int, before: str | None, user_id: str | None = None) -> str:
    from urllib.parse import urlencode

    query: dict[str, str | int] = {"limit": limit}
    if before:
        query["before"] = before
    if user_id:
        query["user"] = user_id
    return f"/api/requests?{urlencode(query)}"


def _outcome(r: dict[str, Any]) -> str:
    outcome, status = str(r.get("outcome")), r.get("status")
    return outcome if status == 200 else f"{outcome} ({status})"


def _tokens(r: dict[str, Any]) -> str:
    tokens = f"{r.get('prompt_tokens', 0)}+{r.get('completion_tokens', 0)}"
    return f"{tokens} (est.)" if r.get("tokens_estimated") else tokens


def _ms(value: object) -> str:
    return f"{value} ms" if isinstance(value, int) else NONE


def print_requests(title: str, answer: dict[str, Any], again: str) -> None:
    """A page of ``GET /api/requests``, newest first, then how to get the next one (``again``: the command)."""
    rows = [
        (
            format_time(r.get("created_at")),
            str(r.get("request_id")),
            str(r.get("model")),
            str(r.get("agent_id") or NONE),
            _outcome(r),
            _ms(r.get("ttft_ms")),
            _ms(r.get("duration_ms")),
            _tokens(r),
            format_credits(micro_field(r, "charged")),
        )
        for r in answer.get("data", [])
        if isinstance(r, dict)
    ]
    columns = (
        "time",
        ids("request"),
        "model",
        ids("agent"),
        "outcome",
        numeric("ttft"),
        numeric("duration"),
        numeric("tokens"),
        numeric("credits"),
    )
    print_table(title, columns, rows)
    if not rows:
        click.echo("no requests")
    if answer.get("next_before"):
        click.echo(f"older: {again} --before {answer['next_before']}")


@click.command("requests")
@hub_option
@limit_option
@before_option
def requests_cmd(hub_url: str | None, limit: int, before: str | None) -> None:
    """Your recent requests, newest first: time, id, model, agent, outcome, time to first byte, duration,
    tokens (in+out) and credits.

    The id is what `potluck receipt get` takes. Prompts are never stored, so never shown.
    """
    hub, token = logged_in(hub_url)
    answer = call("GET", hub, requests_path(limit, before), token)
    again = "potluck requests" if limit == DEFAULT_LIMIT else f"potluck requests --limit {limit}"
    print_requests("Your requests", answer, again)


COMMANDS: tuple[click.Command, ...] = (requests_cmd,)
