"""The store's SQL, by name: the statements of ``indexer/sql/*.sql`` under their ``-- name:``
lines."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources


def sql_file(name: str) -> str:
    return resources.files("indexer").joinpath("sql", name).read_text()


@cache
def _statements() -> dict[str, str]:
    parts = re.split(r"^-- name: (\w+)\n", sql_file("ledger.sql"), flags=re.M)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def statement(name: str, **fill: str) -> str:
    """The statement called ``name``; ``fill`` fills its ``{placeholders}`` (fixed predicates and
    table names of the store, never user input)."""
    text = _statements()[name]
    return text.format(**fill) if fill else text
