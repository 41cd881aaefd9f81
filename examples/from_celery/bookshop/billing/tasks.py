"""Billing tasks, declared without importing the App (Celery: `@shared_task`).

Celery:

    @shared_task(name="billing.charge", bind=True, autoretry_for=(ConnectionError, TimeoutError),
                 retry_backoff=True, retry_backoff_max=60, max_retries=4)
    def charge(self, order_id, cents):
        return gateway.charge_card(order_id, cents, self.request.retries + 1)

The difference that matters: a pgtasks task retries on EVERY exception unless it says otherwise.
A charge must not be retried on a declined card, so `retry_on` names the failures that are safe
to retry; a CardDeclined ends the job `discarded` on its first attempt.
"""

from __future__ import annotations

import logging

import pgtasks
from bookshop.billing import gateway

logger = logging.getLogger("bookshop.billing")

tasks = pgtasks.Blueprint()


def alert_payments_team(event: pgtasks.JobEvent) -> None:
    """Celery: Task.on_failure. Runs in the worker when a charge has failed for good."""
    logger.warning("charge failed for good: order %s: %r", event.kwargs.get("order_id"), event.error)


@tasks.task(name="billing.charge", queue="billing", retry_on=(ConnectionError, TimeoutError), max_attempts=5,
            retry=pgtasks.Backoff(base=1, max_delay=60), on_failure=alert_payments_team)
def charge(order_id: int, cents: int) -> str:
    job = pgtasks.current_job()  # Celery: bind=True and self.request (attempt = request.retries + 1)
    return gateway.charge_card(order_id, cents, job.attempt)


@tasks.task(name="billing.invoice_overdue", queue="billing", retry_on=())
def invoice_overdue() -> int:
    """Scheduled nightly in bookshop/beat.py; `retry_on=()`: a failed night waits for the next one."""
    return 0
