"""A plain script: your own psycopg connection, your own transaction, `app.bind(conn)` for the jobs.

Run it with `python examples/plain_script.py` (PGTASKS_DATABASE_URL / PGTASKS_SCHEMA pick the
database; without them pgtasks uses its embedded PostgreSQL). It migrates the schema, places two
orders (one transaction commits, one rolls back), runs a burst worker, and waits for the result.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

import pgtasks

app = pgtasks.App()


@app.task(name="plain.invoice")
def invoice(order_id: int, amount_cents: int) -> str:
    return f"invoice for order {order_id}: {amount_cents / 100:.2f} EUR"


def orders_table() -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(app.schema), sql.Identifier("plain_orders"))


def place_order(conn: psycopg.Connection[tuple[int]], amount_cents: int, *, fail: bool = False) -> int | None:
    """The order row and its invoice job commit together, or neither does."""
    try:
        with conn.transaction(), app.bind(conn):
            row = conn.execute(sql.SQL("INSERT INTO {} (amount_cents) VALUES (%s) RETURNING id").format(orders_table()),
                               [amount_cents]).fetchone()
            assert row is not None
            order_id = int(row[0])
            invoice.delay(order_id, amount_cents)
            if fail:
                raise RuntimeError("card declined")
            return order_id
    except RuntimeError as exc:
        print(f"rolled back: {exc}")
        return None


def main() -> None:
    app.migrate()
    with psycopg.connect(app.dsn, autocommit=True) as conn:  # a connection your code owns
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (id serial PRIMARY KEY, amount_cents int NOT NULL)")
                     .format(orders_table()))
        kept = place_order(conn, 1250)
        place_order(conn, 999, fail=True)
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(orders_table())).fetchone()
    print(f"orders in the table: {count[0] if count else 0}")
    app.run_worker(burst=True, poll_interval=0.1)
    with app.connect() as conn:
        [job] = app.store.job_list(conn, tasks=["plain.invoice"])
    print(f"jobs: {job['task']} {job['state']} (order {kept})")
    print("result:", pgtasks.JobRef(job["id"], job["task"], app).wait(timeout=10))
    app.close()


if __name__ == "__main__":
    main()
