"""Jinja filters the dashboard's templates use: durations, moments, counts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment

NOTHING = "\u2013"  # an en dash: shown where a value is absent


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NOTHING
    s = float(seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def moment(value: datetime | None) -> str:
    """An instant in UTC to the second, as the CLI prints it."""
    if value is None:
        return NOTHING
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(value: datetime | None) -> str:
    if value is None:
        return NOTHING
    seconds = (datetime.now(UTC) - value.astimezone(UTC)).total_seconds()
    return f"in {duration(-seconds)}" if seconds < 0 else f"{duration(seconds)} ago"


def count(value: Any) -> str:
    return f"{int(value):,}" if value is not None else NOTHING


def iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value is not None else ""


def register_filters(env: Environment) -> None:
    env.filters.update(duration=duration, moment=moment, ago=ago, count=count, iso=iso)
