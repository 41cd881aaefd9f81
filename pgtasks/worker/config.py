"""WorkerConfig: every worker option, validated once, with the error naming the option and the fix."""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pgtasks.core.errors import ConfigurationError
from pgtasks.core.options import to_seconds, validate_queue
from pgtasks.leadership.cleaner import Retention
from pgtasks.leadership.maintenance import MaintenanceConfig
from pgtasks.storage.connections import check_dsn
from pgtasks.worker.notifier import CANARY_INTERVAL, CANARY_TIMEOUT


def _positive_int(name: str, value: Any, minimum: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name}={value!r}: expected an integer >= {minimum}{why}")
    return value


def supervisor_pid(supervisor: str) -> int:
    """The pid of a supervisor given as "host:pid"."""
    host, _, pid = supervisor.rpartition(":")
    if not host or not pid.isdigit() or int(pid) < 1:
        raise ConfigurationError(f"supervisor={supervisor!r}: expected 'host:pid', e.g. 'vm:4100'")
    return int(pid)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    """How a Worker runs; `pgtasks worker`'s options map onto these fields one for one.

    - queues: the queues served (a list, or a comma-separated string); concurrency: jobs at once.
    - poll_interval: seconds between polls, the net under LISTEN (and the only wakeup without it).
    - listen: None detects (LISTEN where it works), True requires it, False polls only.
    - listen_dsn: a direct or session-pooled DSN for the LISTEN connection behind a transaction pooler.
    - grace: seconds running jobs get to finish at shutdown before they are put back.
    - burst: drain what is due, then exit. pool_size: the worker's connections (at least 2).
    - canary_interval / canary_timeout: how often the listener is proven alive, and how long to wait.
    - metrics_port: serve Prometheus metrics there. claim_ahead: claim beyond free slots while jobs are short.
    - leader_ttl, heartbeat_interval, rescue_after, retention, elect: see MaintenanceConfig.
    - wait_for_database: seconds to keep retrying at start while the database is unreachable (a
      line per try says when the next one comes); 0, the default, exits at once with the reason.
    - max_jobs / max_memory_mb: recycling (see worker/lifetime.py). After claiming max_jobs jobs,
      or once its resident memory passes max_memory_mb, the worker stops fetching, finishes its
      running jobs and stops, so that a fresh process replaces it (None: no limit).
    - supervisor: "host:pid" of the `pgtasks worker --processes N` supervisor this worker runs
      under (set by the supervisor); written with the heartbeat, and the worker stops if that
      process goes away.
    """

    queues: Sequence[str] = ("default",)
    concurrency: int = 10
    poll_interval: float = 1.0
    listen: bool | None = None
    grace: float = 30.0
    burst: bool = False
    pool_size: int = 4
    worker_id: str = field(default_factory=default_worker_id)
    listen_dsn: str | None = None
    canary_interval: float = CANARY_INTERVAL
    canary_timeout: float = CANARY_TIMEOUT
    metrics_port: int | None = None
    leader_ttl: float = 10.0
    heartbeat_interval: float = 5.0
    rescue_after: float = 60.0
    retention: Retention | None = None
    elect: bool | None = None  # None: stand for election unless burst
    claim_ahead: bool = True
    wait_for_database: float = 0.0
    max_jobs: int | None = None
    max_memory_mb: int | None = None
    supervisor: str | None = None

    def __post_init__(self) -> None:
        queues = self.queues
        if isinstance(queues, str):
            queues = [q.strip() for q in queues.split(",") if q.strip()]  # as `worker --queues` reads it
        if not queues:
            raise ConfigurationError("queues=[]: give at least one queue name, e.g. queues=['default']")
        self._set("queues", tuple(validate_queue(q) for q in queues))
        _positive_int("concurrency", self.concurrency, 1)
        _positive_int("pool_size", self.pool_size, 2, " (the worker needs at least 2 connections: fetch and complete)")
        self._set("poll_interval", to_seconds("poll_interval", self.poll_interval))
        self._set("grace", to_seconds("grace", self.grace, zero_ok=True))
        self._set("canary_interval", to_seconds("canary_interval", self.canary_interval))
        self._set("canary_timeout", to_seconds("canary_timeout", self.canary_timeout))
        if self.listen not in (None, True, False):
            raise ConfigurationError(f"listen={self.listen!r}: expected None (detect), True or False")
        if self.listen_dsn is not None:
            check_dsn(self.listen_dsn, name="listen_dsn")
        if self.metrics_port is not None:
            _positive_int("metrics_port", self.metrics_port, 0)
        self._set("wait_for_database", to_seconds("wait_for_database", self.wait_for_database, zero_ok=True))
        if self.max_jobs is not None:
            _positive_int("max_jobs", self.max_jobs, 1)
        if self.max_memory_mb is not None:
            _positive_int("max_memory_mb", self.max_memory_mb, 1, " (megabytes of resident memory)")
        if self.supervisor is not None:
            supervisor_pid(self.supervisor)
        self.maintenance()  # leadership settings fail here too, not at start

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def maintenance(self) -> MaintenanceConfig:
        """Heartbeat, election and leader-only settings. A burst worker drains and exits, so by
        default it does not stand for election."""
        return MaintenanceConfig(leader_ttl=self.leader_ttl, heartbeat_interval=self.heartbeat_interval,
                                 rescue_after=self.rescue_after, retention=self.retention or Retention(),
                                 elect=(not self.burst) if self.elect is None else self.elect)

    def connection_budget(self) -> dict[str, int]:
        """Server connections one worker process with this config holds at most: the pool plus the
        listener. With listen=None (auto) the listener is counted: the worst case, before the worker
        has detected whether LISTEN works."""
        listener = 0 if self.listen is False else 1
        return {"pool": self.pool_size, "listener": listener, "total": self.pool_size + listener}

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> WorkerConfig:
        """A config from keyword options, naming any that WorkerConfig does not have."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigurationError(f"unknown worker option(s) {unknown}; the options are {sorted(known)}")
        return cls(**options)
