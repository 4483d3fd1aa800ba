"""Query results as text: JSON, JSON Lines, CSV and terminal tables, one set of rules.

Amounts are exact: a DECIMAL is written as a decimal string in JSON (a JSON number would be read
as a float by most parsers and lose digits), in full in CSV and tables. Times are ISO 8601 (UTC).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterable
from decimal import Decimal
from typing import IO, Any

from rich.console import Console
from rich.table import Table

#: Formats a query's rows can be written in as text.
TEXT_FORMATS = ("table", "csv", "json", "jsonl")


def arrow_rows(table: Any) -> list[tuple[Any, ...]]:
    """The rows of an Arrow table as tuples of Python values (Decimal for exact amounts)."""
    columns = [c.to_pylist() for c in table.columns]
    return list(zip(*columns, strict=True))


def text(value: Any) -> str:
    """A value as CSV and tables show it: exact decimals without trailing zeros, '' for NULL."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        # string work, not quantize(): amounts have more digits than Decimal's default context
        shown = format(value, "f")
        return shown.rstrip("0").rstrip(".") if "." in shown else shown
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def json_value(value: Any) -> Any:
    """A value for JSON: numbers that JSON keeps exactly stay numbers, the rest become text."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else str(value)
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return text(value)


def write_rows(columns: list[str], rows: Iterable[tuple[Any, ...]], fmt: str, out: IO[str],
               width: int | None = None) -> None:
    """Write rows as ``fmt`` (one of TEXT_FORMATS).

    ``json`` is one document ``{"columns": [...], "rows": [[...], ...]}``; ``jsonl`` is one
    object per row (JSON Lines). A ``table`` wider than ``width`` (the terminal's) is shown as
    one block per row, so no value is ever cut.
    """
    if fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(columns)
        w.writerows([text(v) for v in row] for row in rows)
    elif fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(dict(zip(columns, (json_value(v) for v in row),
                                          strict=True))) + "\n")
    elif fmt == "json":
        out.write('{"columns": ' + json.dumps(columns) + ', "rows": [')
        for i, row in enumerate(rows):
            out.write((",\n" if i else "\n") + json.dumps([json_value(v) for v in row]))
        out.write("\n]}\n")
    elif fmt == "table":
        _table(columns, [[text(v) for v in row] for row in rows], out, width)
    else:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(TEXT_FORMATS)}")


def _table(columns: list[str], cells: list[list[str]], out: IO[str], width: int | None) -> None:
    console = Console(file=out, width=width or 100_000, highlight=False)
    # what a table needs: each column as wide as its longest cell, plus borders and padding
    need = sum(max([len(c)] + [len(r[i]) for r in cells]) + 3 for i, c in enumerate(columns)) + 1
    if width is None or need <= width:
        table = Table(*columns, show_lines=False)
        for row in cells:
            table.add_row(*row)
        console.width = need if width is None else width
        console.print(table, crop=False, overflow="ignore", no_wrap=True)
        out.write(f"({len(cells)} row{'s' if len(cells) != 1 else ''})\n")
        return
    # too wide for the terminal: one block per row (as psql's expanded display)
    label = max(len(c) for c in columns)
    for n, row in enumerate(cells, 1):
        out.write(f"-[ row {n} ]" + "-" * max(0, min(width, 60) - 10 - len(str(n))) + "\n")
        for c, v in zip(columns, row, strict=True):
            out.write(f"{c.ljust(label)} | {v}\n")
    out.write(f"({len(cells)} row{'s' if len(cells) != 1 else ''})\n")
