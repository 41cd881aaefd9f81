"""Every option `pgtasks ... --help` lists is documented on the page for that command (issue 11,
section 5: docs/worker.md's synopsis had lost five of the worker's options without anyone noticing).

The command tree is walked, so a new command or option fails here until its page names it."""

from __future__ import annotations

import click
import pytest

from pgtasks.cli import main
from tests.conftest import ROOT

# The page that documents each command (the longest matching prefix of its path wins).
PAGES: dict[tuple[str, ...], str] = {
    (): "docs/configuration.md",  # the global options; a new command lands here until it has a page
    ("worker",): "docs/worker.md",
    ("periodic",): "docs/periodic.md",
    ("bench",): "docs/performance.md",
    ("dashboard",): "docs/dashboard.md",
    ("workflows",): "docs/workflows.md",
    ("embedded",): "docs/configuration.md",
    **{(ops,): "docs/operations.md" for ops in ("jobs", "queues", "stats", "leader", "doctor", "workers", "migrate")},
}


def page_of(path: tuple[str, ...]) -> str:
    return PAGES[max((p for p in PAGES if path[: len(p)] == p), key=len)]


def options(group: click.Group = main, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """(command path, long option) for every option of every command, as --help lists them."""
    found: list[tuple[tuple[str, ...], str]] = []
    ctx = click.Context(group)
    found += [(prefix, flag) for param in group.get_params(ctx) if isinstance(param, click.Option)
              for flag in param.opts + param.secondary_opts if flag.startswith("--") and flag != "--help"]
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        if isinstance(command, click.Group):
            found += options(command, path)
        else:
            found += [(path, flag) for param in command.get_params(click.Context(command))
                      if isinstance(param, click.Option) for flag in param.opts + param.secondary_opts
                      if flag.startswith("--") and flag != "--help"]
    return found


@pytest.mark.parametrize(("path", "flag"), options(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else v)
def test_every_help_option_is_documented(path: tuple[str, ...], flag: str) -> None:
    page = page_of(path)
    text = (ROOT / page).read_text()
    # A flag counts when the page shows it as an option: `--grace`, [--grace 30], --listen/--no-listen.
    assert any(f"{flag}{end}" in text for end in (" ", "`", "]", "/", "=", "\n", ",", ")")), (
        f"`{' '.join(('pgtasks', *path, flag))}` is not documented in {page}")
