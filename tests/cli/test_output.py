"""The CLI's tables and times: an id is never broken over two lines, at 80 columns or any other width,
and times show to the second in UTC."""

from __future__ import annotations

import io
import re
import secrets
from collections.abc import Callable, Sequence

import pytest
from rich.console import Console

from potluck.cli.output import Column, console, format_time, id_lines, ids, numeric, print_table


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def render(
    columns: Sequence[str | Column], rows: Sequence[Sequence[str]], width: int, footer: Sequence[str] | None = None
) -> str:
    out = Console(file=io.StringIO(), width=width, color_system=None)
    print_table("Title", columns, rows, footer=footer, out=out)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(text, str)
    return text


def assert_whole(text: str, *wanted: str) -> None:
    """Each id is on one line, unbroken (a wrapped or folded id is on no line whole)."""
    lines = text.splitlines()
    for value in wanted:
        assert any(value in line for line in lines), f"{value} is broken in:\n{text}"


Shape = tuple[Sequence[str | Column], Sequence[Sequence[str]], list[str]]
"""A table's columns, rows, and the ids that must show whole."""

TIME = format_time("2026-11-23T12:00:00.412907+00:00")


def requests_table() -> Shape:
    rows = [
        (TIME, new_id("req"), "meta-llama/Llama-3.1-8B-Instruct", new_id("agt"), "ok", "1200+300", "0.000360"),
        (TIME, new_id("req"), "ghost", "—", "model_not_found (404)", "12+0", "0.000000"),
    ]
    columns = ("time", ids("request"), "model", ids("agent"), "outcome", numeric("tokens"), numeric("credits"))
    return columns, rows, [rows[0][1], rows[0][3], rows[1][1]]


def keys_table() -> Shape:
    groups = [new_id("grp"), new_id("grp")]
    key = new_id("key")
    rows = [(key, "laptop", "pk-KafwwIg…", id_lines(groups), TIME, "—")]
    return (ids("id"), "name", "prefix", ids("groups"), "created", "revoked"), rows, [key, *groups]


def members_table() -> Shape:
    users = [new_id("usr"), new_id("usr")]
    rows = [(users[0], "a-rather-long-username-that-has-to-wrap-somewhere", "owner"), (users[1], "bob", "member")]
    return (ids("user id"), "username", "role"), rows, users


def receipt_table() -> Shape:
    values = [new_id("req"), new_id("usr"), new_id("key"), new_id("grp"), new_id("agt")]
    fields = ("request", "consumer", "key", "group", "agent")
    rows = [*zip(fields, values, strict=True), ("price", "0.15 in / 0.6 out credits per million tokens x 1.5")]
    return ("field", Column("value", ids=True)), rows, values


@pytest.mark.parametrize("table", [requests_table, keys_table, members_table, receipt_table])
@pytest.mark.parametrize("width", [50, 80, 120, 200])
def test_every_id_is_whole_on_one_line(table: Callable[[], Shape], width: int) -> None:
    columns, rows, wanted = table()
    assert_whole(render(columns, rows, width), *wanted)


def test_usage_report_with_totals_keeps_its_ids_whole_at_80_columns() -> None:
    keys = [new_id("key"), new_id("key")]
    rows = [("2026-11-23", key, "llama-3.1-8b", "4", "4800", "1200", "0.001440") for key in keys]
    columns = (
        "day",
        ids("key"),
        "model",
        numeric("requests"),
        numeric("prompt"),
        numeric("completion"),
        numeric("spend (credits)"),
    )
    text = render(columns, rows, 80, footer=("total", "", "", "8", "9600", "2400", "0.002880"))
    assert_whole(text, *keys)
    assert re.search(r"spend \(credits\)\s+0\.002880", text), text


def test_a_table_that_fits_is_one_line_per_row() -> None:
    columns, rows, wanted = requests_table()
    text = render(columns, rows, 200)
    row = next(line for line in text.splitlines() if wanted[0] in line)
    assert wanted[1] in row
    assert TIME in row
    assert row.startswith("│ ")


def test_too_narrow_for_the_ids_prints_one_block_per_row() -> None:
    columns, rows, wanted = requests_table()
    text = render(columns, rows, 80)
    assert "│" not in text
    assert re.search(rf"^request\s+{wanted[0]}\s*$", text, re.MULTILINE), text
    assert re.search(rf"^agent\s+{wanted[1]}\s*$", text, re.MULTILINE), text
    assert re.search(r"^time\s+2026-11-23 12:00:00Z\s*$", text, re.MULTILINE), text


def test_other_columns_wrap_and_the_id_column_does_not() -> None:
    columns, rows, wanted = members_table()
    text = render(columns, rows, 60)
    assert "│" in text, "still a table"
    assert_whole(text, *wanted)
    assert "a-rather-long-username-that-has-to-wrap-somewhere" not in text, "the username wrapped"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("2026-11-23T12:00:00.412907+00:00", "2026-11-23 12:00:00Z"),
        ("2026-11-23T12:00:59.999999+00:00", "2026-11-23 12:00:59Z"),
        ("2026-11-23T14:05:07+02:00", "2026-11-23 12:05:07Z"),
        ("2026-11-23T12:00:00Z", "2026-11-23 12:00:00Z"),
        ("2026-11-23T12:00:00", "2026-11-23 12:00:00Z"),
        (None, "—"),
        ("", "—"),
        ("not a time", "not a time"),
    ],
)
def test_times_show_to_the_second_in_utc(value: str | None, shown: str) -> None:
    assert format_time(value) == shown


def test_a_pipe_gets_full_width_tables_unless_columns_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert console().width >= 10_000
    monkeypatch.setenv("COLUMNS", "80")
    assert console().width == 80
