"""FastAPI: enqueue with `await task.adelay()` inside the request's own database transaction.

Run with `uvicorn examples.fastapi_app:api` (and a worker: `pgtasks --app examples.fastapi_app:tasks
worker`). POST /orders inserts an order and enqueues its receipt in one transaction: when the
handler fails (here: `"fail": true`), both roll back. tests/test_integrations.py drives it over
httpx's ASGI transport, lifespan included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

import pgtasks

tasks = pgtasks.App()  # PGTASKS_DATABASE_URL / PGTASKS_SCHEMA


@tasks.task(name="shop.send_receipt")
async def send_receipt(order_id: int, email: str) -> str:
    return f"receipt for order {order_id} sent to {email}"


class OrderIn(BaseModel):
    email: str
    amount_cents: int
    fail: bool = False


def orders() -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(tasks.schema), sql.Identifier("shop_orders"))


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    # The app's own pool; autocommit so that each request opens one explicit transaction.
    pool = AsyncConnectionPool(tasks.dsn, kwargs={"autocommit": True, "prepare_threshold": None}, open=False)
    await pool.open()
    async with pool.connection() as conn:
        await conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (id serial PRIMARY KEY, email text NOT NULL, "
                                   "amount_cents int NOT NULL)").format(orders()))
    api.state.pool = pool
    yield
    await pool.close()
    await tasks.aclose()


api = FastAPI(lifespan=lifespan)


async def transaction() -> AsyncIterator[AsyncConnection[Any]]:
    """One transaction per request: committed when the handler returns, rolled back when it raises."""
    async with api.state.pool.connection() as conn, conn.transaction():
        yield conn


@api.post("/orders")
async def create_order(order: OrderIn, conn: Annotated[AsyncConnection[Any], Depends(transaction)]) -> dict[str, Any]:
    cur = await conn.execute(sql.SQL("INSERT INTO {} (email, amount_cents) VALUES (%s, %s) RETURNING id")
                             .format(orders()), [order.email, order.amount_cents])
    row = await cur.fetchone()
    assert row is not None
    with tasks.bind(conn):  # the job joins the request's transaction
        ref = await send_receipt.adelay(row[0], order.email)
    if order.fail:
        raise HTTPException(status_code=402, detail="payment declined")  # rolls back the order and the job
    return {"order_id": row[0], "job_id": ref.id}


@api.get("/jobs/{job_id}")
async def job_result(job_id: int) -> dict[str, Any]:
    """Wait (briefly) for a job's result: LISTEN on completions, with polling as the safety net."""
    try:
        result = await pgtasks.JobRef(job_id, "shop.send_receipt", tasks).await_result(timeout=5)
    except pgtasks.WaitTimeoutError:
        return {"job_id": job_id, "state": "pending"}
    return {"job_id": job_id, "state": "completed", "result": result}
