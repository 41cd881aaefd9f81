"""`--watch [SECONDS]`: run a status command again every few seconds and redraw it in place until Ctrl-C.

Plain ANSI cursor movement rather than `rich.live`: the commands already print aligned tables,
and redrawing them needs three escape codes (cursor home, clear to end of line, clear below),
not a second table renderer and a new dependency.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

T = TypeVar("T")

DEFAULT_INTERVAL = 2.0
_CLEAR_SCREEN = "\x1b[2J"
_HOME = "\x1b[H"
_CLEAR_LINE_END = "\x1b[K"
_CLEAR_BELOW = "\x1b[J"


def watch_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--watch` alone redraws every 2 s; `--watch 10` every 10 s."""
    return click.option(
        "--watch", "watch", type=click.FloatRange(min=0.1), is_flag=False, flag_value=DEFAULT_INTERVAL,
        default=None, metavar="[SECONDS]",
        help=f"Redraw every SECONDS (default {DEFAULT_INTERVAL:g}) until Ctrl-C; with --json, one JSON document "
             "per line each time.")(command)


def watched(render: Callable[[], T], interval: float | None, *, as_json: bool = False) -> T | None:
    """`render()` once (returning its value), or, with an interval, again and again until Ctrl-C (None).

    On a terminal each frame replaces the last one; piped, frames follow each other under a
    header line, and JSON frames are one line each, so `--watch --json | jq` works.
    """
    if interval is None:
        return render()
    redraw = not as_json and sys.stdout.isatty()
    if redraw:
        click.echo(_CLEAR_SCREEN, nl=False)
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            frame = _capture(render)
            if as_json:
                click.echo(frame, nl=False)
            else:
                _show(f"every {interval:g}s at {datetime.now(UTC):%H:%M:%S} UTC; Ctrl-C to stop\n\n{frame}",
                      redraw=redraw)
            sys.stdout.flush()
            time.sleep(interval)
    if redraw:
        click.echo("")
    return None


def _capture(render: Callable[[], object]) -> str:
    """What `render()` prints (click.echo writes to whatever sys.stdout is at the call)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        render()
    return buffer.getvalue()


def _show(text: str, *, redraw: bool) -> None:
    if not redraw:
        click.echo(text)
        return
    lines = _fit(text.rstrip("\n").split("\n"), shutil.get_terminal_size().lines - 1)
    # Overwrite in place, clearing what the previous, longer lines left: no blank flash between frames.
    click.echo(_HOME + "".join(line + _CLEAR_LINE_END + "\n" for line in lines) + _CLEAR_BELOW, nl=False)


def _fit(lines: list[str], height: int) -> list[str]:
    """At most `height` lines; a frame taller than the terminal would scroll and break the redraw."""
    if height < 2 or len(lines) <= height:
        return lines
    return [*lines[: height - 1], f"… {len(lines) - height + 1} more lines (enlarge the terminal)"]
