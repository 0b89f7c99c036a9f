"""How the user commands print: Rich tables, and the hub's prices and credits without float noise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def print_table(title: str, columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


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
