"""`pgtasks dashboard`: the dashboard served alone by uvicorn, with the bind refused when unsafe."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route

from pgtasks.core.errors import ConfigurationError
from pgtasks.core.logs import log_event
from pgtasks.dashboard.asgi import asgi_app
from pgtasks.dashboard.auth import Credential, basic_auth
from pgtasks.storage.migrations import require_latest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request
    from starlette.types import ASGIApp

    from pgtasks.app import App

logger = logging.getLogger("pgtasks.dashboard")


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback address (127.0.0.0/8, ::1, "localhost")."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise ConfigurationError(f"--host {host!r}: cannot resolve it ({exc})") from None
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_bind(host: str, credentials: list[Credential]) -> None:
    """Refuse to serve beyond this machine without a login: anyone on the network could steer the queue."""
    if credentials or is_loopback(host):
        return
    raise ConfigurationError(
        f"--host {host} is reachable from other machines, and the dashboard has no authentication configured: "
        "anyone who can reach it could retry, cancel and delete jobs. Give a login with --auth USER:PASSWORD "
        "(or PGTASKS_DASHBOARD_AUTH), add --read-auth for read-only users, or bind 127.0.0.1 and put your "
        "own authenticating proxy in front."
    )


def check_database(app: App) -> None:
    """Fail at start, in one line, when the database cannot be reached or is not migrated: a server
    that starts anyway would answer every page with the same error."""
    with app.store.errors(), app.connect() as conn:
        require_latest(app.schema, app.store.migration_current_version(conn))


def normalize_base_path(base_path: str) -> str:
    path = "/" + base_path.strip().strip("/") if base_path.strip("/ ") else ""
    if any(c in path for c in "?#\\ ") or "//" in path:
        raise ConfigurationError(f"--base-path {base_path!r}: expected a URL path such as /tasks")
    return path


def build(app: App, *, base_path: str = "", read_only: bool = False, credentials: list[Credential] | None = None,
          refresh_interval: float = 2.0, listen: bool | None = None) -> ASGIApp:
    """The ASGI app `pgtasks dashboard` serves: the dashboard, under `base_path` if one is given."""
    authorize = basic_auth(credentials) if credentials else None
    dashboard = asgi_app(app, read_only=read_only, authorize=authorize, refresh_interval=refresh_interval,
                         listen=listen)
    path = normalize_base_path(base_path)
    if not path:
        return dashboard

    async def to_base(_: Request) -> RedirectResponse:
        return RedirectResponse(path + "/", status_code=307)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # A mounted app gets no lifespan events: close the dashboard's live feed from here.
        yield
        await dashboard.dashboard.feed.aclose()  # type: ignore[attr-defined]

    return Starlette(routes=[Route("/", to_base), Mount(path, app=dashboard)], lifespan=lifespan)


def serve(app: App, *, host: str = "127.0.0.1", port: int = 8000, base_path: str = "", read_only: bool = False,
          credentials: list[Credential] | None = None, refresh_interval: float = 2.0,
          listen: bool | None = None) -> None:
    credentials = credentials or []
    check_bind(host, credentials)
    check_database(app)
    asgi = build(app, base_path=base_path, read_only=read_only, credentials=credentials,
                 refresh_interval=refresh_interval, listen=listen)
    shown = f"[{host}]" if ":" in host else host
    log_event(logger, logging.INFO, "dashboard.serving", url=f"http://{shown}:{port}{normalize_base_path(base_path)}/",
              read_only=read_only, auth="basic" if credentials else "none", schema=app.schema)
    # Event streams stay open; without a bound the server would wait for every tab on shutdown.
    uvicorn.run(asgi, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2, lifespan="on")
