"""Shipping's tasks, on the App they import: the App imports this module lazily (include=), so the
import cycle Celery projects have (the App lists the module, the module imports the App) works."""

from __future__ import annotations

from tests.apps.discovery.app import app


@app.task(name="shipping.ship", queue="shipping")
def ship(order_id: int) -> str:
    return f"shipped {order_id}"
