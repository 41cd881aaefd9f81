"""`pgtasks doctor`: health checks of a pgtasks database, each finding with what to do about it."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg import Connection

from pgtasks.core.errors import DatabaseUnreachableError, PgtasksError
from pgtasks.ops.queues import QueueUse, queue_uses
from pgtasks.storage import migrations
from pgtasks.storage.connections import redact
from pgtasks.storage.poolmode import PoolMode, adetect_pool_mode

if TYPE_CHECKING:
    from pgtasks.app import App

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
MIN_SERVER_VERSION = 130000


@dataclass(frozen=True, slots=True)
class DoctorOptions:
    listen: bool | None = None  # None: as workers decide (auto); True: workers are forced to LISTEN
    max_lag: float = 60.0  # seconds a due job may wait before the queue counts as lagging
    stale_after: float = 30.0  # seconds without a heartbeat before a worker counts as gone
    long_transaction: float = 300.0  # seconds a transaction may stay open before it is reported
    pool_timeout: float = 5.0  # seconds the pool-mode detection may take
    database_url: str | None = None  # as given on the command line: quoted (password masked) in advice


@dataclass(slots=True)
class Finding:
    check: str
    status: str  # ok, warn, fail, skip
    message: str
    advice: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _connect(app: App) -> Connection[Any]:
    with app.store.errors():
        return app.connect()


def check_server(app: App, conn: Connection[Any]) -> list[Finding]:
    info = app.store.doctor_server(conn)
    findings = []
    if info["version_num"] < MIN_SERVER_VERSION:
        findings.append(Finding("server_version", WARN, f"PostgreSQL {info['version']} is older than 13",
                                "upgrade PostgreSQL: pgtasks is tested on 13 and newer", {"version": info["version"]}))
    else:
        findings.append(Finding("server_version", OK, f"PostgreSQL {info['version']}",
                                data={"version": info["version"]}))
    usable = info["max_connections"] - info["reserved"]
    share = info["used"] / usable if usable > 0 else 1.0
    data = {"used": info["used"], "max_connections": info["max_connections"], "reserved": info["reserved"]}
    message = f"{info['used']} of {usable} usable connections in use ({share:.0%})"
    if share >= 0.9:
        findings.append(Finding("connections", FAIL, message, "new connections will soon be refused: lower worker "
                                "pool sizes (--pool-size), put PgBouncer in front, or raise max_connections", data))
    elif share >= 0.75:
        findings.append(Finding("connections", WARN, message, "check the connection budget: each worker process "
                                "holds --pool-size + 1 (listener) connections; see docs/operations.md", data))
    else:
        findings.append(Finding("connections", OK, message, data=data))
    return findings


def migrate_command(app: App, options: DoctorOptions) -> str:
    """The `pgtasks ... migrate` to copy: with the --database-url that was checked (its password
    masked), so it migrates this database and not the app's default one."""
    url = f" --database-url {shlex.quote(redact(options.database_url))}" if options.database_url else ""
    return f"pgtasks{url} --schema {app.schema} migrate"


def check_migrations(app: App, conn: Connection[Any], options: DoctorOptions) -> Finding:
    expected = migrations.latest_version()
    try:
        current = app.store.migration_current_version(conn)
    except PgtasksError:
        current = 0
    data = {"current": current, "expected": expected, "schema": app.schema}
    if current == 0:
        return Finding("migrations", FAIL, f"schema {app.schema!r} is not migrated (no pgtasks tables)",
                       f"run `{migrate_command(app, options)}` (or App.migrate())", data)
    if current < expected:
        return Finding("migrations", FAIL, f"schema {app.schema!r} is at migration {current}, this pgtasks needs "
                       f"{expected}", f"run `{migrate_command(app, options)}`; workers refuse to start until then",
                       data)
    if current > expected:
        return Finding("migrations", WARN, f"schema {app.schema!r} is at migration {current}, newer than this "
                       f"pgtasks ({expected})", "upgrade pgtasks here to the version that migrated the schema", data)
    return Finding("migrations", OK, f"schema {app.schema!r} is at migration {current} (up to date)", data=data)


def check_pool_mode(app: App, options: DoctorOptions) -> list[Finding]:
    findings = []
    main = asyncio.run(adetect_pool_mode(app.dsn, app.store, application_name=app.application_name + "-doctor",
                                         timeout=options.pool_timeout, check_listen=False))
    findings.append(Finding("pool_mode", WARN if main.mode is PoolMode.UNKNOWN else OK,
                            f"the database DSN is {main.mode.value}" + (f" ({main.detail})" if main.detail else ""),
                            "check that the database (or pooler) answers quickly" if main.mode is PoolMode.UNKNOWN
                            else None, {"mode": main.mode.value}))
    listen = asyncio.run(adetect_pool_mode(app.listen_dsn, app.store, application_name=app.application_name + "-doctor",
                                           timeout=options.pool_timeout, check_listen=True))
    data = {"mode": listen.mode.value, "listen_ok": listen.listen_ok, "forced": options.listen}
    works = listen.listen_ok is True
    if works:
        findings.append(Finding("listen", OK, "LISTEN/NOTIFY works end to end on the listen DSN", data=data))
    elif options.listen:
        why = ("it is a transaction pooler, which drops notifications" if listen.mode is PoolMode.TRANSACTION
               else f"a NOTIFY did not come back ({listen.detail or 'no detail'})")
        findings.append(Finding("listen", FAIL, f"workers are forced to LISTEN but LISTEN cannot work on the listen "
                                f"DSN: {why}", "give workers a direct or session-pooled --listen-dsn, or run them "
                                "with --no-listen (they then poll every --poll-interval)", data))
    else:
        findings.append(Finding("listen", WARN, f"LISTEN does not work on the listen DSN ({listen.mode.value}); "
                                "workers will poll only", "for instant wakeups give workers a direct or "
                                "session-pooled --listen-dsn", data))
    return findings


def check_leader(app: App, conn: Connection[Any]) -> Finding:
    lease = app.store.leader_get(conn)
    if lease is None:
        return Finding("leader", FAIL, "no leader has ever been elected: no worker has run against this schema",
                       "start a worker (`pgtasks worker`); periodic tasks, the rescuer and retention cleanup "
                       "only run on the leader")
    data = {"leader_id": lease.leader_id, "term": lease.term, "expires_at": lease.expires_at.isoformat()}
    if not lease.active:
        return Finding("leader", FAIL, f"no leader: the last lease (term {lease.term}, {lease.leader_id}) expired at "
                       f"{lease.expires_at.isoformat(timespec='seconds')}", "start a worker, or find out why the "
                       "workers stopped (their logs; `pgtasks doctor` workers check)", data)
    return Finding("leader", OK, f"leader {lease.leader_id} (term {lease.term})", data=data)


def check_workers(app: App, conn: Connection[Any], options: DoctorOptions) -> Finding:
    workers = app.store.worker_list(conn)
    alive = [w for w in workers if w.seen_ago_s <= options.stale_after]
    stale = [w for w in workers if w.seen_ago_s > options.stale_after]
    data = {"alive": [w.worker_id for w in alive], "stale": {w.worker_id: round(w.seen_ago_s, 1) for w in stale}}
    if not alive:
        return Finding("workers", FAIL, "no worker is alive (no heartbeat in the last "
                       f"{options.stale_after:.0f}s)" + (f"; {len(stale)} silent" if stale else ""),
                       "start workers: `pgtasks --app module:app worker`", data)
    if stale:
        return Finding("workers", WARN, f"{len(alive)} worker(s) alive, {len(stale)} silent for over "
                       f"{options.stale_after:.0f}s: " + ", ".join(w.worker_id for w in stale[:5]),
                       "silent workers crashed or are stuck; the leader's rescuer retries their jobs", data)
    return Finding("workers", OK, f"{len(alive)} worker(s) alive", data=data)


def check_queues(app: App, conn: Connection[Any], options: DoctorOptions) -> Finding:
    rows = app.store.queue_stats(conn)
    lagging = [r for r in rows if r["lag_seconds"] > options.max_lag and r["paused_at"] is None]
    paused = [r["queue"] for r in rows if r["paused_at"] is not None]
    data = {"lag_seconds": {r["queue"]: round(r["lag_seconds"], 3) for r in rows}, "paused": paused}
    note = f"; paused: {', '.join(paused)}" if paused else ""
    if lagging:
        worst = max(lagging, key=lambda r: r["lag_seconds"])
        return Finding("queue_lag", WARN, f"{len(lagging)} queue(s) lag over {options.max_lag:.0f}s; worst "
                       f"{worst['queue']!r} at {worst['lag_seconds']:.0f}s with {worst['available']} waiting{note}",
                       "add workers or concurrency for those queues, or check that a worker runs them", data)
    return Finding("queue_lag", OK, f"{len(rows)} queue(s), none lagging over {options.max_lag:.0f}s{note}", data=data)


def check_queue_use(app: App, conn: Connection[Any], options: DoctorOptions) -> list[Finding]:
    """Queues whose jobs wait with no live worker serving them (however short the wait: nothing
    will run them), and queue entries nothing uses (a pause of a typo)."""
    uses = queue_uses(app, conn, stale_after=options.stale_after)
    return [_unserved_finding([u for u in uses.values() if u.unserved]),
            _stray_finding([u for u in uses.values() if u.stray])]


def check_unrunnable_tasks(app: App, conn: Connection[Any], options: DoctorOptions) -> Finding:
    """Ready jobs in a served queue whose task no live worker of that queue has registered: a worker
    claims only its own tasks' jobs, so they wait (a task renamed or removed, or its app's workers down)."""
    rows = app.store.doctor_unrunnable_tasks(conn, options.stale_after)
    data = {"unrunnable": [{"queue": r["queue"], "task": r["task"], "ready": r["ready"],
                            "oldest_s": round(r["oldest_s"], 1)} for r in rows]}
    if not rows:
        return Finding("unrunnable_tasks", OK, "every ready job's task is known to a live worker of its queue",
                       data=data)
    listed = ", ".join(f"{r['task']!r} in {r['queue']!r} ({r['ready']} ready)" for r in rows[:5])
    first = rows[0]
    return Finding("unrunnable_tasks", WARN, f"{len(rows)} task(s) have ready jobs that no live worker can run: "
                   f"{listed}", f"deploy workers whose --app registers them, or end the jobs: `pgtasks jobs "
                   f"list --task {first['task']}` shows them, `pgtasks jobs cancel` / `jobs purge --task` end them",
                   data)


def _unserved_finding(unserved: list[QueueUse]) -> Finding:
    data = {"unserved": {u.name: {"waiting": u.waiting, "paused": u.paused, "tasks": list(u.tasks),
                                  "silent_workers": list(u.silent_workers)} for u in unserved}}
    if not unserved:
        return Finding("unserved_queues", OK, "every queue with waiting jobs has a live worker", data=data)
    listed = ", ".join(f"{u.name!r} ({u.waiting} waiting{', paused' if u.paused else ''})" for u in unserved[:5])
    names = ",".join(u.name for u in unserved)
    return Finding("unserved_queues", WARN, f"{len(unserved)} queue(s) have jobs waiting and no live worker "
                   f"serving them: {listed}", f"start a worker for them (`pgtasks --app module:app worker "
                   f"--queues {names}`) or add them to a worker's --queues", data)


def _stray_finding(stray: list[QueueUse]) -> Finding:
    data = {"stray": [u.name for u in stray]}
    if not stray:
        return Finding("queue_entries", OK, "no queue entry left unused", data=data)
    names = ", ".join(repr(u.name) for u in stray[:5])
    return Finding("queue_entries", WARN, f"{len(stray)} queue entr{'y' if len(stray) == 1 else 'ies'} that no "
                   f"job, worker or task uses: {names}", "a typo or a retired queue: forget each with "
                   f"`pgtasks queues remove NAME` (e.g. `pgtasks queues remove {stray[0].name}`)", data)


def check_vacuum(app: App, conn: Connection[Any], options: DoctorOptions) -> list[Finding]:
    findings = []
    health = app.store.doctor_table_health(conn, app.schema)
    if health is None:
        findings.append(Finding("vacuum", SKIP, "no statistics for the jobs table yet"))
    else:
        live, dead = int(health["live"] or 0), int(health["dead"] or 0)
        data = {"live": live, "dead": dead, "last_autovacuum": health["last_autovacuum"],
                "reloptions": health["reloptions"], "autovacuum": health["autovacuum_on"]}
        table = f"{app.schema}.jobs"
        if not health["autovacuum_on"]:
            findings.append(Finding("vacuum", WARN, "autovacuum is off: the jobs table bloats with every job",
                                    "turn autovacuum on in postgresql.conf", data))
        elif dead > max(10_000, live * 0.2):
            findings.append(Finding("vacuum", WARN, f"{dead} dead rows against {live} live in {table}",
                                    f"vacuum is falling behind: ALTER TABLE {table} SET "
                                    "(autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0); "
                                    "and look for long transactions below", data))
        else:
            findings.append(Finding("vacuum", OK, f"{dead} dead / {live} live rows in {table}", data=data))
    return findings


def check_vacuum_blockers(app: App, conn: Connection[Any], options: DoctorOptions) -> list[Finding]:
    """Long transactions and replication slots: server-wide, so they run on an unmigrated schema too."""
    findings = []
    long_ones = app.store.doctor_long_transactions(conn, options.long_transaction)
    if long_ones:
        listed = ", ".join(f"pid {t['pid']} ({t['application_name'] or '?'}, {t['age_seconds']:.0f}s, {t['state']})"
                           for t in long_ones[:5])
        findings.append(Finding("long_transactions", WARN, f"{len(long_ones)} transaction(s) open over "
                                f"{options.long_transaction:.0f}s: {listed}", "they hold back vacuum on every "
                                "table: end them (pg_terminate_backend(pid)) and fix the code that leaves them open",
                                {"transactions": long_ones}))
    else:
        findings.append(Finding("long_transactions", OK,
                                f"no transaction open over {options.long_transaction:.0f}s"))
    slots = app.store.doctor_replication_slots(conn)
    holding = [s for s in slots if not s["active"] or (s["xmin_age"] or 0) > 1_000_000
               or (s["catalog_xmin_age"] or 0) > 1_000_000]
    if holding:
        findings.append(Finding("replication_slots", WARN, "replication slot(s) holding back vacuum: "
                                + ", ".join(f"{s['slot_name']} ({'active' if s['active'] else 'inactive'})"
                                            for s in holding),
                                "drop slots nobody reads (pg_drop_replication_slot) or fix the lagging consumer",
                                {"slots": holding}))
    else:
        findings.append(Finding("replication_slots", OK, f"{len(slots)} replication slot(s), none holding back vacuum"))
    return findings


def run_checks(app: App, options: DoctorOptions | None = None) -> list[Finding]:
    """Run every check; checks that need the schema are skipped when it is not migrated."""
    options = options or DoctorOptions()
    try:
        conn = _connect(app)
    except DatabaseUnreachableError as exc:
        return [Finding("connection", FAIL, str(exc))]  # it names the target and what to check
    except PgtasksError as exc:
        return [Finding("connection", FAIL, f"cannot connect: {exc}",
                        "check --database-url / PGTASKS_DATABASE_URL and that the server is up")]
    findings = [Finding("connection", OK, "connected")]
    with conn:
        findings += check_server(app, conn)
        migrated = check_migrations(app, conn, options)
        findings.append(migrated)
        findings += _run_guarded([lambda: check_vacuum_blockers(app, conn, options)])
        schema_checks: list[Callable[[], Finding | list[Finding]]] = [
            lambda: check_leader(app, conn),
            lambda: check_workers(app, conn, options),
            lambda: check_queues(app, conn, options),
            lambda: check_queue_use(app, conn, options),
            lambda: check_unrunnable_tasks(app, conn, options),
            lambda: check_vacuum(app, conn, options),
        ]
        if migrated.status == FAIL:
            for name in ("leader", "workers", "queue_lag", "unserved_queues", "queue_entries", "unrunnable_tasks",
                         "vacuum"):
                findings.append(Finding(name, SKIP, "skipped: the schema is not migrated"))
        else:
            findings += _run_guarded(schema_checks)
    findings += check_pool_mode(app, options)
    return findings


def _run_guarded(checks: list[Callable[[], Finding | list[Finding]]]) -> list[Finding]:
    """Run each check; one that raises becomes a failed finding and the others still run."""
    findings: list[Finding] = []
    for check in checks:
        try:
            result = check()
        except PgtasksError as exc:
            findings.append(Finding("error", FAIL, f"a check failed: {exc}"))
            continue
        findings += result if isinstance(result, list) else [result]
    return findings
