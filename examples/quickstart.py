"""The quickstart demo: enqueue inside transactions (one commits, one rolls back), run a worker, show what ran.

Run it with `python examples/quickstart.py`. With no PGTASKS_DATABASE_URL set, pgtasks starts an
embedded PostgreSQL in the project's .pgtasks/postgres (found walking up from the current folder, as
git finds .git) and migrates it; the worker process, and any `pgtasks` command run from a folder of
the project, share it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pgtasks
from pgtasks.storage.embedded import stop_command

app = pgtasks.App()


@app.task(name="quickstart.send_welcome_email", max_attempts=3, retry=pgtasks.Fixed(0))
def send_welcome_email(user_id: int, email: str) -> str:
    """Pretend to email a new user; fails once to show a retry."""
    if pgtasks.current_job().attempt == 1:
        raise ConnectionError("SMTP server busy")
    return f"welcome email sent to {email} (user {user_id})"


@app.task(name="quickstart.add")
async def add(a: int, b: int) -> int:
    """An async task: runs on the worker's event loop."""
    return a + b


def signup(email: str, *, fail: bool = False) -> None:
    """Insert a user and enqueue the welcome email in ONE transaction."""
    with app.transaction() as conn:
        row = conn.execute("INSERT INTO quickstart_users (email) VALUES (%s) RETURNING id", [email]).fetchone()
        assert row is not None
        send_welcome_email.delay(row[0], email)
        if fail:
            raise ValueError(f"payment declined for {email}")


def main() -> None:
    with app.transaction() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS quickstart_users (id serial PRIMARY KEY, email text NOT NULL)")
        conn.execute("TRUNCATE quickstart_users RESTART IDENTITY")
        conn.execute(f'TRUNCATE "{app.schema}".jobs')
    where = f"embedded PostgreSQL in {app.database.embedded_location().data_dir}" if app.is_embedded \
        else "PGTASKS_DATABASE_URL"
    print(f"database: {where}")

    signup("alice@example.com")
    print("committed: alice signed up, welcome email enqueued in the same transaction")
    try:
        signup("bob@example.com", fail=True)
    except ValueError as exc:
        print(f"rolled back: {exc} -> no user row and no job for bob")
    add.delay(2, 3)

    print("running `pgtasks worker --burst` in a separate process ...", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(
        [sys.executable, "-m", "pgtasks", "--app", "quickstart:app", "worker", "--burst", "--poll-interval", "0.1",
         "--log-level", "INFO"],
        check=True, env=env,
    )

    print("what ran:")
    with app.transaction() as conn:
        users = [r[0] for r in conn.execute("SELECT email FROM quickstart_users ORDER BY id")]
        rows = conn.execute(
            f'SELECT id, task, state::text, attempt, result::text FROM "{app.schema}".jobs ORDER BY id'
        ).fetchall()
    for job_id, task, state, attempt, result in rows:
        print(f"  job {job_id}: {task:<32} {state:<10} attempts={attempt} result={result}")
    print(f"users: {users}")
    if app.is_embedded:
        # The command as it works when pasted: the bare `pgtasks` only when the venv is active.
        print("the embedded PostgreSQL keeps running for your next run and for `pgtasks` commands; stop it with: "
              f"{stop_command(app.database.embedded_location())}")
    app.close()


if __name__ == "__main__":
    main()
