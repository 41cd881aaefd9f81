"""A new user's app for tests/test_unserved_queues.py: one task declared on queue "mail", one on "default".

`make_app` builds a fresh App per call (the CLI calls a factory given to --app), so in-process CLI
runs of different tests each get the schema of their own environment.
"""

from __future__ import annotations

import pgtasks


def make_app() -> pgtasks.App:
    app = pgtasks.App()  # PGTASKS_DATABASE_URL and PGTASKS_SCHEMA come from the test's environment

    @app.task(name="mail.tasks.send", queue="mail")
    def send(user_id: int) -> int:
        return user_id

    @app.task(name="reports.build")
    def build(report_id: int) -> int:
        return report_id

    return app


app = make_app()
