"""The dashboard's cost with 1,000,000 finished jobs: every page through Starlette's test client, and
every named query of pgtasks/sql/dashboard.sql on its own, with EXPLAIN (ANALYZE, BUFFERS) of the heaviest.

The data lives in the schema `bench_dash` (--schema), seeded once and reused by later runs (it is
not a throwaway schema: a million rows take a while to write). It is seeded again when it is
missing, when it was seeded with other --rows, or when the seed is older than --max-age hours,
since the rows are spread over the 24 hours before the seed and the day chart shows the last 24
hours before now. The finished rows are one INSERT ... SELECT over generate_series (benchmark
setup, not library code); then VACUUM ANALYZE, because this cluster runs with autovacuum off and a
real deployment's autovacuum would have vacuumed and analyzed a table that size long since.

A page's "cold" runs clear the dashboard's overview cache before each request (the state of a
process after its refresh interval or day-chart TTL ran out); "warm" runs do not. Both run with
PostgreSQL's buffers warm: every run reads the same pages.

    python benchmarks/dashboard_pages.py [--runs 7] [--reseed] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus

import psycopg
from psycopg import sql
from starlette.testclient import TestClient

import pgtasks
from pgtasks.dashboard import asgi_app
from pgtasks.dashboard.data import SEARCH_SCAN
from pgtasks.dashboard.filters import parse

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SEED_VERSION = 1
QUEUES = tuple(f"q{i}" for i in range(5))
# Realistic names; the last one is rare (0.1% of the jobs), for a filter that walks far.
TASKS = ("mail.send_welcome", "mail.send_receipt", "mail.send_digest", "billing.charge_card", "billing.refund",
         "billing.invoice_pdf", "media.resize_image", "media.transcode_video", "media.thumbnail",
         "search.index_document", "search.reindex_user", "notify.push", "notify.sms", "sync.crm_contact",
         "sync.inventory", "reports.daily_sales", "reports.export_csv", "webhooks.deliver",
         "cleanup.expired_sessions", "audit.archive_month")
RARE_TASK = TASKS[-1]
SCHEDULES = (("cleanup.expired_sessions", 60), ("sync.inventory", 300), ("reports.daily_sales", 3600))
WORKERS = 4
USERS = 50_000  # distinct user_id values in the arguments: a searched user matches ~20 jobs
TRACEBACK = ("Traceback (most recent call last):\n"
             + "".join(f'  File "/srv/app/app/{m}.py", line {n}, in {f}\n    result = {f}(payload, **options)\n'
                       for m, n, f in (("worker", 88, "run"), ("tasks/billing", 141, "charge"),
                                       ("clients/gateway", 57, "post"), ("clients/http", 203, "request")))
             + "TimeoutError: upstream did not answer within 10.0 s")


def task_queue(name: str) -> str:
    return QUEUES[TASKS.index(name) % len(QUEUES)]


# -- the App and the seed -----------------------------------------------------------------------------


def bench_app(dsn: str, schema: str) -> pgtasks.App:
    """An App with the seed's 20 tasks and 3 schedules registered, as the dashboard of a real project sees them."""
    app = pgtasks.App(dsn, schema=schema)

    def noop(**kwargs: Any) -> None:
        del kwargs

    for name in TASKS:
        task = app.task(name=name, queue=task_queue(name))(noop)
        for schedule, every in SCHEDULES:
            if schedule == name:
                app.periodic(every=timedelta(seconds=every), name=schedule)(task)
    return app


def _seed_marker(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s",
                       (schema,)).fetchone()
    if row is None or not row[0]:
        return None
    try:
        marker = json.loads(row[0])
    except ValueError:
        return None
    return marker if isinstance(marker, dict) else None


def _finished_sql() -> sql.SQL:
    """The finished jobs, oldest first, created over the 24 h before now (the last 3 minutes left
    free so that every retry and end still falls before now). 97% completed (5% of those after 1
    or 2 failed attempts), 2% discarded after 3 attempts, 1% cancelled before running."""
    return sql.SQL("""
INSERT INTO {jobs} (task, queue, args, state, priority, attempt, max_attempts, claims, run_at, created_at,
                    attempted_at, attempted_by, finalized_at, errors, result)
SELECT tasks[k + 1], 'q' || (k % 5), args, state::{state_type}, 0, attempt, 3, attempt,
       CASE WHEN attempt = 0 THEN created ELSE created + (attempt - 1) * interval '30 s' END, created,
       attempted, CASE WHEN attempt > 0 THEN 'bench-host-' || (g % 4 + 1) || ':' || (1000 + g % 4) END,
       CASE state WHEN 'cancelled' THEN created + interval '1 s'
                  WHEN 'discarded' THEN attempted + run
                  ELSE attempted + run END,
       CASE WHEN failures = 0 THEN '[]'::jsonb ELSE (
           SELECT jsonb_agg(jsonb_build_object(
                      'attempt', i,
                      'at', CASE WHEN state = 'cancelled' THEN created + interval '1 s'
                                 WHEN i = attempt THEN attempted + run
                                 ELSE created + (i - 1) * interval '30 s' + run END,
                      'type', CASE WHEN state = 'cancelled' THEN 'Cancelled' ELSE 'TimeoutError' END,
                      'message', CASE WHEN state = 'cancelled' THEN 'cancelled from the dashboard by ops'
                                      ELSE 'upstream did not answer within 10.0 s' END,
                      'traceback', CASE WHEN state = 'cancelled' THEN NULL ELSE {traceback} END) ORDER BY i)
           FROM generate_series(1, failures) AS i) END,
       CASE WHEN state = 'completed' THEN jsonb_build_object('ok', true, 'took_ms', (run_s * 1000)::int) END
FROM (
    SELECT g, k, created, state, attempt, failures, args, run, run_s,
           CASE WHEN attempt = 0 THEN NULL
                ELSE created + (attempt - 1) * interval '30 s' + wait END AS attempted
    FROM (
        SELECT g, created, state, args,
               CASE WHEN u2 < 0.001 THEN 19 ELSE floor(u2 * 19)::int % 19 END AS k,
               CASE state WHEN 'cancelled' THEN 0 WHEN 'discarded' THEN 3
                          ELSE 1 + (u3 < 0.05)::int + (u3 < 0.02)::int END AS attempt,
               CASE state WHEN 'cancelled' THEN 1 WHEN 'discarded' THEN 3
                          ELSE (u3 < 0.05)::int + (u3 < 0.02)::int END AS failures,
               make_interval(secs => 0.005 + 0.2 * u5) AS wait,
               make_interval(secs => 0.01 + 0.5 * u6 * u6) AS run, 0.01 + 0.5 * u6 * u6 AS run_s
        FROM (
            SELECT g, u2, u3, u5, u6,
                   now() - interval '24 hours' + (g - 1) * ((interval '24 hours' - interval '3 minutes') / {rows})
                       AS created,
                   CASE WHEN u1 < 0.97 THEN 'completed' WHEN u1 < 0.99 THEN 'discarded' ELSE 'cancelled' END
                       AS state,
                   jsonb_build_object('user_id', floor(u4 * {users})::int,
                                      'email', 'user' || floor(u4 * {users})::int || '@example.com',
                                      'order_id', 500000 + g,
                                      'locale', (ARRAY['en-GB', 'de-DE', 'fr-FR', 'es-ES'])[g % 4 + 1],
                                      'amount_cents', (u5 * 20000)::int) AS args
            FROM (SELECT g, random() AS u1, random() AS u2, random() AS u3, random() AS u4, random() AS u5,
                         random() AS u6
                  FROM generate_series(1, {rows}) AS g) AS draws
        ) AS base
    ) AS shaped
) AS timed,
LATERAL (SELECT {tasks}::text[] AS tasks) AS names
""")


def _unfinished_sql() -> sql.SQL:
    """~2,000 unfinished jobs of the last 10 minutes: 1,200 available, 500 scheduled up to 2 h ahead,
    100 running (held by the seeded workers), 200 retryable after one failed attempt."""
    return sql.SQL("""
INSERT INTO {jobs} (task, queue, args, state, attempt, max_attempts, claims, run_at, created_at, attempted_at,
                    attempted_by, errors)
SELECT tasks[k + 1], 'q' || (k % 5), jsonb_build_object('user_id', g * 7 % {users}, 'order_id', 2000000 + g),
       state::{state_type}, CASE WHEN state IN ('running', 'retryable') THEN 1 ELSE 0 END, 3,
       CASE WHEN state IN ('running', 'retryable') THEN 1 ELSE 0 END,
       CASE state WHEN 'scheduled' THEN now() + random() * interval '2 hours'
                  WHEN 'retryable' THEN now() + random() * interval '5 minutes'
                  ELSE created END,
       created,
       CASE WHEN state IN ('running', 'retryable') THEN now() - random() * interval '30 s' END,
       CASE WHEN state = 'running' THEN 'bench-host-' || (g % {workers} + 1) || ':' || (1000 + g % {workers}) END,
       CASE WHEN state = 'retryable' THEN jsonb_build_array(jsonb_build_object(
           'attempt', 1, 'at', now() - random() * interval '5 minutes', 'type', 'TimeoutError',
           'message', 'upstream did not answer within 10.0 s', 'traceback', {traceback}))
            ELSE '[]'::jsonb END
FROM (SELECT g, g % 19 AS k, now() - random() * interval '10 minutes' AS created,
             CASE WHEN g % 20 < 12 THEN 'available' WHEN g % 20 < 17 THEN 'scheduled'
                  WHEN g % 20 = 17 THEN 'running' ELSE 'retryable' END AS state
      FROM generate_series(1, 2000) AS g) AS s,
LATERAL (SELECT {tasks}::text[] AS tasks) AS names
""")


def _params(schema: str, rows: int) -> dict[str, sql.Composable]:
    return {"jobs": sql.Identifier(schema, "jobs"), "state_type": sql.Identifier(schema, "job_state"),
            "rows": sql.Literal(rows), "users": sql.Literal(USERS), "workers": sql.Literal(WORKERS),
            "traceback": sql.Literal(TRACEBACK), "tasks": sql.Literal(list(TASKS))}


def seed(app: pgtasks.App, rows: int) -> float:
    """Fill a freshly migrated schema; returns the seconds it took."""
    schema = app.schema
    started = time.perf_counter()
    p = _params(schema, rows)
    with psycopg.connect(app.dsn, autocommit=True) as conn:
        conn.execute(_finished_sql().format(**p))
        conn.execute(_unfinished_sql().format(**p))
        conn.execute(sql.SQL(
            "INSERT INTO {workers} (worker_id, hostname, pid, queues, concurrency, running, started_at, last_seen_at) "
            "SELECT 'bench-host-' || w || ':' || (999 + w), 'bench-host-' || w, 999 + w, {queues}::text[], 10, "
            "       coalesce((SELECT array_agg(id ORDER BY id) FROM {jobs} WHERE state = 'running' "
            "                 AND attempted_by = 'bench-host-' || w || ':' || (999 + w)), '{{}}'), "
            "       now() - interval '3 hours', now() "
            "FROM generate_series(1, {n}) AS w").format(
                workers=sql.Identifier(schema, "workers"), jobs=sql.Identifier(schema, "jobs"),
                queues=sql.Literal(list(QUEUES)), n=sql.Literal(WORKERS)))
        conn.execute(sql.SQL("UPDATE {jobs} SET attempted_by = 'bench-host-' || (id % {n} + 1) || ':' "
                             "|| (1000 + id % {n}) WHERE state = 'running'").format(
            jobs=sql.Identifier(schema, "jobs"), n=sql.Literal(WORKERS)))
        conn.execute(sql.SQL(
            "UPDATE {workers} AS w SET running = coalesce((SELECT array_agg(j.id ORDER BY j.id) FROM {jobs} AS j "
            "WHERE j.state = 'running' AND j.attempted_by = w.worker_id), '{{}}')").format(
                workers=sql.Identifier(schema, "workers"), jobs=sql.Identifier(schema, "jobs")))
        conn.execute(sql.SQL(
            "INSERT INTO {leader} (leader_id, term, elected_at, expires_at) "
            "VALUES ('bench-host-1:1000', 7, now() - interval '3 hours', now() + interval '1 hour')").format(
                leader=sql.Identifier(schema, "leader")))
        for name, every in SCHEDULES:
            # The newest 200 ticks, each pointing at a finished job of about its time (ids follow
            # the creation time); every 50th skipped (the previous one still running).
            conn.execute(sql.SQL(
                "INSERT INTO {fires} (schedule, fire_time, outcome, job_id, missed, leader_term, recorded_at) "
                "SELECT {name}, t, CASE WHEN n % 50 = 0 THEN 'skipped' ELSE 'enqueued' END, "
                "       CASE WHEN n % 50 = 0 THEN NULL ELSE greatest(1, {rows} - n * {step}) END, "
                "       0, 7, t "
                "FROM (SELECT n, date_trunc('minute', now()) - n * {every} AS t "
                "      FROM generate_series(1, {ticks}) AS n) AS ticks").format(
                    fires=sql.Identifier(schema, "periodic_fires"), rows=sql.Literal(rows),
                    step=sql.Literal(max(1, rows * every // 86400)), name=sql.Literal(name),
                    every=sql.Literal(timedelta(seconds=every)),
                    ticks=sql.Literal(min(86400 // every, 200))))
        conn.execute(sql.SQL("INSERT INTO {queues} (name, paused_at) VALUES ('q4', now() - interval '1 hour')").format(
            queues=sql.Identifier(schema, "queues")))
        for table in ("jobs", "workers", "leader", "periodic_fires", "queues"):
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(schema, table)))
        marker = {"seed_version": SEED_VERSION, "rows": rows, "seeded_at": datetime.now(UTC).isoformat()}
        conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(sql.Identifier(schema),
                                                                  sql.Literal(json.dumps(marker))))
    return time.perf_counter() - started


def prepare(dsn: str, schema: str, rows: int, *, reseed: bool, max_age_hours: float) -> tuple[pgtasks.App, str]:
    """The seeded App (migrated to this checkout's latest, which may add an index to a reused seed)
    and a line saying whether the seed was made or reused."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        marker = _seed_marker(conn, schema)
        fresh_enough = False
        if marker is not None and marker.get("seed_version") == SEED_VERSION and marker.get("rows") == rows:
            age = datetime.now(UTC) - datetime.fromisoformat(marker["seeded_at"])
            fresh_enough = age <= timedelta(hours=max_age_hours)
        if reseed or not fresh_enough:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    app = bench_app(dsn, schema)
    started = time.perf_counter()
    applied = app.migrate()
    migrated = time.perf_counter() - started
    if reseed or not fresh_enough:
        return app, f"seeded {rows:,} finished jobs in {seed(app, rows):.1f} s"
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Heartbeats and the lease would have gone stale since the seed: the pages should show them live.
        conn.execute(sql.SQL("UPDATE {} SET last_seen_at = now()").format(sql.Identifier(schema, "workers")))
        conn.execute(sql.SQL("UPDATE {} SET expires_at = now() + interval '1 hour'").format(
            sql.Identifier(schema, "leader")))
    assert marker is not None
    note = f"; applied migrations {applied} in {migrated:.1f} s" if applied else ""
    return app, f"reused the seed of {marker['seeded_at']}{note}"


# -- what to time -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """Values from the seeded data that the page URLs need: ids, a time window, a searched user."""

    newest_id: int
    old_id: int
    job_id: int
    hour_from: datetime
    hour_to: datetime
    user_id: int
    rare_task_rows: int


def probe(app: pgtasks.App) -> Probe:
    jobs = sql.Identifier(app.schema, "jobs")
    with psycopg.connect(app.dsn, autocommit=True) as conn:
        newest = conn.execute(sql.SQL("SELECT max(id) FROM {}").format(jobs)).fetchone()
        assert newest is not None and newest[0] is not None, "the jobs table is empty"
        # A discarded job from the middle of the day: its page has three attempts with tracebacks.
        job = conn.execute(sql.SQL("SELECT id FROM {} WHERE id > %s AND state = 'discarded' ORDER BY id LIMIT 1")
                           .format(jobs), (newest[0] // 2,)).fetchone()
        rare = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE task = %s").format(jobs), (RARE_TASK,)).fetchone()
    assert job is not None and rare is not None
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return Probe(newest_id=int(newest[0]), old_id=int(newest[0]) // 10, job_id=int(job[0]),
                 hour_from=now - timedelta(hours=12), hour_to=now - timedelta(hours=11), user_id=4242,
                 rare_task_rows=int(rare[0]))


def pages(p: Probe) -> list[tuple[str, str]]:
    """(label, URL) of every page timed."""
    window = f"from={p.hour_from.isoformat()}&to={p.hour_to.isoformat()}".replace("+", "%2B")
    contain = json.dumps({"user_id": p.user_id}).replace(" ", "%20").replace('"', "%22")
    return [
        ("overview", "/"),
        ("queues", "/queues"),
        ("jobs", "/jobs"),
        ("jobs state=discarded", "/jobs?state=discarded"),
        ("jobs state=cancelled", "/jobs?state=cancelled"),
        ("jobs state=completed queue=q3", "/jobs?state=completed&queue=q3"),
        ("jobs task=billing.refund", "/jobs?task=billing.refund"),
        (f"jobs task={RARE_TASK} (0.1%)", f"/jobs?task={RARE_TASK}"),
        (f"jobs task={RARE_TASK} state=cancelled (~10 in all)", f"/jobs?task={RARE_TASK}&state=cancelled"),
        ("jobs state=scheduled", "/jobs?state=scheduled"),
        ("jobs from/to (1 h, 12 h ago)", f"/jobs?{window}"),
        (f"jobs q=user{p.user_id}@", f"/jobs?q=user{p.user_id}%40"),
        (f'jobs q={{"user_id": {p.user_id}}}', f"/jobs?q={contain}"),
        ("jobs before=<old id>", f"/jobs?before={p.old_id}"),
        ("job <id>", f"/jobs/{p.job_id}"),
        ("workers", "/workers"),
        ("periodic", "/periodic"),
        ("fragments/doctor", "/fragments/doctor"),
    ]


CONFIRMS = [("confirm count state=discarded", "state=discarded"),
            ("confirm count state=discarded queue=q3", "state=discarded&queue=q3"),
            ("confirm count state=available", "state=available")]


@dataclass(frozen=True, slots=True)
class Timing:
    label: str
    cold: list[float]
    warm: list[float]
    detail: str

    def row(self) -> dict[str, Any]:
        return {"page": self.label, "cold_median_ms": _ms(statistics.median(self.cold)),
                "cold_max_ms": _ms(max(self.cold)), "warm_median_ms": _ms(statistics.median(self.warm)),
                "warm_max_ms": _ms(max(self.warm)), "detail": self.detail}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _timed(runs: int, before: Callable[[], None], call: Callable[[], str]) -> tuple[list[float], str]:
    times, detail = [], ""
    for _ in range(runs):
        before()
        started = time.perf_counter()
        detail = call()
        times.append(time.perf_counter() - started)
    return times, detail


def _describe(body: str) -> str:
    """What a page showed, to see that each filter matched something: its job rows, or the confirmation."""
    rows = len(re.findall(r"<tr[^>]*\bdata-id=", body))
    confirm = re.search(r'id="confirm-text"[^>]*>(.*?)<', body, re.S)
    if confirm:
        return " ".join(confirm.group(1).split())
    return f"{rows} rows" if rows else f"{len(body) // 1024} KiB"


def time_first_overview(app: pgtasks.App, runs: int) -> Timing:
    """The overview of a dashboard process that has computed nothing yet (a new asgi_app each run):
    "cold" is its first request, "warm" the one right after it."""
    first: list[float] = []
    second: list[float] = []
    detail = ""
    for _ in range(runs):
        with TestClient(asgi_app(app)) as client:
            for times in (first, second):
                started = time.perf_counter()
                response = client.get("/")
                times.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"GET /: {response.status_code} {response.text[:300]}")
                detail = _describe(response.text)
    return Timing("overview, first request of a process", first, second, detail)


def time_pages(app: pgtasks.App, runs: int, p: Probe) -> list[Timing]:
    timings = [time_first_overview(app, runs)]
    guard = asgi_app(app)
    board: Any = getattr(guard, "dashboard")  # noqa: B009 # set on the Guard at run time, untyped
    with TestClient(guard) as client:
        def get(url: str) -> Callable[[], str]:
            def call() -> str:
                response = client.get(url)
                if response.status_code != 200:
                    raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:300]}")
                return _describe(response.text)
            return call

        def confirm(query: str, csrf: str) -> Callable[[], str]:
            def call() -> str:
                response = client.post(f"/jobs/action?{query}", data={"action": "retry", "scope": "filter",
                                                                     "csrf": csrf})
                if response.status_code != 200:
                    raise RuntimeError(f"POST /jobs/action?{query}: {response.status_code} {response.text[:300]}")
                return _describe(response.text)
            return call

        calls = [(label, get(url)) for label, url in pages(p)]
        client.get("/")
        csrf = client.cookies.get("pgtasks_csrf")
        assert csrf, "the dashboard set no CSRF cookie"
        calls += [(label, confirm(query, csrf)) for label, query in CONFIRMS]
        for label, call in calls:
            cold, detail = _timed(runs, board.cache.clear, call)
            call()  # fill the cache the warm runs find
            warm, _ = _timed(runs, lambda: None, call)
            timings.append(Timing(label, cold, warm, detail))
    return timings


def query_cases(app: pgtasks.App, p: Probe) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, query name, parameters) of every named dashboard query, the job page's with each filter
    of the pages timed (the delete is run in a transaction that is rolled back)."""
    now = datetime.now(UTC)
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("dashboard_throughput 3600 s", "dashboard_throughput", {"seconds": 3600, "now": now}),
        ("dashboard_throughput 86400 s", "dashboard_throughput", {"seconds": 86400, "now": now}),
        ("dashboard_durations 3600 s", "dashboard_durations", {"seconds": 3600, "now": now}),
        ("dashboard_unfinished_counts", "dashboard_unfinished_counts", {}),
        ("dashboard_finished_counts (exact; small tables only)", "dashboard_finished_counts", {}),
        ("dashboard_table_size", "dashboard_table_size", {"schema": app.schema}),
    ]
    for label, url in pages(p):
        if not url.startswith("/jobs?") and url != "/jobs":
            continue
        query = url.partition("?")[2]
        params: dict[str, list[str]] = {}
        for key, _, value in (part.partition("=") for part in query.split("&") if part):
            params.setdefault(key, []).append(unquote_plus(value))
        f = parse(params)
        scan = SEARCH_SCAN if (f.query.args_contain or f.query.args_like) else f.limit
        cases.append((f"dashboard_job_page {label.removeprefix('jobs').strip() or '(no filter)'}",
                      "dashboard_job_page", f.query.params() | {"before": f.before, "limit": f.limit, "scan": scan}))
    for label, query in CONFIRMS:
        params = {}
        for key, _, value in (part.partition("=") for part in query.split("&")):
            params.setdefault(key, []).append(value)
        f = parse(params)
        cases.append((f"dashboard_job_match_count {label.removeprefix('confirm count ')}", "dashboard_job_match_count",
                      f.query.params()))
        cases.append((f"dashboard_job_match_ids {label.removeprefix('confirm count ')} (1,000)",
                      "dashboard_job_match_ids", f.query.params() | {"before": None, "limit": 1000}))
    cases += [
        ("dashboard_job_delete_many (50 ids, rolled back)", "dashboard_job_delete_many",
         {"ids": list(range(p.old_id, p.old_id + 50))}),
        ("dashboard_queue_names", "dashboard_queue_names", {}),
        ("dashboard_recent_fires", "dashboard_recent_fires", {"names": [s for s, _ in SCHEDULES], "per_schedule": 10}),
        ("dashboard_change_mark", "dashboard_change_mark", {}),
    ]
    named = {name for name in app.store.queries if name.startswith("dashboard_")}
    missing = named - {name for _, name, _ in cases}
    if missing:
        raise RuntimeError(f"named dashboard queries this benchmark does not time: {sorted(missing)}")
    return cases


@contextmanager
def _rolled_back(conn: psycopg.Connection[Any]) -> Iterator[None]:
    with conn.transaction(force_rollback=True):
        yield


def time_queries(app: pgtasks.App, runs: int, p: Probe) -> tuple[list[dict[str, Any]], list[tuple[str, str,
                                                                                                    dict[str, Any]]]]:
    results = []
    cases = query_cases(app, p)
    with psycopg.connect(app.dsn, autocommit=True) as conn:
        for label, name, params in cases:
            query = app.store.queries[name]
            times = []
            rows = 0
            for _ in range(runs):
                started = time.perf_counter()
                with _rolled_back(conn):
                    rows = len(conn.execute(query, params).fetchall())
                times.append(time.perf_counter() - started)
            results.append({"query": label, "median_ms": _ms(statistics.median(times)), "max_ms": _ms(max(times)),
                            "rows": rows})
    return results, cases


def explain(app: pgtasks.App, name: str, params: dict[str, Any]) -> str:
    query = app.store.queries[name]
    with psycopg.connect(app.dsn, autocommit=True) as conn, _rolled_back(conn):
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + query, params).fetchall()
    return "\n".join(str(r[0]) for r in rows)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths, strict=True)) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("PGTASKS_DATABASE_URL", DEFAULT_DSN),
                        help="PostgreSQL DSN [env: PGTASKS_DATABASE_URL]")
    parser.add_argument("--schema", default="bench_dash", help="the schema the seeded data lives in (kept)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="finished jobs to seed")
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each page and query")
    parser.add_argument("--reseed", action="store_true", help="drop and seed the schema even if a seed is there")
    parser.add_argument("--max-age", type=float, default=2.0,
                        help="hours after which a seed is made again (its day window has moved on)")
    parser.add_argument("--no-queries", action="store_true", help="time the pages only")
    parser.add_argument("--json", action="store_true", help="one JSON line per measurement instead of tables")
    args = parser.parse_args(argv)
    logging.getLogger("pgtasks").setLevel(logging.WARNING)

    app, how = prepare(args.database_url, args.schema, args.rows, reseed=args.reseed, max_age_hours=args.max_age)
    try:
        p = probe(app)
        print(f"# schema {args.schema}: {how}; newest id {p.newest_id:,}; {p.rare_task_rows:,} {RARE_TASK} jobs",
              flush=True)
        page_rows = [t.row() for t in time_pages(app, args.runs, p)]
        if args.json:
            for row in page_rows:
                print(json.dumps({"workload": "dashboard_page", **row}))
        else:
            print(f"\n## pages ({args.runs} runs each; cold = overview cache cleared before each)\n")
            print(table(page_rows, ["page", "cold_median_ms", "cold_max_ms", "warm_median_ms", "warm_max_ms",
                                    "detail"]), flush=True)
        if args.no_queries:
            return
        query_rows, cases = time_queries(app, args.runs, p)
        if args.json:
            for row in query_rows:
                print(json.dumps({"workload": "dashboard_query", **row}))
        else:
            print(f"\n## named queries ({args.runs} runs each)\n")
            print(table(query_rows, ["query", "median_ms", "max_ms", "rows"]), flush=True)
        heaviest = max(range(len(query_rows)), key=lambda i: query_rows[i]["median_ms"])
        label, name, params = cases[heaviest]
        plan = explain(app, name, params)
        if args.json:
            print(json.dumps({"workload": "dashboard_explain", "query": label, "plan": plan}))
        else:
            print(f"\n## EXPLAIN (ANALYZE, BUFFERS) of the heaviest: {label}\n\n{plan}")
    finally:
        app.close()


if __name__ == "__main__":
    main()
