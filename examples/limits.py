"""Limits over every worker: a queue capped at 2 jobs at once, one job per customer at a time, and a
rate of 5 starts a second.

Run it with `python examples/limits.py` (PGTASKS_DATABASE_URL, or the embedded PostgreSQL as in
examples/quickstart.py). It enqueues, drains with an in-process worker of 8 slots
(pgtasks.testing.drain), and prints what each limit allowed: the most jobs that ran at once, and
how fast the rate-limited ones started. docs/limits.md explains each.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pgtasks
from pgtasks import Limit
from pgtasks.testing import drain

app = pgtasks.App()
app.queue("exports", concurrency=2)  # at most 2 exports at once, over every worker

_lock = threading.Lock()
_running: dict[str, int] = defaultdict(int)
_peak: dict[str, int] = defaultdict(int)
_started: list[float] = []


def _enter(name: str) -> None:
    with _lock:
        _running[name] += 1
        _peak[name] = max(_peak[name], _running[name])


def _leave(name: str) -> None:
    with _lock:
        _running[name] -= 1


@app.task(name="limits.export", queue="exports")
def export(report_id: int) -> None:
    _enter("exports")
    time.sleep(0.05)
    _leave("exports")


@app.task(name="limits.charge", queue="billing", concurrency=Limit(max=1, key="customer_id"))
def charge(customer_id: int, amount: int) -> None:
    _enter(f"customer {customer_id}")
    time.sleep(0.02)
    _leave(f"customer {customer_id}")


@app.task(name="limits.notify", queue="mail", rate_limit="5/s")
def notify(user_id: int) -> None:
    _started.append(time.monotonic())


def main() -> None:
    app.migrate()
    export.delay_many([export.s(i) for i in range(6)])
    charge.delay_many([charge.s(customer, amount) for amount in (10, 20, 30) for customer in (1, 2)])
    notify.delay_many([notify.s(i) for i in range(6)])
    drain(app, ["exports", "billing", "mail"], concurrency=8)
    print(f"exports: at most {_peak['exports']} at once (limit 2)")
    for customer in (1, 2):
        print(f"customer {customer}: at most {_peak[f'customer {customer}']} at once (limit 1 per customer)")
    gaps = [b - a for a, b in zip(_started, _started[1:], strict=False)]
    print(f"notify: {len(_started)} started, about {min(gaps):.1f} s apart at least (rate 5/s)")
    app.close()


if __name__ == "__main__":
    main()
