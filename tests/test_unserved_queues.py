"""Work that waits silently (issue 11, section 3): tasks on queues a worker does not serve, queues with
waiting jobs and no live worker, paused names nothing uses, and short --task names.

The database paths run direct and through PgBouncer's session and transaction pools (`target`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import psycopg
import pytest
from click.testing import CliRunner, Result

from pgtasks import App
from pgtasks.cli import main
from pgtasks.cli.jobs import NoSuchTask, match_task
from pgtasks.ops.doctor import OK, WARN, DoctorOptions, Finding, check_queue_use
from pgtasks.worker.worker import unserved_tasks
from tests.conftest import ROOT
from tests.helpers import drain, jobs, logged, run_with_pool
from tests.pgbouncer_fixtures import Target

MAIL_APP = "tests.apps.mail_app:make_app"


def declare_tasks(app: App) -> None:
    """The new user's app: `mail.tasks.send` on queue "mail", `reports.build` on "default"."""

    @app.task(name="mail.tasks.send", queue="mail")
    def send(user_id: int) -> int:
        return user_id

    @app.task(name="reports.build")
    def build(report_id: int) -> int:
        return report_id


def cli(dsn: str, schema: str, *args: str, app_path: str | None = None) -> Result:
    """Run `pgtasks ARGS` in this process against `dsn`; stderr is kept apart (result.stderr)."""
    base = ["--database-url", dsn, "--schema", schema] + (["--app", app_path] if app_path else [])
    env = {"PGTASKS_DATABASE_URL": dsn, "PGTASKS_SCHEMA": schema}
    return CliRunner().invoke(main, [*base, *args], env=env, catch_exceptions=False)


# -- a worker that does not serve a registered task's queue ---------------------------------------


def test_unserved_tasks_lists_the_tasks_of_other_queues_by_queue(app: App) -> None:
    declare_tasks(app)

    @app.task(name="mail.tasks.bounce", queue="mail")
    def bounce() -> None: ...

    @app.task(name="images.resize", queue="images")
    def resize() -> None: ...

    assert unserved_tasks(app.registry, {"default"}) == {
        "images": ["images.resize"], "mail": ["mail.tasks.bounce", "mail.tasks.send"]}
    assert unserved_tasks(app.registry, {"default", "mail", "images"}) == {}


def test_a_worker_warns_at_start_about_tasks_whose_queue_it_does_not_serve(
    app: App, caplog: pytest.LogCaptureFixture,
) -> None:
    declare_tasks(app)
    caplog.set_level(logging.INFO, logger="pgtasks")
    drain(app, queues=["default"])
    warnings = logged(caplog.records, "worker.unserved_queues")
    assert len(warnings) == 1
    assert warnings[0]["queues"] == "mail" and warnings[0]["tasks"] == "mail.tasks.send"
    assert "--queues" in warnings[0]["hint"] and "default,mail" in warnings[0]["hint"]
    record = next(r for r in caplog.records if getattr(r, "event", None) == "worker.unserved_queues")
    assert record.levelno == logging.WARNING

    caplog.clear()
    drain(app, queues=["default", "mail"])
    assert logged(caplog.records, "worker.unserved_queues") == []


def test_the_worker_command_prints_the_warning(database_url: str, app: App) -> None:
    """What the user sees: `pgtasks worker` with the default --queues prints the unserved queue."""
    env = {**os.environ, "PGTASKS_DATABASE_URL": database_url, "PGTASKS_SCHEMA": app.schema,
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "pgtasks", "--app", MAIL_APP, "worker", "--burst",
                           "--poll-interval", "0.1"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stderr.splitlines() if "worker.unserved_queues" in line)
    assert "WARNING" in line and "queues=mail" in line and "tasks=mail.tasks.send" in line


# -- doctor: waiting jobs, no live worker ---------------------------------------------------------


def heartbeat(app: App, worker_id: str, queues: list[str], *, seen_ago: float = 0.0) -> None:
    """A worker row as a worker's heartbeat writes it, seen `seen_ago` seconds ago."""
    now = datetime.now(UTC) - timedelta(seconds=seen_ago)

    async def write(pool: Any) -> None:
        async with pool.connection() as conn:
            await app.store.aworker_heartbeat(conn, worker_id=worker_id, hostname="test", pid=1, queues=queues,
                                              concurrency=1, running=[], now=now)

    run_with_pool(app, write)


def queue_findings(app: App) -> dict[str, Finding]:
    with app.connect() as conn:
        return {f.check: f for f in check_queue_use(app, conn, DoctorOptions(stale_after=30))}


def test_doctor_warns_about_waiting_jobs_no_live_worker_serves(target: Target, target_app: App) -> None:
    declare_tasks(target_app)
    target_app.tasks["mail.tasks.send"].delay(1)  # waits a moment only: far below --max-lag
    target_app.tasks["reports.build"].delay(1)
    heartbeat(target_app, "w-default", ["default"])
    heartbeat(target_app, "w-mail-gone", ["mail"], seen_ago=3600)  # silent: serves nothing

    unserved = queue_findings(target_app)["unserved_queues"]
    assert unserved.status == WARN
    assert "'mail' (1 waiting)" in unserved.message and "default" not in unserved.message
    assert unserved.advice is not None and "--queues mail" in unserved.advice
    assert unserved.data["unserved"] == {"mail": {"waiting": 1, "paused": False, "tasks": ["mail.tasks.send"],
                                                  "silent_workers": ["w-mail-gone"]}}

    heartbeat(target_app, "w-mail", ["mail"])
    assert queue_findings(target_app)["unserved_queues"].status == OK


def test_doctor_command_shows_unserved_queues_and_unused_entries(database_url: str, app: App) -> None:
    declare_tasks(app)
    app.tasks["mail.tasks.send"].delay(1)
    heartbeat(app, "w-default", ["default"])
    assert cli(database_url, app.schema, "queues", "pause", "mial").exit_code == 0
    result = cli(database_url, app.schema, "doctor")  # exits 1: no leader was ever elected here
    assert "[WARN] unserved_queues    1 queue(s) have jobs waiting and no live worker serving them: " \
           "'mail' (1 waiting)" in result.output
    assert "[WARN] queue_entries      1 queue entry that no job, worker or task uses: 'mial'" in result.output
    assert "pgtasks queues remove mial" in result.output


# -- queues pause / resume / remove ---------------------------------------------------------------


def queue_names(dsn: str, schema: str) -> list[str]:
    listed = cli(dsn, schema, "queues", "list", "--json")
    assert listed.exit_code == 0, listed.output
    return [row["queue"] for row in json.loads(listed.stdout)]


def test_pausing_a_name_nothing_uses_warns_and_remove_forgets_it(target: Target, target_app: App) -> None:
    declare_tasks(target_app)
    target_app.tasks["reports.build"].delay(1)
    heartbeat(target_app, "w-mail", ["mail"])
    dsn, schema = target.dsn, target_app.schema

    typo = cli(dsn, schema, "queues", "pause", "mial")
    assert typo.exit_code == 0  # still paused: pausing ahead of a deploy is legitimate
    assert typo.stderr.startswith("warning: no job, worker or registered task uses queue 'mial' "
                                  "(queues in use: default, mail)")
    assert "pgtasks queues remove mial" in typo.stderr
    assert typo.stderr.rstrip().endswith("; pass --app to count the queues your tasks declare")  # no --app here
    assert "mial" in queue_names(dsn, schema)
    assert "uses queue 'mial'" in cli(dsn, schema, "queues", "resume", "mial").stderr

    for used in ("default", "mail"):  # a queue with jobs; a queue a worker serves
        quiet = cli(dsn, schema, "queues", "pause", used)
        assert quiet.exit_code == 0 and quiet.stderr == "", quiet.stderr
        assert cli(dsn, schema, "queues", "resume", used).stderr == ""

    removed = cli(dsn, schema, "queues", "remove", "mial")
    assert removed.exit_code == 0 and removed.stdout == "queue mial removed\n"
    assert "mial" not in queue_names(dsn, schema)
    absent = cli(dsn, schema, "queues", "remove", "mial")
    assert absent.exit_code == 1 and absent.stderr == "queue mial has no entry to remove\n"


def test_pause_json_says_whether_the_queue_is_in_use(database_url: str, app: App) -> None:
    unknown = json.loads(cli(database_url, app.schema, "queues", "pause", "nobody", "--json").stdout)
    assert unknown["paused"] is True and unknown["in_use"] is False


def test_remove_is_refused_while_paused_with_waiting_jobs(target: Target, target_app: App,
                                                          conn: psycopg.Connection[Any]) -> None:
    declare_tasks(target_app)
    dsn, schema = target.dsn, target_app.schema
    target_app.tasks["mail.tasks.send"].delay(1)
    assert cli(dsn, schema, "queues", "pause", "mail").exit_code == 0

    refused = cli(dsn, schema, "queues", "remove", "mail")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("queue mail is paused with 1 job(s) waiting: removing its entry would "
                                     "resume them; run `pgtasks queues resume mail` first")
    paused = conn.execute(f'SELECT paused_at IS NOT NULL FROM "{schema}".queues WHERE name = %s', ["mail"]).fetchone()
    assert paused == (True,)

    assert cli(dsn, schema, "queues", "resume", "mail").exit_code == 0
    kept = cli(dsn, schema, "queues", "remove", "mail")  # resumed: only the entry goes, the job stays
    assert kept.exit_code == 0
    assert kept.stdout == "queue mail removed (it stays in `queues list` while jobs, workers or tasks use it)\n"
    assert [j["state"] for j in jobs(conn, schema)] == ["available"]


# -- --task: a unique last part of the name ---------------------------------------------------------


KNOWN = ["billing.charge", "mail.tasks.resend", "mail.tasks.send", "reports.build"]


def test_match_task_takes_the_full_name_or_a_unique_dotted_suffix() -> None:
    assert match_task("mail.tasks.send", KNOWN) == "mail.tasks.send"
    assert match_task("send", KNOWN) == "mail.tasks.send"  # not mail.tasks.resend: whole parts only
    assert match_task("tasks.send", KNOWN) == "mail.tasks.send"
    assert match_task("charge", KNOWN) == "billing.charge"
    with pytest.raises(click.BadParameter, match=r"'send' matches several tasks: a\.send, b\.send"):
        match_task("send", ["a.send", "b.send"])
    with pytest.raises(NoSuchTask, match=r"--task chrage: nothing matched: .*; tasks: billing\.charge, "
                                         r"mail\.tasks\.resend, mail\.tasks\.send, reports\.build$"):
        match_task("chrage", KNOWN)
    many = [f"t.task{i:02}" for i in range(25)]
    with pytest.raises(NoSuchTask, match=r"t\.task19 and 5 more$"):
        match_task("nope", many)


def test_a_short_task_name_filters_list_retry_and_purge(target: Target, target_app: App,
                                                        conn: psycopg.Connection[Any]) -> None:
    declare_tasks(target_app)
    send, build = target_app.tasks["mail.tasks.send"], target_app.tasks["reports.build"]
    ids = [send.delay(1).id, send.delay(2).id, build.delay(3).id]
    dsn, schema = target.dsn, target_app.schema  # no --app: the names come from the jobs table

    listed = cli(dsn, schema, "jobs", "list", "--task", "send", "--json")
    assert listed.exit_code == 0, listed.output
    assert sorted(row["id"] for row in json.loads(listed.stdout)) == ids[:2]
    assert listed.stderr == "--task send: matched mail.tasks.send\n"

    conn.execute(f'UPDATE "{schema}".jobs SET state = \'discarded\', finalized_at = now()')
    retried = cli(dsn, schema, "jobs", "retry", "--task", "build", "--json")
    assert retried.exit_code == 0 and json.loads(retried.stdout)["retried"] == [ids[2]]
    purged = cli(dsn, schema, "jobs", "purge", "--task", "tasks.send", "--yes", "--json")
    assert purged.exit_code == 0 and json.loads(purged.stdout) == {"deleted": 2}
    assert [j["id"] for j in jobs(conn, schema)] == [ids[2]]

    missing = cli(dsn, schema, "jobs", "list", "--task", "sned")
    assert missing.exit_code == 1
    assert missing.stderr == ("Error: --task sned: nothing matched: no task is named 'sned' or ends in '.sned'; "
                              "tasks: reports.build\n")


def test_task_names_include_the_apps_registered_tasks(database_url: str, schema: str) -> None:
    """With --app, a registered task matches before it has any job, and is listed when nothing matches."""
    migrated = cli(database_url, schema, "migrate")
    assert migrated.exit_code == 0, migrated.output
    short = cli(database_url, schema, "jobs", "list", "--task", "send", app_path=MAIL_APP)
    assert short.exit_code == 0 and short.stderr == "--task send: matched mail.tasks.send\n"
    missing = cli(database_url, schema, "jobs", "list", "--task", "nothing", app_path=MAIL_APP)
    assert missing.exit_code == 1 and missing.stderr.endswith("tasks: mail.tasks.send, reports.build\n")
    registered = cli(database_url, schema, "queues", "pause", "mail", app_path=MAIL_APP)
    assert registered.exit_code == 0 and registered.stderr == ""  # a registered task declares "mail"
    unknown = cli(database_url, schema, "queues", "pause", "mial", app_path=MAIL_APP)
    assert "(queues in use: default, mail)" in unknown.stderr and "pass --app" not in unknown.stderr  # the tasks'

