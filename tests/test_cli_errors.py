"""An unreachable database (issue 11, section 2): every command says where it tried and what to
check in one line and exits 2, within a connect timeout; `.delay()` raises a pgtasks error that
names the target; the worker exits 2 at once or, when told to, retries with a countdown.

Real subprocesses, a real PostgreSQL, and real sockets that refuse (port 1) or never answer.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import click
import msgspec
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgtasks
from pgtasks import App
from pgtasks.cli import main
from pgtasks.storage.connections import DEFAULT_CONNECT_TIMEOUT, describe_target, redact, with_connect_timeout
from tests.conftest import ROOT
from tests.pgbouncer_fixtures import Target
from tests.tcp_proxy import database_proxy

# Port 1 refuses at once; the password is there to prove it never shows.
BAD_DSN = "postgresql://nouser:s3cret@127.0.0.1:1/x"
TARGET = "host=127.0.0.1 port=1 dbname=x user=nouser"
APP = "tests.apps.periodic_app:app"
# What a command needs besides the database to get as far as connecting.
ARGS: dict[tuple[str, ...], list[str]] = {
    ("jobs", "show"): ["1"], ("jobs", "cancel"): ["1"], ("jobs", "retry"): ["1"], ("jobs", "purge"): ["--yes"],
    ("queues", "pause"): ["q"], ("queues", "resume"): ["q"], ("queues", "remove"): ["q"],
    ("queues", "limit"): ["q", "2"],
    ("bench",): ["-w", "enqueue"], ("workflows", "show"): ["1"], ("workflows", "cancel"): ["1"],
}
NEEDS_APP = {("worker",), ("periodic",)}
NO_DATABASE = {("embedded",)}  # where the embedded server lives, and stopping it: no DSN involved


def command_paths(group: click.Group = main, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command under `pgtasks`, and each group that runs alone (`pgtasks queues`, `migrate`)."""
    paths: list[tuple[str, ...]] = []
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        if path[:1] in NO_DATABASE:
            continue
        if isinstance(command, click.Group):
            if command.invoke_without_command:
                paths.append(path)
            paths += command_paths(command, path)
        else:
            paths.append(path)
    return paths


def has_json(path: tuple[str, ...]) -> bool:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return any("--json" in param.opts for param in command.params)


def argv(path: tuple[str, ...], *extra: str, dsn: str = BAD_DSN) -> list[str]:
    app = ["--app", APP] if path in NEEDS_APP else []
    return ["--database-url", dsn, *app, *path, *ARGS.get(path, []), *extra]


def pgtasks_cli(*args: str, timeout: float = 60.0) -> tuple[subprocess.CompletedProcess[str], float]:
    """`python -m pgtasks ARGS` as a user runs it (no PGTASKS_* settings inherited), and its seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTASKS_")}
    env["PYTHONPATH"] = str(ROOT)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pgtasks", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return done, time.monotonic() - started


def assert_names_the_target(message: str, target: str = TARGET) -> None:
    assert target in message, message
    assert "s3cret" not in message and "Traceback" not in message, message
    assert "--database-url" in message, message  # what to check


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_on_an_unreachable_database_prints_one_line_and_exits_2(path: tuple[str, ...]) -> None:
    done, _ = pgtasks_cli(*argv(path))
    assert done.returncode == 2, (done.stdout, done.stderr)
    # On stderr; doctor's one [FAIL] finding is its report, on stdout.
    lines = (done.stdout if path == ("doctor",) else done.stderr).strip().splitlines()
    assert len(lines) == 1 and (done.stdout if path != ("doctor",) else done.stderr) == "", (done.stdout, done.stderr)
    assert_names_the_target(lines[0])


@pytest.mark.parametrize("path", [p for p in command_paths() if has_json(p)], ids=" ".join)
def test_with_json_the_error_is_one_json_document_on_stdout(path: tuple[str, ...]) -> None:
    done, _ = pgtasks_cli(*argv(path, "--json"))
    assert done.returncode == 2, (done.stdout, done.stderr)
    document = msgspec.json.decode(done.stdout)
    error = document["error"] if "error" in document else document["findings"][0]  # doctor: its findings
    assert error.get("type", "DatabaseUnreachableError") == "DatabaseUnreachableError", document
    assert_names_the_target(error["message"])
    assert "Traceback" not in done.stderr


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never says a word: a hung server."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield server.getsockname()[1]


def test_a_server_that_never_answers_fails_within_the_connect_timeout(silent_port: int) -> None:
    done, seconds = pgtasks_cli("--connect-timeout", "2", "--database-url",
                                f"postgresql://nouser@127.0.0.1:{silent_port}/x", "jobs", "list")
    assert done.returncode == 2, done.stderr
    assert "connect_timeout=2s" in done.stderr and "--connect-timeout" in done.stderr, done.stderr
    assert_names_the_target(done.stderr, f"host=127.0.0.1 port={silent_port} dbname=x user=nouser")
    assert 1.5 < seconds < 20, seconds  # libpq's floor is 2 s; the bound is generous for a loaded machine


def test_the_connect_timeout_defaults_to_a_few_seconds_and_can_be_set() -> None:
    assert f"connect_timeout={DEFAULT_CONNECT_TIMEOUT}" in App(BAD_DSN).dsn
    assert "connect_timeout=3" in App(BAD_DSN + "?connect_timeout=3").dsn  # the DSN's own wins
    assert "connect_timeout=7" in with_connect_timeout(BAD_DSN + "?connect_timeout=3", 7)  # --connect-timeout
    assert 2 <= DEFAULT_CONNECT_TIMEOUT <= 10


def test_describe_target_fills_in_what_the_dsn_leaves_to_libpq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "db.internal")
    monkeypatch.delenv("PGPORT", raising=False)
    monkeypatch.delenv("PGDATABASE", raising=False)
    assert describe_target("user=alice password=pw") == "host=db.internal port=5432 dbname=alice user=alice"


def test_delay_outside_a_transaction_raises_a_pgtasks_error_naming_the_target() -> None:
    app = App(BAD_DSN, schema="pgt_unreachable")

    @app.task(name="unreachable.noop")
    def noop() -> None: ...

    started = time.monotonic()
    with pytest.raises(pgtasks.DatabaseUnreachableError) as raised:
        noop.delay()
    # Before: the pool's 30 s wait, then a ConnectionLostError about the pool, not the database.
    assert time.monotonic() - started < 10
    assert_names_the_target(str(raised.value))
    assert isinstance(raised.value, pgtasks.ConnectionLostError)  # code that retries those retries this too

    async def async_face() -> None:
        with pytest.raises(pgtasks.DatabaseUnreachableError, match=TARGET):
            await noop.adelay()

    asyncio.run(async_face())
    app.close()


def test_the_worker_exits_2_at_once_by_default() -> None:
    done, seconds = pgtasks_cli(*argv(("worker",)))
    assert done.returncode == 2 and seconds < 15, (done.stderr, seconds)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert_names_the_target(done.stderr)


def test_the_worker_told_to_wait_counts_down_and_then_gives_up() -> None:
    done, seconds = pgtasks_cli(*argv(("worker",), "--wait-for-database", "2.5"))
    assert done.returncode == 2, done.stderr
    *countdown, last = done.stderr.strip().splitlines()
    assert len(countdown) >= 2 and all("database.unreachable retry_in_s=" in line and "gives_up_in_s=" in line
                                       for line in countdown), done.stderr
    assert_names_the_target(last)
    assert 2.5 <= seconds < 30, seconds


def test_the_worker_told_to_wait_starts_once_the_database_answers(database_url: str, app: App) -> None:
    """The network to the database is cut while the worker starts; once it heals, the worker runs."""
    with database_proxy(database_url) as (proxy, through_proxy):
        proxy.partition()
        env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("PGTASKS_")}
        worker = subprocess.Popen(
            [sys.executable, "-m", "pgtasks", "--connect-timeout", "2", "--database-url", through_proxy,
             "--app", APP, "worker", "--burst", "--wait-for-database", "60"],
            env={**env, "PYTHONPATH": str(ROOT), "PGTASKS_SCHEMA": app.schema}, cwd=ROOT, stderr=subprocess.PIPE,
            text=True)
        try:
            assert worker.stderr is not None
            first = worker.stderr.readline()
            assert "database.unreachable" in first and "gives_up_in_s=" in first, first
            proxy.heal()
            rest = worker.communicate(timeout=60)[1]
        finally:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, first + rest
    assert "worker.started" in rest or "started" in rest, rest


def test_doctor_on_an_unmigrated_schema_still_checks_the_server_and_its_advice_migrates_that_database(
    database_url: str, schema: str
) -> None:
    done, _ = pgtasks_cli("--database-url", database_url, "--schema", schema, "doctor", "--json")
    assert done.returncode == 1, done.stderr
    found = {f["check"]: f for f in msgspec.json.decode(done.stdout)["findings"]}
    # Server-wide: they do not need the schema (docs/operations.md says only the schema checks skip).
    assert found["long_transactions"]["status"] != "skip" and found["replication_slots"]["status"] != "skip"
    assert found["vacuum"]["status"] == "skip" and found["leader"]["status"] == "skip"
    advice = found["migrations"]["advice"]
    assert f"--database-url {shlex.quote(redact(database_url))} --schema {schema} migrate" in advice, advice
    # Copied as printed, it migrates the database that was checked.
    command = shlex.split(advice.split("`")[1])
    assert command[0] == "pgtasks"
    migrated, _ = pgtasks_cli(*command[1:])
    assert migrated.returncode == 0 and "applied 0001" in migrated.stdout, migrated.stderr
    again, _ = pgtasks_cli("--database-url", database_url, "--schema", schema, "doctor", "--json")
    assert {f["check"]: f for f in msgspec.json.decode(again.stdout)["findings"]}["migrations"]["status"] == "ok"


def test_a_database_the_server_or_pooler_refuses_is_one_line_through_every_path(target: Target) -> None:
    """A wrong database name, straight to PostgreSQL and through PgBouncer's session and transaction
    pools: the same one line and exit 2, naming where it went (the pooler's port, for a pooler)."""
    params = conninfo_to_dict(target.dsn)
    wrong = make_conninfo(target.dsn, dbname="pgt_no_such_db")
    done, _ = pgtasks_cli("--database-url", wrong, "jobs", "list")
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and done.stdout == "", done.stderr
    assert f"port={params.get('port') or 5432} dbname=pgt_no_such_db" in lines[0], lines[0]
    assert "pgt_no_such_db" in lines[0].split(": ", 1)[1] and "Traceback" not in done.stderr


def test_worker_retention_is_parsed_with_defaults_for_unnamed_keys_and_bad_keys_named() -> None:
    from datetime import timedelta

    from click.testing import CliRunner

    from pgtasks.cli import main
    from pgtasks.cli.worker import parse_retention
    from pgtasks.leadership.cleaner import Retention

    MAIL = "tests.apps.mail_app:make_app"
    assert parse_retention("completed=1h, discarded=forever") == Retention(
        completed=timedelta(hours=1), discarded=None)
    result = CliRunner().invoke(main, ["--database-url", "postgresql://nobody@127.0.0.1:1/x", "--app", MAIL, "worker",
                                       "--retention", "done=1h"])
    assert result.exit_code == 2
    assert "'done=1h': expected STATE=DURATION with STATE one of completed, cancelled" in result.output
    twice = CliRunner().invoke(main, ["--database-url", "postgresql://nobody@127.0.0.1:1/x", "--app", MAIL, "worker",
                                      "--retention", "completed=1h,completed=2h"])
    assert twice.exit_code == 2 and "completed is given twice" in twice.output
