"""Report tasks that import the App, as Celery code does with `from proj.celery import app`.

The App imports this module only when its tasks are needed (a worker's start), so the import of
`bookshop.app` here is no cycle.
"""

from __future__ import annotations

import pgtasks
from bookshop.app import app
from pgtasks import crontab


@app.periodic(cron=crontab(minute=0, hour=7, day_of_week="mon"), name="weekly-sales")
@app.task(name="reports.weekly_sales", retry_on=())
def weekly_sales() -> dict[str, int]:
    """Orders and what was paid for them, read back from the charge job ids stored with each order."""
    with app.connect() as conn:
        rows = conn.execute(f'SELECT cents, charge_job_id FROM "{app.schema}".bookshop_orders').fetchall()
    paid = [cents for cents, job_id in rows if pgtasks.JobRef.from_id(app, job_id).successful()]
    return {"orders": len(rows), "paid": len(paid), "cents": sum(paid)}
