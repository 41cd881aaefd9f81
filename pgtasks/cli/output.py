"""Output for the ops commands: aligned human tables, or JSON with --json; durations parsed and shown."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import click
import msgspec

_JSON = msgspec.json.Encoder()
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# Exit codes every ops command keeps (docs/operations.md):
EXIT_OK = 0
EXIT_NOT_FOUND = 1  # nothing matched / the job is not there / the action did not apply / doctor found a problem
EXIT_USAGE = 2  # bad options, configuration or database errors (click and PgtasksGroup use 2 as well)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def emit_json(value: Any) -> None:
    click.echo(_JSON.encode(value).decode())


def parse_duration(value: str) -> float:
    """'90', '90s', '15m', '12h', '7d', '2w' -> seconds."""
    match = _DURATION.match(value)
    if not match:
        raise click.BadParameter(f"{value!r}: expected a duration such as 90s, 15m, 12h or 7d")
    return float(match[1]) * _UNITS[match[2]]


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, timedelta):
        return human_duration(value.total_seconds())
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, max_width: int = 60) -> None:
    """Print an aligned table; long cells are cut to max_width with an ellipsis."""
    texts = [[_cut(cell(v), max_width) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in texts]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in texts:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cut(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def split_csv(values: Sequence[str]) -> list[str] | None:
    """Options given several times or comma-separated: ('a,b', 'c') -> ['a', 'b', 'c']; none -> None."""
    out = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return out or None
