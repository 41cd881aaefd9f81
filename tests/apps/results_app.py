"""A task module for the logging tests: one task returns a value msgspec cannot encode.

Run as `pgtasks --app tests.apps.results_app:app worker`; PGTASKS_DATABASE_URL and PGTASKS_SCHEMA
come from the test's environment.
"""

from __future__ import annotations

import pgtasks

app = pgtasks.App()


class Opaque:
    """No encoder knows this type: its result cannot be stored."""


@app.task(name="results.opaque")
def opaque() -> Opaque:
    return Opaque()


@app.task(name="results.echo")
def echo(n: int) -> int:
    return n
