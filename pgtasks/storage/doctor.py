"""Queries of doctor.sql: what `pgtasks doctor` reads about the server, the table and long transactions."""

from __future__ import annotations

from typing import Any

from psycopg import Connection

from pgtasks.storage.base import StoreBase
from pgtasks.storage.steps import select_dict, select_dicts


class DoctorStore(StoreBase):
    def doctor_server(self, conn: Connection[Any]) -> dict[str, Any]:
        found = self.run(conn, select_dict(self.queries["doctor_server"]))
        if found is None:  # a SELECT of settings always returns its one row
            raise AssertionError("doctor_server returned no row")
        return found

    def doctor_table_health(self, conn: Connection[Any], schema: str) -> dict[str, Any] | None:
        return self.run(conn, select_dict(self.queries["doctor_table_health"], {"schema": schema}))

    def doctor_long_transactions(self, conn: Connection[Any], seconds: float) -> list[dict[str, Any]]:
        return self.run(conn, select_dicts(self.queries["doctor_long_transactions"], {"seconds": seconds}))

    def doctor_unrunnable_tasks(self, conn: Connection[Any], stale_after: float) -> list[dict[str, Any]]:
        return self.run(conn, select_dicts(self.queries["doctor_unrunnable_tasks"], {"stale_after": stale_after}))

    def doctor_replication_slots(self, conn: Connection[Any]) -> list[dict[str, Any]]:
        return self.run(conn, select_dicts(self.queries["doctor_replication_slots"]))
