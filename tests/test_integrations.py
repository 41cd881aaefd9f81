"""The integration examples run: FastAPI (async enqueue in the request's transaction), Django (ORM write and
job in one transaction), and a plain script with app.bind(conn)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from pgtasks import App
from pgtasks.testing import adrain
from tests.conftest import ROOT
from tests.helpers import jobs
from tests.requirements import require_module


def run_example(name: str, app: App, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGTASKS_DATABASE_URL": database_url, "PGTASKS_SCHEMA": app.schema}
    result = subprocess.run([sys.executable, f"examples/{name}"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_plain_script_with_bind(app: App, database_url: str, conn: psycopg.Connection[Any]) -> None:
    out = run_example("plain_script.py", app, database_url).stdout
    assert "rolled back: card declined" in out and "orders in the table: 1" in out
    assert "result: invoice for order 1: 12.50 EUR" in out
    assert [(r["task"], r["state"]) for r in jobs(conn, app.schema)] == [("plain.invoice", "completed")]


def test_django_orm_write_and_job_in_one_transaction(app: App, database_url: str,
                                                     conn: psycopg.Connection[Any]) -> None:
    require_module("django")
    out = run_example("django_app.py", app, database_url).stdout
    assert "rolled back: payment declined for bob@example.com" in out
    assert "orders: ['ann@example.com']" in out
    assert "result for order 1: receipt for order 1: 42.00 EUR to ann@example.com" in out
    assert [r["state"] for r in jobs(conn, app.schema)] == ["completed"]  # the rolled-back job never existed


def test_fastapi_enqueue_inside_the_request_transaction(app: App, database_url: str, conn: psycopg.Connection[Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    require_module("fastapi")
    require_module("httpx")
    import httpx

    monkeypatch.setenv("PGTASKS_DATABASE_URL", database_url)
    monkeypatch.setenv("PGTASKS_SCHEMA", app.schema)
    sys.modules.pop("examples.fastapi_app", None)
    example = importlib.import_module("examples.fastapi_app")

    async def scenario() -> None:
        # The app's lifespan, then real HTTP requests through httpx's ASGI transport.
        async with example.lifespan(example.api), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=example.api), base_url="http://shop") as client:
            ok = await client.post("/orders", json={"email": "ann@example.com", "amount_cents": 500})
            assert ok.status_code == 200, ok.text
            declined = await client.post("/orders", json={"email": "bob@example.com", "amount_cents": 1,
                                                          "fail": True})
            assert declined.status_code == 402
            rows = jobs(conn, app.schema)
            assert [r["args"] for r in rows] == [{"order_id": ok.json()["order_id"], "email": "ann@example.com"}]
            emails = conn.execute(f'SELECT email FROM "{app.schema}".shop_orders').fetchall()
            assert emails == [("ann@example.com",)]  # the declined order rolled back with its job
            outcomes = await adrain(example.tasks)
            assert [o.state for o in outcomes] == ["completed"]
            result = (await client.get(f"/jobs/{ok.json()['job_id']}")).json()
            assert result == {"job_id": ok.json()["job_id"], "state": "completed",
                              "result": f"receipt for order {ok.json()['order_id']} sent to ann@example.com"}

    try:
        asyncio.run(scenario())
    finally:
        example.tasks.close()
        sys.modules.pop("examples.fastapi_app", None)
