"""Shared fixtures: a real PostgreSQL (PGTASKS_TEST_DATABASE_URL, else the embedded default) and a
fresh, migrated schema per test so tests never see each other's jobs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgtasks import App

ROOT = Path(__file__).resolve().parent.parent

# The PgBouncer fixtures (pgbouncer, target, target_app) live in their own module.
pytest_plugins = ["tests.pgbouncer_fixtures"]


@pytest.fixture(scope="session")
def database_url() -> str:
    url = os.environ.get("PGTASKS_TEST_DATABASE_URL")
    if url:
        return url
    from pgtasks.storage.embedded import embedded_dsn

    return embedded_dsn(ROOT / ".pgtasks" / "test-postgres")


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    name = f"pgt_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def app(database_url: str, schema: str) -> Iterator[App]:
    application = App(database_url, schema=schema)
    application.migrate()
    yield application
    application.close()


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain autocommit connection for assertions."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection
