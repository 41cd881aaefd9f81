"""A Blueprint's task in a module that is imported only when an App loads its tasks."""

from __future__ import annotations

import pgtasks

tasks = pgtasks.Blueprint()


@tasks.task(name="lazy.echo")
def echo(value: str) -> str:
    return value
