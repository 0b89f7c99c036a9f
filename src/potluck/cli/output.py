"""How the user commands print: tables whose ids never break, times to the second, credits exactly.

Every table goes through `print_table`. An id is never wrapped or folded (an id broken over two
lines cannot be copied): id columns are ``no_wrap``, and when a terminal is too narrow for them and
a readable width of the other columns, the rows are printed one block per row instead
(``header  value`` lines), where an id still fits. When standard output is not a terminal and
``COLUMNS`` is unset, tables are printed at their full width, one line per row, for ``grep`` and
friends.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

# The narrowest a wrapped column may get before the block layout reads better: a date (2026-11-22)
# still fits on one line, so a time wraps between its date and its clock.
_READABLE_WIDTH = 10
# Printed to a pipe: no terminal to fit, so no wrapping at all.
_PIPE_WIDTH = 100_000
NONE = "—"


@dataclass(frozen=True, slots=True)
class Column:
    """A table column. An ``ids`` column is never wrapped or folded; its cells may hold several ids,
    one per line. A ``numeric`` column is right-aligned."""

    header: str
    ids: bool = False
    numeric: bool = False


def ids(header: str) -> Column:
    """A column of ids (never wrapped)."""
    return Column(header, ids=True)


def numeric(header: str) -> Column:
    """A right-aligned column of numbers."""
    return Column(header, numeric=True)


def console() -> Console:
    """Standard output's console: the terminal's width, or unbounded when printing to a pipe."""
    from rich.console import Console

    out = Console()
    if not out.is_terminal and "COLUMNS" not in os.environ:
        return Console(width=_PIPE_WIDTH)
    return out


def print_table(
    title: str,
    columns: Sequence[str | Column],
    rows: Sequence[Sequence[str]],
    *,
    footer: Sequence[str] | None = None,
    out: Console | None = None,
) -> None:
    """A titled table, or one block per row when ``out`` is too narrow to show every id whole.

    ``footer`` (totals) is the table's last row, or the last block.
    """
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    out = out or console()
    if _fits(cols, [*rows, *([footer] if footer else [])], out.width):
        _print_grid(out, title, cols, rows, footer)
    else:
        _print_blocks(out, title, cols, rows, footer)


def _fits(cols: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> bool:
    from rich.cells import cell_len

    needed = 3 * len(cols) + 1  # a border before each column and after the last; one space of padding each side
    for index, column in enumerate(cols):
        cells = [column.header, *(row[index] for row in rows)]
        if column.ids:
            needed += max(cell_len(line) for cell in cells for line in cell.splitlines() or [""])
        else:
            longest = max((cell_len(word) for cell in cells for word in cell.split()), default=1)
            needed += min(longest, _READABLE_WIDTH)
    return needed <= width


def _print_grid(
    out: Console, title: str, cols: Sequence[Column], rows: Sequence[Sequence[str]], footer: Sequence[str] | None
) -> None:
    from rich.table import Table

    table = Table(title=title, show_footer=footer is not None)
    for index, column in enumerate(cols):
        options: dict[str, Any] = {"justify": "right" if column.numeric else "left"}
        if footer is not None:
            options["footer"] = footer[index]
        if column.ids:
            table.add_column(column.header, no_wrap=True, **options)
        else:
            table.add_column(column.header, overflow="fold", **options)
    for row in rows:
        table.add_row(*row)
    out.print(table)


def _print_blocks(
    out: Console, title: str, cols: Sequence[Column], rows: Sequence[Sequence[str]], footer: Sequence[str] | None
) -> None:
    from rich.table import Table
    from rich.text import Text

    out.print(Text(title, style="italic"), no_wrap=True)
    blocks = [*rows, *([footer] if footer else [])]
    for number, row in enumerate(blocks):
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        for column, cell in zip(cols, row, strict=True):
            if footer is not None and row is footer and not cell:
                continue
            grid.add_row(column.header or NONE, Text(cell, no_wrap=column.ids))
        if number:
            out.print()
        out.print(grid)


# -- values -----------------------------------------------------------------------------------------


def format_time(value: object) -> str:
    """A hub timestamp (ISO 8601) in UTC, to the second: ``2026-11-22 04:02:30Z``; ``—`` for none."""
    if value is None or value == "":
        return NONE
    if not isinstance(value, str):
        return str(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return value
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def id_lines(values: object) -> str:
    """A list of ids as a cell of an ids column: one per line (``—`` for none)."""
    if isinstance(values, list | tuple):
        return "\n".join(str(v) for v in values) or NONE
    return NONE if values is None else str(values)


def format_amount(value: object) -> str:
    """A float from the hub without float noise or exponents for whole numbers (``1``, ``0.15``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def format_credits(micro: int) -> str:
    """µcr as credits with 6 decimals, exactly (no float rounding)."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


def micro_field(row: dict[str, Any], key: str) -> int:
    """The integer ``<key>_micro`` (µcr) of a hub answer; 0 when it is missing."""
    value = row.get(f"{key}_micro")
    return value if isinstance(value, int) else 0
