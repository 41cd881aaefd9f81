"""Tasks under limits for tests/test_limits.py's worker processes: each records when it started and
ended (wall clock, one host) in the file $LIMITS_AUDIT, one line per run, appended atomically.

- limits.per_customer (queue "keyed"): at most one job per customer at a time;
- limits.capped (queue "capped", a queue limit of 3);
- limits.paced (queue "paced"): at most $LIMITS_RATE starts (default "20/s").
"""

from __future__ import annotations

import os
import time

import pgtasks


def _audit(kind: str, key: object, started: float) -> None:
    line = f"{kind} {key} {started!r} {time.time()!r} {os.getpid()}\n"
    fd = os.open(os.environ["LIMITS_AUDIT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def make_app() -> pgtasks.App:
    app = pgtasks.App()  # PGTASKS_DATABASE_URL and PGTASKS_SCHEMA come from the test's environment
    app.queue("capped", concurrency=3)

    @app.task(name="limits.per_customer", queue="keyed", concurrency=pgtasks.Limit(max=1, key="customer"))
    def per_customer(customer: int, n: int) -> int:
        started = time.time()
        time.sleep(0.004)
        _audit("key", customer, started)
        return n

    @app.task(name="limits.capped", queue="capped")
    def capped(n: int) -> int:
        started = time.time()
        time.sleep(0.01)
        _audit("capped", "-", started)
        return n

    @app.task(name="limits.paced", queue="paced", rate_limit=os.environ.get("LIMITS_RATE", "20/s"))
    def paced(n: int) -> int:
        _audit("paced", "-", time.time())
        return n

    return app


app = make_app()
