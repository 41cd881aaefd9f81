"""Mail tasks, declared without importing the App (found by `app.autodiscover(["bookshop.mail"])`).

Celery: `@shared_task(rate_limit="10/s", autoretry_for=(ConnectionError,), max_retries=2)`. In
pgtasks the rate limit holds over every worker together (Celery's is per worker process).
"""

from __future__ import annotations

import pgtasks

tasks = pgtasks.Blueprint()


@tasks.task(name="mail.send_receipt", queue="mail", rate_limit="10/s", retry_on=(ConnectionError,), max_attempts=3)
def send_receipt(charge_id: str, order_id: int, email: str) -> str:
    """Linked to a charge: receives the charge's result first, as a Celery `link=` callback does."""
    return f"receipt for order {order_id} ({charge_id}) sent to {email}"


@tasks.task(name="mail.send_statements", queue="mail", retry_on=(ConnectionError,))
def send_statements() -> int:
    """Scheduled on the first Monday of each month in bookshop/beat.py."""
    return 0
