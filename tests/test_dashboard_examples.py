"""The dashboard examples run as a user runs them: a real uvicorn process, real HTTP requests."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from pgtasks import App
from tests.conftest import ROOT
from tests.requirements import require_module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(example: str, app: App, database_url: str, **env: str) -> Iterator[str]:
    port = free_port()
    environment = {**os.environ, "PGTASKS_DATABASE_URL": database_url, "PGTASKS_SCHEMA": app.schema, **env}
    proc = subprocess.Popen([sys.executable, f"examples/{example}", "--port", str(port)], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"{example} exited {proc.returncode}:\n{out}\n{err}")
            try:
                httpx.get(base + "/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{example} did not answer on port {port} within 60 s") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.communicate(timeout=15)


def test_dashboard_mounted_in_fastapi_with_its_own_authorize(app: App, database_url: str) -> None:
    require_module("fastapi")
    with served("dashboard_fastapi.py", app, database_url) as base:
        assert httpx.get(base + "/").json() == {"app": "shop", "dashboard": "/tasks/"}
        assert httpx.get(base + "/tasks/").status_code == 403
        operator = {"X-Forwarded-User": "ann"}
        jobs = httpx.get(base + "/tasks/jobs", headers=operator)
        assert jobs.status_code == 200
        assert "shop.send_receipt" in jobs.text and 'href="/tasks/jobs/' in jobs.text
        assert 'class="act-retry"' in jobs.text
        viewer = httpx.get(base + "/tasks/jobs", headers={**operator, "X-Forwarded-Role": "viewer"})
        assert viewer.status_code == 200 and 'class="act-retry"' not in viewer.text
        assert httpx.get(base + "/tasks/static/vendor/htmx/htmx.min.js", headers=operator).status_code == 200


def test_dashboard_served_beside_a_django_project(app: App, database_url: str) -> None:
    require_module("django")
    with served("dashboard_django.py", app, database_url, PGTASKS_DASHBOARD_AUTH="ops:s3cret") as base:
        assert httpx.get(base + "/").text == "the Django site; the task dashboard is at /tasks/"
        refused = httpx.get(base + "/tasks/queues")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        login = "Basic " + base64.b64encode(b"ops:s3cret").decode()
        page = httpx.get(base + "/tasks/queues", headers={"Authorization": login})
        assert page.status_code == 200 and 'href="/tasks/jobs"' in page.text
