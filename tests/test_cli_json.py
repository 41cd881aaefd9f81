"""The CLI's output (issue 11, section 5): --json on every command that prints, one JSON document
on stdout whatever happens (errors too), numbers as numbers, `pgtasks queues` alone, and messages
without loose ends. Through PostgreSQL directly and through PgBouncer's session and transaction pools.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import click
import msgspec
import pytest
from click.testing import CliRunner, Result

from pgtasks import App
from pgtasks.cli import main
from pgtasks.testing import drain
from tests.conftest import ROOT

NO_JSON = {("worker",): "it prints logs only: --log-format json makes them JSON lines",
           ("dashboard",): "it serves web pages; it prints one log line at start"}


def printing_commands(group: click.Group = main, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command, and every group that runs on its own (`pgtasks queues`)."""
    paths: list[tuple[str, ...]] = []
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        if isinstance(command, click.Group):
            paths += ([path] if command.invoke_without_command else []) + printing_commands(command, path)
        elif path not in NO_JSON:
            paths.append(path)
    return paths


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


@pytest.mark.parametrize("path", printing_commands(), ids=" ".join)
def test_every_command_that_prints_takes_json(path: tuple[str, ...]) -> None:
    assert any("--json" in param.opts for param in command_at(path).params), f"`pgtasks {' '.join(path)}` has no --json"


def run(app: App, *args: str) -> Result:
    return CliRunner().invoke(main, ["--database-url", app.dsn, "--schema", app.schema, *args])


def document(result: Result) -> Any:
    """The one JSON document a --json command printed (decoding fails on anything more or less)."""
    return msgspec.json.decode(result.stdout)


def pgtasks_cli(app: App, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m pgtasks` in a subprocess whose stdin is no terminal, with the app's database and schema."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTASKS_")}
    env.update(PYTHONPATH=str(ROOT), PGTASKS_DATABASE_URL=app.dsn, PGTASKS_SCHEMA=app.schema)
    return subprocess.run([sys.executable, "-m", "pgtasks", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture
def finished(target_app: App) -> int:
    """A completed job, enqueued and run through the target."""

    @target_app.task(name="json.add")
    def add(a: int, b: int) -> int:
        return a + b

    job_id = add.delay(1, 2).id
    drain(target_app, queues=["default"])
    return job_id


def test_jobs_show_json_times_are_numbers(target_app: App, finished: int) -> None:
    shown = document(run(target_app, "jobs", "show", str(finished), "--json"))
    assert isinstance(shown["wait_seconds"], float) and isinstance(shown["run_seconds"], float), shown
    assert shown["wait_seconds"] >= 0 and shown["run_seconds"] >= 0


def test_a_missing_job_is_a_json_error_and_exit_1(target_app: App) -> None:
    result = run(target_app, "jobs", "show", "999999", "--json")
    assert result.exit_code == 1
    assert document(result) == {"error": {"type": "NotFound", "message": "job 999999 not found", "exit_code": 1}}


def test_a_refused_purge_is_a_json_error_and_deletes_nothing(target_app: App, finished: int) -> None:
    refused = pgtasks_cli(target_app, "jobs", "purge", "--json")
    assert refused.returncode == 1, refused.stderr
    error = msgspec.json.decode(refused.stdout)["error"]
    assert error["type"] == "Refused" and "pass --yes" in error["message"], error
    assert document(run(target_app, "jobs", "show", str(finished), "--json"))["state"] == "completed"


def test_a_usage_error_with_json_is_a_json_error(target_app: App) -> None:
    result = run(target_app, "jobs", "list", "--state", "bogus", "--json")
    assert result.exit_code == 2
    error = document(result)["error"]
    assert error["type"] == "BadParameter" and "'bogus' is not a job state" in error["message"], error


def test_stats_queues_carry_paused_like_queues_list(target_app: App, finished: int) -> None:
    assert run(target_app, "queues", "pause", "default").exit_code == 0
    listed = document(run(target_app, "queues", "list", "--json"))
    stats = document(run(target_app, "stats", "--json"))["queues"]
    assert [(q["queue"], q["paused"]) for q in stats] == [(q["queue"], q["paused"]) for q in listed]
    assert ("default", True) in [(q["queue"], q["paused"]) for q in stats]


def test_queues_alone_lists_the_queues(target_app: App) -> None:
    assert run(target_app, "queues", "pause", "default").exit_code == 0  # a row to list
    alone, listed = run(target_app, "queues"), run(target_app, "queues", "list")
    assert alone.exit_code == 0 and alone.stdout == listed.stdout and "DEFAULT" not in alone.stdout
    assert alone.stdout.startswith("QUEUE") and "\ndefault " in alone.stdout
    assert document(run(target_app, "queues", "--json")) == document(run(target_app, "queues", "list", "--json"))


def test_retrying_a_missing_job_has_no_dangling_colon(target_app: App) -> None:
    result = run(target_app, "jobs", "retry", "999999")
    assert result.exit_code == 1 and result.stdout == "retried 0 job(s)\n", result.stdout
    assert "999999" in result.stderr


def test_periodic_json_is_one_document(app: App) -> None:
    done = pgtasks_cli(app, "--app", "tests.apps.periodic_app:app", "periodic", "--json")
    assert done.returncode == 0, done.stderr
    listed = msgspec.json.decode(done.stdout)
    entry = {s["name"]: s for s in listed["schedules"]}["every-second"]
    assert entry["task"] == "periodic.tick" and entry["last_fire"] is None and isinstance(entry["due"], bool)


def test_periodic_without_app_shows_an_example_for_periodic(app: App) -> None:
    done = pgtasks_cli(app, "periodic")  # as `python -m pgtasks`: the example must not repeat `-m pgtasks`
    assert done.returncode == 2
    assert "e.g. `pgtasks --app myproject.tasks:app periodic`" in done.stderr, done.stderr


def test_migrate_and_leader_json(app: App) -> None:
    assert document(run(app, "migrate", "--json"))["applied"] == []
    status = document(run(app, "migrate", "status", "--json"))
    assert status["pending"] == 0 and all(m["applied_at"] for m in status["migrations"])
    assert document(run(app, "migrate", "--dry-run", "--json"))["pending"] == []
    leader = run(app, "leader", "--json")
    assert leader.exit_code == 1 and document(leader) is None  # no worker ever ran here
