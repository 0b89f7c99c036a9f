"""Credits: `usage` and `earnings` reports, `balance`, and signed receipts (`receipt get|key|verify`)."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import click

from potluck.cli.history import requests_cmd
from potluck.cli.output import Column, format_credits, format_time, ids, micro_field, numeric, print_table
from potluck.cli.session import call, fetch, hub_option, logged_in, path_id, resolve_hub

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


def _write_stdout(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _count(row: dict[str, Any], key: str) -> int:
    value = row.get(key)
    return value if isinstance(value, int) else 0


def _report_rows(
    hub_url: str | None, path: str, since: datetime | None, until: datetime | None, as_csv: bool
) -> list[dict[str, Any]] | None:
    """The report's rows, or None once the hub's CSV has been written to stdout as it came."""
    hub, token = logged_in(hub_url)
    path = _report_path(path, since, until, as_csv)
    if as_csv:
        _write_stdout(fetch(hub, path, token, accept="text/csv"))
        return None
    return [r for r in call("GET", hub, path, token).get("data", []) if isinstance(r, dict)]


@click.command("usage")
@hub_option
@_since_option
@_until_option
@_csv_option
def usage(hub_url: str | None, since: datetime | None, until: datetime | None, as_csv: bool) -> None:
    """Your requests per day, key and model: tokens and spend in credits."""
    data = _report_rows(hub_url, "/api/usage", since, until, as_csv)
    if data is None:
        return
    rows = [
        (
            str(r.get("day")),
            str(r.get("key_id") or "—"),
            str(r.get("model")),
            str(_count(r, "requests")),
            str(_count(r, "prompt_tokens")),
            str(_count(r, "completion_tokens")),
            format_credits(micro_field(r, "spend")),
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
        format_credits(sum(micro_field(r, "spend") for r in data)),
    )
    columns = (
        "day",
        ids("key"),
        "model",
        numeric("requests"),
        numeric("prompt"),
        numeric("completion"),
        numeric("spend (credits)"),
    )
    print_table("Your usage", columns, rows, footer=totals)


@click.command("earnings")
@hub_option
@_since_option
@_until_option
@_csv_option
def earnings(hub_url: str | None, since: datetime | None, until: datetime | None, as_csv: bool) -> None:
    """What your agents served per day, agent and model, and what they earned in credits."""
    data = _report_rows(hub_url, "/api/earnings", since, until, as_csv)
    if data is None:
        return

    def tokens(r: dict[str, Any]) -> int:
        return _count(r, "prompt_tokens") + _count(r, "completion_tokens")

    rows = [
        (
            str(r.get("day")),
            str(r.get("agent_id") or "—"),
            str(r.get("model")),
            str(_count(r, "requests")),
            str(tokens(r)),
            format_credits(micro_field(r, "earned")),
        )
        for r in data
    ]
    totals = (
        "total",
        "",
        "",
        str(sum(_count(r, "requests") for r in data)),
        str(sum(tokens(r) for r in data)),
        format_credits(sum(micro_field(r, "earned") for r in data)),
    )
    columns = ("day", ids("agent"), "model", numeric("requests"), numeric("tokens"), numeric("earned (credits)"))
    print_table("Your earnings", columns, rows, footer=totals)


@click.command("balance")
@hub_option
def balance(hub_url: str | None) -> None:
    """Your credits: the balance you can spend, and what requests in flight hold."""
    hub, token = logged_in(hub_url)
    answer = call("GET", hub, "/api/balance", token)
    rows = [
        ("balance", format_credits(micro_field(answer, "balance"))),
        ("held", format_credits(micro_field(answer, "held"))),
    ]
    print_table("Your credits", ("", "credits"), rows)


# -- receipts -----------------------------------------------------------------------------------------


@click.group("receipt")
def receipt_cmd() -> None:
    """Signed receipts: what a request cost, signed by the hub."""


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
        ("issued", format_time(receipt.issued_at)),
        ("outcome", receipt.outcome),
        ("model", receipt.model),
        ("tokens", f"{receipt.prompt_tokens} prompt + {receipt.completion_tokens} completion{estimated}"),
        (
            "price",
            f"{receipt.input_per_mtok:g} in / {receipt.output_per_mtok:g} out credits per million tokens"
            f" x {receipt.multiplier:g}",
        ),
        ("charged", f"{format_credits(receipt.charged)} credits"),
        ("fee", f"{format_credits(receipt.fee)} credits"),
        ("earned", f"{format_credits(receipt.earned)} credits"),
        ("consumer", receipt.consumer_id),
        ("key", receipt.key_id),
        ("group", receipt.group_id or "—"),
        ("agent", receipt.agent_id),
        ("owner", receipt.owner_id or "—"),
        ("hub key", receipt.hub),
    ]
    # The values are ids or short phrases: never break one.
    print_table("Receipt", ("field", Column("value", ids=True)), rows)
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
@hub_option
@click.argument("request_id")
@_output_option
def receipt_get(hub_url: str | None, request_id: str, output: Path | None) -> None:
    """Fetch the signed receipt of a request you made or one of your agents served, as the hub sent it."""
    hub, token = logged_in(hub_url)
    data = fetch(hub, f"/api/receipts/{path_id(request_id)}", token)
    _save_or_print(data, output)
    if output is not None:
        click.echo(f"saved the receipt of {request_id} to {output}")


@receipt_cmd.command("key")
@hub_option
@_output_option
def receipt_key(hub_url: str | None, output: Path | None) -> None:
    """Fetch the hub's public key (no login needed), for `potluck receipt verify --key`."""
    import json

    hub = resolve_hub(hub_url)
    data = fetch(hub, "/.well-known/potluck-hub-key", None)
    _save_or_print(data, output)
    if output is not None:
        try:
            fingerprint = json.loads(data).get("fingerprint")
        except (ValueError, AttributeError):
            fingerprint = None
        click.echo(f"saved hub key {fingerprint or '(no fingerprint)'} of {hub} to {output}")


# `potluck requests` lists the ids that `receipt get` takes.
COMMANDS: tuple[click.Command, ...] = (usage, earnings, balance, receipt_cmd, requests_cmd)
