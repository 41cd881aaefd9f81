"""Periodic tasks: a schedule every second, run by the elected leader among the workers.

Run it with `python examples/periodic.py`: it starts a worker for about four seconds, which elects
itself leader, enqueues one job per tick and runs them; then it prints the ticks that ran.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pgtasks

app = pgtasks.App()


@app.periodic(every=timedelta(seconds=1), kwargs={"source": "every second"})
@app.task(name="periodic.heartbeat")
def heartbeat(source: str) -> str:
    return f"tick from {source}"


@app.periodic(cron="*/2 * * * * *", timezone="Europe/Paris")  # 6 fields: seconds first
@app.task(name="periodic.cron_two_seconds")
async def every_two_seconds() -> None:
    pass


async def run_for(seconds: float) -> None:
    worker = app.worker(poll_interval=0.2, leader_ttl=3.0, elect=True)
    task = asyncio.create_task(worker.arun())
    await asyncio.sleep(seconds)
    worker.request_stop()
    await task


def main() -> None:
    with app.transaction() as conn:
        conn.execute(f'TRUNCATE "{app.schema}".jobs')
        conn.execute(f'TRUNCATE "{app.schema}".periodic_fires')
    asyncio.run(run_for(4.5))
    with app.transaction() as conn:
        rows = conn.execute(
            f'SELECT task, state::text, count(*) FROM "{app.schema}".jobs GROUP BY 1, 2 ORDER BY 1, 2'
        ).fetchall()
    for task, state, count in rows:
        print(f"{task:<28} {state:<10} {count} runs")
    app.close()


if __name__ == "__main__":
    main()
