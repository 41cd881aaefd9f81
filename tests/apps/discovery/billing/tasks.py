"""Billing's tasks, declared without an App: whichever App includes this module (or autodiscovers the
package) registers them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pgtasks

tasks = pgtasks.Blueprint()


@tasks.task(name="billing.charge", queue="billing")
def charge(customer_id: int, cents: int, at: datetime | None = None) -> dict[str, Any]:
    """The arguments are typed: a job enqueued by name has them checked (and converted) by the worker."""
    return {"customer_id": customer_id, "cents": cents, "at": at.isoformat() if at else None}


@tasks.task(name="billing.add_fee", queue="billing")
def add_fee(cents: int, fee: int = 30) -> int:
    return cents + fee


@tasks.task(name="billing.total", queue="billing")
def total(amounts: list[int]) -> int:
    return sum(amounts)


@tasks.task(name="billing.record_failure", queue="billing")
def record_failure(job_id: int, error: dict[str, Any], note: str = "") -> str:
    return f"{note}job {job_id} failed: {error['type']}"


@tasks.task(name="billing.decline", queue="billing", max_attempts=1)
def decline(cents: int) -> int:
    raise ValueError(f"declined: {cents}")


# Made when the module is imported, before any App added the blueprint: it finds the App when used.
urgent_charge = charge.configure(priority=5)
