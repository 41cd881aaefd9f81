"""The Store: every named query of one schema, as methods; the one place that executes SQL.

It is composed of one part per domain, each in its own module next to its .sql file. Sync methods
take a psycopg Connection, `a`-prefixed ones an AsyncConnection; where a query has both faces,
they run the same operation (see pgtasks.storage.steps). psycopg errors become pgtasks errors.
Benchmark queries live apart, in pgtasks.storage.bench.
"""

from __future__ import annotations

from pgtasks.storage.dashboard import DashboardStore
from pgtasks.storage.doctor import DoctorStore
from pgtasks.storage.jobs import COPY_MIN_ROWS, JobStore
from pgtasks.storage.leader import LeaderStore
from pgtasks.storage.limits import LimitStore
from pgtasks.storage.maintenance import MaintenanceStore
from pgtasks.storage.migrations import MigrationStore
from pgtasks.storage.operations import OperationsStore
from pgtasks.storage.periodic import PeriodicStore
from pgtasks.storage.queues import QueueStore
from pgtasks.storage.session import SessionStore
from pgtasks.storage.workers import WorkerStore
from pgtasks.storage.workflows import WorkflowStore

__all__ = ["COPY_MIN_ROWS", "Store"]


class Store(JobStore, LeaderStore, PeriodicStore, WorkerStore, MaintenanceStore, QueueStore, OperationsStore,
            DoctorStore, DashboardStore, MigrationStore, SessionStore, WorkflowStore, LimitStore):
    """Named queries for one schema (see the module docstring)."""
