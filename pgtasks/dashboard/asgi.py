"""The dashboard as an ASGI application: routes, pages and actions over one App.

`asgi_app(app)` returns a Starlette application to serve alone (`pgtasks dashboard`) or to mount
in a FastAPI, Starlette or Django (ASGI) project. Pages are rendered on the server; htmx swaps
the live regions when the event stream says what changed, and uPlot draws the charts. Database
work runs in Starlette's thread pool on the App's sync pool, so a slow query never blocks the
event loop that serves the event streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl

from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from pgtasks.client.workflows import WORKFLOW_STATES
from pgtasks.core.errors import ConnectionLostError, DatabaseError, SchemaNotMigratedError
from pgtasks.core.logs import log_event
from pgtasks.core.options import validate_queue
from pgtasks.dashboard import actions, data, workflows
from pgtasks.dashboard.auth import (
    CSRF_FIELD,
    Access,
    Authorize,
    Forbidden,
    Guard,
    access_of,
    check_write,
    csrf_token,
    who,
)
from pgtasks.dashboard.filters import MAX_ID, STATES, FilterError, parse, parse_ids, parse_workflows
from pgtasks.dashboard.live import LiveFeed
from pgtasks.dashboard.render import register_filters

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.types import ASGIApp

    from pgtasks.app import App

T = TypeVar("T")
logger = logging.getLogger("pgtasks.dashboard")
HERE = Path(__file__).parent
KEEPALIVE = 15.0  # seconds between comments on an idle event stream, so proxies keep it open


class PageError(Exception):
    """A request that cannot be answered with its page: shown as the problem page with `status`."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Dashboard:
    """The state one dashboard process shares between requests: the App, the overview cache, the live feed."""

    def __init__(self, app: App, *, refresh_interval: float, listen: bool | None) -> None:
        self.app = app
        self.refresh_interval = refresh_interval
        self.cache = data.TimedCache()
        self.feed = LiveFeed(app.database, app.store, refresh_interval=refresh_interval, listen=listen)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        register_filters(self.templates.env)

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a page's database work on the thread pool; a database that cannot answer becomes a
        PageError (an error page with the reason), never a bare 500."""
        try:
            return await run_in_threadpool(fn, *args, **kwargs)
        except PoolTimeout:
            raise PageError(f"the database gave no connection within {data.CONNECT_TIMEOUT:g} s: it is unreachable "
                            "or its pool is exhausted; the page retries when it is back", 503) from None
        except (ConnectionLostError, SchemaNotMigratedError) as exc:
            raise PageError(str(exc), 503) from None
        except DatabaseError as exc:
            log_event(logger, logging.ERROR, "dashboard.database_error", error=f"{type(exc).__name__}: {exc}")
            raise PageError(f"the database refused this: {exc}", 409) from None

    def page(self, request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        ctx = {"request": request, "base": base, "csrf": csrf_token(request), "csrf_field": CSRF_FIELD,
               "can_write": access_of(request) is Access.FULL, "read_access": access_of(request) is Access.READ,
               "live": self.feed.describe(), "schema": self.app.schema, "refresh_interval": self.refresh_interval,
               "url": request.url.path + (f"?{request.url.query}" if request.url.query else ""), **context}
        return self.templates.TemplateResponse(request, template, ctx, status_code=status)

    def problem(self, request: Request, message: str, status: int) -> Response:
        return self.page(request, "problem.html", {"message": message, "title": "Problem"}, status)

    # -- pages ------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        ov = await self.db(data.overview, self.app, self.cache, self.refresh_interval)
        charts = {"hour": ov.hour, "day": ov.day}
        return self.page(request, "overview.html", {"title": "Overview", "ov": ov, "charts": charts,
                                                    "states": STATES})

    async def doctor(self, request: Request) -> Response:
        findings = await self.db(data.doctor_findings, self.app, self.cache)
        return self.page(request, "doctor.html", {"findings": findings})

    async def queues(self, request: Request) -> Response:
        listed = await self.db(data.queues, self.app)
        return self.page(request, "queues.html", {"title": "Queues", "queues": listed.rows, "limits": listed.limits})

    async def jobs(self, request: Request) -> Response:
        try:
            f = parse(_multi(request))
        except FilterError as exc:
            return self.problem(request, str(exc), 400)
        page, choices = await asyncio.gather(self.db(data.job_page, self.app, f),
                                             self.db(data.filter_choices, self.app))
        for name in f.queues:
            if name not in choices["queues"]:
                choices["queues"].append(name)
        for name in f.tasks:
            if name not in choices["tasks"]:
                choices["tasks"].append(name)
        return self.page(request, "jobs.html", {"title": "Jobs", "f": f, "jobs": page, "choices": choices,
                                                "states": STATES})

    async def job(self, request: Request) -> Response:
        job_id = _path_id(request)
        if job_id is None:
            return self.problem(request, f"{request.path_params['job_id']!r} is not a job id", 404)
        job = await self.db(data.job_detail, self.app, job_id)
        if job is None:
            return self.problem(request, f"no job {job_id} in schema {self.app.schema} (finished jobs are deleted "
                                         "after their retention)", 404)
        place = await self.db(workflows.step_place, self.app, job) if job["workflow_id"] is not None else None
        return self.page(request, "job.html", {"title": f"Job {job_id}", "job": job, "workflow_place": place})

    async def workflow_list(self, request: Request) -> Response:
        try:
            f = parse_workflows(_multi(request))
        except FilterError as exc:
            return self.problem(request, str(exc), 400)
        listed = await self.db(workflows.workflow_page, self.app, f)
        return self.page(request, "workflows.html", {"title": "Workflows", "f": f, "workflows": listed,
                                                     "states": WORKFLOW_STATES})

    async def workflow(self, request: Request) -> Response:
        workflow_id = _path_id(request, "workflow_id")
        if workflow_id is None:
            return self.problem(request, f"{request.path_params['workflow_id']!r} is not a workflow id", 404)
        view = await self.db(workflows.workflow_detail, self.app, workflow_id)
        if view is None:
            return self.problem(request, f"no workflow {workflow_id} in schema {self.app.schema} (finished "
                                         "workflows are deleted after their retention)", 404)
        return self.page(request, "workflow.html", {"title": f"Workflow {workflow_id}", "w": view,
                                                    "graph": view.graph})

    async def workers(self, request: Request) -> Response:
        rows = await self.db(data.workers, self.app)
        return self.page(request, "workers.html", {"title": "Workers", "workers": rows,
                                                   "silent_after": data.SILENT_AFTER})

    async def periodic(self, request: Request) -> Response:
        info = await self.db(data.periodic, self.app)
        return self.page(request, "periodic.html", {"title": "Periodic", **info})

    # -- actions ----------------------------------------------------------------------------

    async def _writable(self, request: Request) -> Form:
        form = await _form(request)
        check_write(request, form.first(CSRF_FIELD))
        return form

    async def job_bulk(self, request: Request) -> Response:
        """Retry, cancel or delete the selected jobs, or all matching the filter: first a confirmation
        that says how many, then (with `confirm`) the action itself."""
        try:
            form = await self._writable(request)
            action = _action(form.first("action"))
            f = parse(_multi(request))
            scope = form.first("scope", "selection")
            ids = parse_ids(form.getlist("ids"))
        except Forbidden as exc:
            return self.problem(request, str(exc), exc.status)
        except FilterError as exc:
            return self.problem(request, str(exc), 400)
        confirmed = form.first("confirm")
        person = who(request)
        if scope == "filter":
            count = await self.db(actions.count_matching, self.app, f)
            if confirmed != str(count):
                # Asked again when the filter matches another number of jobs than the one confirmed:
                # "retry 12" must not quietly retry 5,000 that arrived since.
                return self.page(request, "confirm.html", {"action": action, "scope": "filter", "count": count,
                                                           "f": f, "ids": [], "was": confirmed})
            result = await self.db(actions.run_on_filter, self.app, action, f, who=person)
        elif scope == "selection":
            if not ids:
                return self.problem(request, "no jobs selected: tick some rows, or act on all matching the filter",
                                    400)
            if confirmed is None:
                return self.page(request, "confirm.html", {"action": action, "scope": "selection",
                                                           "count": len(ids), "f": f, "ids": ids, "was": None})
            result = await self.db(actions.run_on_ids, self.app, action, ids, who=person)
        else:
            return self.problem(request, f"scope={scope!r}: use 'selection' or 'filter'", 400)
        self._changed()
        return self.page(request, "action_done.html", {"result": result, "f": f})

    async def job_action(self, request: Request) -> Response:
        job_id = _path_id(request)
        try:
            await self._writable(request)
            action = _action(request.path_params["action"])
        except Forbidden as exc:
            return self.problem(request, str(exc), exc.status)
        except FilterError as exc:
            return self.problem(request, str(exc), 400)
        if job_id is None:
            return self.problem(request, f"{request.path_params['job_id']!r} is not a job id", 404)
        result = await self.db(actions.run_on_ids, self.app, action, [job_id], who=who(request))
        self._changed()
        base = request.scope.get("root_path", "").rstrip("/")
        target = f"{base}/jobs" if action == "delete" and result.affected else f"{base}/jobs/{job_id}"
        return _redirect(request, target)

    async def workflow_cancel(self, request: Request) -> Response:
        """POST /workflows/{id}/cancel: first a confirmation saying how many steps it stops, then (with
        `confirm`) the cancel, as `pgtasks workflows cancel` does."""
        workflow_id = _path_id(request, "workflow_id")
        try:
            form = await self._writable(request)
        except Forbidden as exc:
            return self.problem(request, str(exc), exc.status)
        except FilterError as exc:
            return self.problem(request, str(exc), 400)
        if workflow_id is None:
            return self.problem(request, f"{request.path_params['workflow_id']!r} is not a workflow id", 404)
        if form.first("confirm") is None:
            view = await self.db(workflows.workflow_detail, self.app, workflow_id)
            if view is None:
                return self.problem(request, f"no workflow {workflow_id} in schema {self.app.schema}", 404)
            return self.page(request, "workflow_confirm.html", {"title": f"Workflow {workflow_id}", "w": view})
        done = await self.db(actions.cancel_workflow, self.app, workflow_id, who=who(request))
        if done is None:
            return self.problem(request, f"no workflow {workflow_id} in schema {self.app.schema}", 404)
        self._changed()
        base = request.scope.get("root_path", "").rstrip("/")
        return _redirect(request, f"{base}/workflows/{workflow_id}")

    async def queue_action(self, request: Request) -> Response:
        """POST /queues/pause, /queues/resume or /queues/limit with the queue's name in the form (any
        name, even with a slash); /queues/limit sets the queue's limits to the form's concurrency,
        rate and burst, an empty field meaning no limit of that kind."""
        action = request.path_params["action"]
        if action not in ("pause", "resume", "limit"):
            return self.problem(request, f"no queue action {action!r}: pause, resume or limit", 404)
        try:
            form = await self._writable(request)
            name = form.first("queue") or ""
            validate_queue(name)
            change = actions.limit_change(name, form.first("concurrency"), form.first("rate"),
                                          form.first("burst")) if action == "limit" else None
        except Forbidden as exc:
            return self.problem(request, str(exc), exc.status)
        except ValueError as exc:
            return self.problem(request, str(exc), 400)
        if change is not None:
            await self.db(actions.set_queue_limits, self.app, change, who=who(request))
        else:
            await self.db(actions.set_paused, self.app, name, action == "pause", who=who(request))
        self._changed()
        base = request.scope.get("root_path", "").rstrip("/")
        return _redirect(request, f"{base}/queues")

    def _changed(self) -> None:
        self.cache.clear()
        self.feed.changed("jobs", "queues")

    # -- live -------------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        queue = await self.feed.subscribe()

        async def stream() -> AsyncIterator[str]:
            try:
                yield f"retry: 2000\nevent: hello\ndata: {json.dumps(self.feed.describe())}\n\n"
                while True:
                    try:
                        topics = await asyncio.wait_for(queue.get(), KEEPALIVE)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield f"event: change\ndata: {json.dumps(sorted(topics))}\n\n"
            finally:
                self.feed.unsubscribe(queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


class Form(dict[str, list[str]]):
    """An urlencoded form body: every name with all its values."""

    def first(self, key: str, default: str | None = None) -> str | None:
        values = super().get(key, [])
        return values[0] if values else default

    def getlist(self, key: str) -> list[str]:
        return super().get(key, [])


async def _form(request: Request) -> Form:
    # The dashboard's forms are all urlencoded; parsing them here spares a multipart dependency.
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind not in ("application/x-www-form-urlencoded", ""):
        raise FilterError(f"content-type {kind!r}: the dashboard's actions take an urlencoded form")
    form = Form()
    for key, value in parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True):
        form.setdefault(key, []).append(value)
    return form


def _multi(request: Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    return params


def _path_id(request: Request, name: str = "job_id") -> int | None:
    text = str(request.path_params[name])
    # isdigit() also passes digits int() refuses ("²"); beyond MAX_ID the bigint query would fail.
    return int(text) if text.isascii() and text.isdigit() and 0 < int(text) <= MAX_ID else None


def _action(value: object) -> actions.JobAction:
    for action in actions.JOB_ACTIONS:
        if value == action:
            return action
    raise FilterError(f"action={value!r}: use one of {', '.join(actions.JOB_ACTIONS)}")


def _redirect(request: Request, target: str) -> Response:
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def asgi_app(app: App, *, read_only: bool = False, authorize: Authorize | None = None,
             refresh_interval: float = 2.0, listen: bool | None = None) -> ASGIApp:
    """The dashboard of `app` as an ASGI application.

    read_only: no actions for anyone. authorize(request) -> True (full access), "read" (read-only)
    or False (refused), sync or async; None lets every request in (bind to 127.0.0.1, or put your
    own authentication in front). refresh_interval: seconds between the live feed's polls and the
    lifetime of the cached overview. listen: None detects whether LISTEN works on the App's
    listen DSN (push updates) or not (polling); True requires it; False always polls.
    """
    if refresh_interval <= 0:
        raise ValueError(f"refresh_interval={refresh_interval!r}: must be > 0 seconds")
    board = Dashboard(app, refresh_interval=refresh_interval, listen=listen)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # Only when served alone: a mounted app gets no lifespan events, and its feed ends with the loop.
        yield
        await board.feed.aclose()

    routes = [
        Route("/", board.overview, name="overview"),
        Route("/fragments/doctor", board.doctor),
        Route("/queues", board.queues),
        Route("/queues/{action:str}", board.queue_action, methods=["POST"]),
        Route("/jobs", board.jobs),
        Route("/jobs/action", board.job_bulk, methods=["POST"]),
        Route("/jobs/{job_id}", board.job),
        Route("/jobs/{job_id}/{action}", board.job_action, methods=["POST"]),
        Route("/workflows", board.workflow_list),
        Route("/workflows/{workflow_id}", board.workflow),
        Route("/workflows/{workflow_id}/cancel", board.workflow_cancel, methods=["POST"]),
        Route("/workers", board.workers),
        Route("/periodic", board.periodic),
        Route("/events", board.events),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    async def page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return board.problem(request, str(exc), exc.status)

    starlette = Starlette(routes=routes, lifespan=lifespan, exception_handlers={PageError: page_error})
    guard = Guard(starlette, authorize=authorize, read_only=read_only)
    guard.dashboard = board  # type: ignore[attr-defined] # for tests and the CLI: the feed, the cache
    return guard
