"""A second definition of billing.charge: adding both modules to one App is a DuplicateTaskError."""

from __future__ import annotations

import pgtasks

tasks = pgtasks.Blueprint()


@tasks.task(name="billing.charge")
def charge_again(customer_id: int) -> None:
    """Same name as tests/apps/discovery/billing/tasks.py's charge."""
