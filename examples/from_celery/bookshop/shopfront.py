"""The web app: it enqueues the billing and mail tasks by name and imports none of their code.

Celery:

    with transaction.atomic():
        order = Order.objects.create(...)
        transaction.on_commit(lambda: app.send_task(
            "billing.charge", args=[order.id, cents], queue="billing",
            link=app.signature("mail.send_receipt", args=[order.id, email], queue="mail")))
    ...
    result = AsyncResult(order.charge_task_id)   # later, on the order page

pgtasks: the job is inserted in the order's own transaction (no on_commit, no window in which the
order commits and the job is lost), and the order page rebuilds the handle from the stored id with
`JobRef.from_id`. Without a local definition, send_task checks the options and that the
arguments are JSON; the worker checks them against the task's signature.
"""

from __future__ import annotations

import pgtasks
from bookshop.billing.errors import CardDeclined

web = pgtasks.App()  # the same PGTASKS_DATABASE_URL / PGTASKS_SCHEMA as the workers; no tasks of its own


class OutOfStock(Exception):
    pass


def orders_table() -> str:
    return f'"{web.schema}".bookshop_orders'


def place_order(email: str, cents: int, *, in_stock: bool = True) -> int:
    """Insert the order and enqueue its charge, and the receipt linked to it, in ONE transaction."""
    with web.transaction() as conn:
        row = conn.execute(f"INSERT INTO {orders_table()} (email, cents) VALUES (%s, %s) RETURNING id",
                           [email, cents]).fetchone()
        assert row is not None
        order_id = int(row[0])
        receipt = web.signature("mail.send_receipt", args=[order_id, email], queue="mail")
        ref = web.send_task("billing.charge", args=[order_id, cents], queue="billing", link=receipt)
        conn.execute(f"UPDATE {orders_table()} SET charge_job_id = %s WHERE id = %s", [ref.id, order_id])
        if not in_stock:
            raise OutOfStock(f"out of stock for {email}")  # the order, the charge and the receipt roll back
    return order_id


def order_page(order_id: int) -> str:
    """What the customer sees: the charge's outcome, read back from the job id stored with the order."""
    with web.connect() as conn:
        row = conn.execute(f"SELECT email, cents, charge_job_id FROM {orders_table()} WHERE id = %s",
                           [order_id]).fetchone()
    assert row is not None
    email, cents, job_id = row
    head = f"order {order_id} {email} {cents / 100:.2f} EUR"
    ref = pgtasks.JobRef.from_id(web, job_id)        # Celery: AsyncResult(task_id)
    status = ref.status()                             # one read, no waiting: ready(), result, error
    if not status.ready():
        return f"{head}: payment pending ({status.state})"
    try:
        charge_id = ref.wait(timeout=5)               # finished: returns (or raises) at once
    except CardDeclined:                              # the task's own exception type, raised in the worker
        assert status.error is not None
        return f"{head}: declined: {status.error.error_message} (attempts {_attempts(job_id)})"
    return f"{head}: paid {charge_id} (attempts {_attempts(job_id)})"


def _attempts(job_id: int) -> int:
    job = web.get_job(job_id)
    assert job is not None
    return int(job["attempt"])


def track_visit(page: str) -> pgtasks.JobRef:
    """A task of another team's app that no worker here defines: its job waits for their worker."""
    return web.send_task("analytics.track_visit", args=[page])
