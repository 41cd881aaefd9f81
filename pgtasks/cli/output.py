"""Output for the ops commands: aligned human tables, or JSON with --json; durations parsed and shown."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NoReturn

import click
import msgspec

# decimal_format="number": numeric columns (extract(epoch ...) is numeric) are JSON numbers, not strings.
_JSON = msgspec.json.Encoder(decimal_format="number")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# Exit codes every ops command keeps (docs/operations.md):
EXIT_OK = 0
EXIT_NOT_FOUND = 1  # nothing matched / the job is not there / the action did not apply / doctor found a problem
EXIT_USAGE = 2  # bad options, configuration or database errors (click and PgtasksGroup use 2 as well)

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON document on stdout instead of text, errors included.")
# ctx.meta key: --json was among the command line's arguments (errors raised before or while the
# subcommand parses its options still owe a JSON document then).
JSON_REQUESTED = "pgtasks.json"


def emit_json(value: Any) -> None:
    click.echo(_JSON.encode(value).decode())


class CommandFailed(click.ClickException):
    """A command that ran but could not do what was asked: nothing matched (kind NotFound), or it
    refused (kind Refused). Exit 1, as docs/operations.md says; the root group prints `message` on
    stderr, or with --json `{"error": {...}}` on stdout."""

    exit_code = EXIT_NOT_FOUND

    def __init__(self, message: str, *, kind: str = "NotFound") -> None:
        super().__init__(message)
        self.kind = kind


def fail(message: str, *, kind: str = "NotFound") -> NoReturn:
    raise CommandFailed(message, kind=kind)


def error_document(kind: str, message: str, exit_code: int) -> dict[str, Any]:
    """What --json prints for any error: `type` is the pgtasks or click exception class, or
    NotFound / Refused for a command that ran and found nothing to do."""
    return {"error": {"type": kind, "message": message, "exit_code": exit_code}}


def queue_json(row: dict[str, Any]) -> dict[str, Any]:
    """A queue_stats row for --json, with the `paused` boolean next to `paused_at`."""
    return {**row, "paused": row["paused_at"] is not None}


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
