"""FastAPI: the pgtasks dashboard mounted at /tasks of your own app, behind your own authorization.

Run it with `python examples/dashboard_fastapi.py [--port 8000]`, or `uvicorn examples.dashboard_fastapi:web`,
and open http://127.0.0.1:8000/tasks/ (PGTASKS_DATABASE_URL / PGTASKS_SCHEMA pick the database).

`authorize(request)` is yours: here a header an authenticating proxy in front of the app would set
(`X-Forwarded-User`; give `X-Forwarded-Role: viewer` for read-only). In a real app, check the
session or token your app already uses. tests/test_dashboard_examples.py serves this file with
uvicorn and requests its pages.
"""

from __future__ import annotations

import argparse
from typing import Literal

import uvicorn
from fastapi import FastAPI
from starlette.requests import Request

import pgtasks
from pgtasks.dashboard import asgi_app

tasks = pgtasks.App()  # PGTASKS_DATABASE_URL / PGTASKS_SCHEMA


@tasks.task(name="shop.send_receipt")
def send_receipt(order_id: int) -> str:
    return f"receipt for order {order_id}"


def authorize(request: Request) -> bool | Literal["read"]:
    """Full access for operators, read-only for viewers, nothing for anyone else."""
    if not request.headers.get("x-forwarded-user"):
        return False
    return "read" if request.headers.get("x-forwarded-role") == "viewer" else True


web = FastAPI()
web.mount("/tasks", asgi_app(tasks, authorize=authorize))


@web.get("/")
def home() -> dict[str, str]:
    return {"app": "shop", "dashboard": "/tasks/"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    options = parser.parse_args()
    tasks.migrate()
    send_receipt.delay(1)
    uvicorn.run(web, host="127.0.0.1", port=options.port, log_level="warning", timeout_graceful_shutdown=2)
