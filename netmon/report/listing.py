"""Listings in three formats: a table that fits the terminal, JSON, or CSV.

Every listing command (``hosts``, ``report``, ``silence list``, ``muzzle list``)
builds plain records (dicts) and a list of :class:`Column`; this module renders
them. Tables keep each row on one line: columns are dropped, lowest priority
first, until the rest fit the width (a note under the table names them), and
long free text is cut with an ellipsis. JSON and CSV always carry every column,
unformatted (numbers as numbers, times as ISO 8601 UTC), for scripts.
"""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import click

FORMATS = ("table", "json", "csv")
#: Characters a free-text column (reasons, explanations) keeps when space is short.
MIN_TEXT = 40
#: Spaces between two columns.
GUTTER = 3


def format_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--format table|json|csv`` (default table)."""
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                        help="table (fits the terminal), json (an array of objects) or csv (a header line, then rows)")(func)


def iso(seconds: float | None) -> str | None:
    """UNIX seconds as ISO 8601 UTC (``2026-12-03T09:30:00Z``); None for unknown, or past what a
    calendar date can say (a capture's timestamps are whatever its file claims)."""
    if seconds is None or not math.isfinite(seconds):
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return None


def when(seconds: float | None) -> str:
    """UNIX seconds as short UTC text for tables."""
    text = iso(seconds)
    return "-" if text is None else text.replace("T", " ").removesuffix("Z")


def plural(count: int, noun: str) -> str:
    """``1 host``, ``2 hosts``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _plain(value: Any) -> Any:
    """A value for JSON: NaN becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class Column:
    """One field of a listing: ``key`` in the records, ``title`` in the table.

    ``priority``: 0 is always shown; higher numbers are dropped first on a narrow
    terminal. ``text``: free text that may be cut with an ellipsis. ``time``: UNIX
    seconds, shown as UTC and exported as ISO 8601. ``fmt`` formats a number for the table;
    ``missing`` stands for an unknown value there.
    """

    key: str
    title: str
    priority: int = 0
    fmt: str = "{}"
    text: bool = False
    time: bool = False
    justify: Literal["left", "right"] = "left"
    missing: str = "-"

    def cell(self, value: Any) -> str:
        if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            return self.missing
        if self.time:
            return when(value)
        return self.fmt.format(value) if isinstance(value, (int, float)) else str(value)

    def export(self, value: Any) -> Any:
        return iso(value) if self.time else _plain(value)


def natural_widths(columns: Sequence[Column], cells: list[list[str]]) -> list[int]:
    """Each column's width without cutting: its longest cell or its title."""
    return [max([len(c.title), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]


def fit(columns: Sequence[Column], natural: list[int], width: int) -> dict[int, int]:
    """The columns to show and their widths, so that one row fits ``width`` characters.

    Columns are taken by priority while they fit (free text counted at ``MIN_TEXT``);
    free text then shares what is left, up to its natural width."""
    need = [min(n, MIN_TEXT) if c.text else n for c, n in zip(columns, natural)]
    shown: dict[int, int] = {}
    used = -GUTTER
    for i in sorted(range(len(columns)), key=lambda i: columns[i].priority):
        if columns[i].priority == 0 or used + GUTTER + need[i] <= width:
            shown[i] = need[i]
            used += GUTTER + need[i]
    texts = [i for i in shown if columns[i].text]
    for n, i in enumerate(sorted(texts, key=lambda i: natural[i])):
        share = max(0, width - used) // (len(texts) - n)
        grow = min(natural[i] - shown[i], share)
        shown[i] += grow
        used += grow
    return dict(sorted(shown.items()))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def table(records: Sequence[dict[str, Any]], columns: Sequence[Column], width: int, title: str = "") -> str:
    """A plain-text table, every row on one line, at most ``width`` characters wide (when
    the always-shown columns fit), and a note naming the columns left out."""
    cells = [[c.cell(r.get(c.key)) for c in columns] for r in records]
    shown = fit(columns, natural_widths(columns, cells), width)
    gap = " " * GUTTER

    def line(values: list[str]) -> str:
        parts = []
        for i, size in shown.items():
            text = _cut(values[i], size)
            parts.append(text.rjust(size) if columns[i].justify == "right" else text.ljust(size))
        return gap.join(parts).rstrip()

    lines = [title] if title else []
    lines.append(line([c.title for c in columns]))
    lines.append(gap.join("-" * size for size in shown.values()))
    lines += [line(row) for row in cells]
    hidden = [c.title for i, c in enumerate(columns) if i not in shown]
    if hidden:
        note = f"(hidden at {width} columns: {', '.join(hidden)}; --format json or csv has all)"
        lines += textwrap.wrap(note, max(width, 20), break_on_hyphens=False)
    return "\n".join(lines) + "\n"


def as_json(records: Sequence[dict[str, Any]], columns: Sequence[Column]) -> list[dict[str, Any]]:
    """The records with every column, exported (times as ISO 8601 UTC, NaN as null)."""
    return [{c.key: c.export(r.get(c.key)) for c in columns} for r in records]


def as_csv(records: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.key for c in columns])
    for row in as_json(records, columns):
        writer.writerow(["" if v is None else v for v in row.values()])
    return buffer.getvalue()


def width() -> int:
    """The terminal's width; for a pipe or file, ``$COLUMNS`` or 100."""
    import shutil

    return shutil.get_terminal_size((100, 24)).columns


def emit(records: Sequence[dict[str, Any]], columns: Sequence[Column], fmt: str, title: str = "") -> None:
    """Print a listing on stdout in ``fmt`` (table, json or csv)."""
    if fmt == "json":
        click.echo(json.dumps(as_json(records, columns), indent=1))
    elif fmt == "csv":
        click.echo(as_csv(records, columns), nl=False)
    else:
        click.echo(table(records, columns, width(), title), nl=False)
