"""Django: the pgtasks dashboard served at /tasks/ of a Django project, by the same ASGI server.

Run it with `python examples/dashboard_django.py [--port 8000]`, then open http://127.0.0.1:8000/
(Django) and http://127.0.0.1:8000/tasks/ (the dashboard; the login is PGTASKS_DASHBOARD_AUTH=user:password,
or `admin` with a random password printed at start). tests/test_dashboard_examples.py serves this file and
requests both.

In your project, put the three lines of `application` below into asgi.py, next to the
`get_asgi_application()` Django's startproject wrote, and serve asgi.py with uvicorn (or any ASGI
server). The dashboard needs no Django app, model or migration: it reads pgtasks' own tables.
"""

from __future__ import annotations

import argparse
import os
import secrets

import django
import uvicorn
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.http import HttpRequest, HttpResponse
from django.urls import path
from starlette.applications import Starlette
from starlette.routing import Mount

import pgtasks
from pgtasks.dashboard import Access, Credential, asgi_app, basic_auth

tasks = pgtasks.App()  # PGTASKS_DATABASE_URL / PGTASKS_SCHEMA


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("the Django site; the task dashboard is at /tasks/")


urlpatterns = [path("", home)]
settings.configure(DEBUG=False, ROOT_URLCONF=__name__, ALLOWED_HOSTS=["127.0.0.1", "localhost"],
                   SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(32),
                   INSTALLED_APPS=[], MIDDLEWARE=[])
django.setup()

login = os.environ.get("PGTASKS_DASHBOARD_AUTH") or f"admin:{secrets.token_urlsafe(12)}"
user, _, password = login.partition(":")
# /tasks goes to the dashboard, everything else to Django.
application = Starlette(routes=[
    Mount("/tasks", app=asgi_app(tasks, authorize=basic_auth([Credential(user, password, Access.FULL)]))),
    Mount("/", app=get_asgi_application()),
])

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    options = parser.parse_args()
    tasks.migrate()
    if not os.environ.get("PGTASKS_DASHBOARD_AUTH"):
        print(f"dashboard login: {user} / {password}", flush=True)
    uvicorn.run(application, host="127.0.0.1", port=options.port, log_level="warning", timeout_graceful_shutdown=2)
