"""Typed, frozen records that cross module boundaries: job states, claimed jobs, outcomes."""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec


class JobState(enum.StrEnum):
    """The states of a job; the same names as River's state machine."""

    WAITING = "waiting"  # a workflow step whose predecessors have not all completed
    AVAILABLE = "available"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYABLE = "retryable"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    DISCARDED = "discarded"


# The one vocabulary of state groups; the CLI, results and testing use these, the SQL spells the same.
FINAL_STATES = frozenset({JobState.COMPLETED, JobState.CANCELLED, JobState.DISCARDED})
# Waiting to run: what a worker may claim once run_at has come.
PENDING_STATES = (JobState.AVAILABLE, JobState.SCHEDULED, JobState.RETRYABLE)
# Not final: waiting for predecessors, waiting to run, or running now.
UNFINISHED_STATES = (JobState.WAITING, *PENDING_STATES, JobState.RUNNING)
ALL_STATES = tuple(JobState)


class ClaimedJob(msgspec.Struct, frozen=True):
    """A job a worker has claimed (state = running); `claims` is the fencing token of this claim."""

    id: int
    task: str
    queue: str
    args: str  # the raw JSON text; decoded against the task's signature by the worker
    priority: int
    attempt: int
    max_attempts: int
    claims: int
    run_at: datetime
    created_at: datetime
    expired: bool
    traceparent: str | None = None  # the W3C trace context of the enqueue (pgtasks.otel), if traced


class ErrorEntry(msgspec.Struct, frozen=True):
    """One failed attempt, appended to the job's `errors` array."""

    attempt: int
    at: datetime
    type: str  # the exception class's qualified name, or pgtasks' own word (Cancelled, Expired, Rescued, ...)
    message: str
    traceback: str | None = None
    # The class's module, so a waiter can find the class again (pgtasks.core.failures); None in
    # entries of pgtasks' own words, and in entries written before it was recorded.
    module: str | None = None


class Outcome(msgspec.Struct, frozen=True):
    """What one attempt wants written back to its job, fenced on (job_id, claims)."""

    job_id: int
    claims: int
    state: JobState
    retry_in: float | None = None  # seconds from now until run_at, for retryable / scheduled
    attempt_delta: int = 0  # -1 gives the attempt back (Snooze, shutdown put-back)
    error: ErrorEntry | None = None
    result: bytes | None = None  # msgspec-encoded JSON of the return value

    @classmethod
    def completed(cls, job: ClaimedJob, result: bytes | None = None) -> Outcome:
        return cls(job.id, job.claims, JobState.COMPLETED, result=result)

    @classmethod
    def retry(cls, job: ClaimedJob, delay: float, error: ErrorEntry) -> Outcome:
        """Retryable after `delay` seconds, the attempt counted."""
        return cls(job.id, job.claims, JobState.RETRYABLE, retry_in=max(float(delay), 0.0), error=error)

    @classmethod
    def discarded(cls, job: ClaimedJob, error: ErrorEntry) -> Outcome:
        return cls(job.id, job.claims, JobState.DISCARDED, error=error)

    @classmethod
    def cancelled(cls, job: ClaimedJob, error: ErrorEntry | None = None) -> Outcome:
        return cls(job.id, job.claims, JobState.CANCELLED, error=error)

    @classmethod
    def snoozed(cls, job: ClaimedJob, seconds: float) -> Outcome:
        """Scheduled again after `seconds`, the attempt given back."""
        return cls(job.id, job.claims, JobState.SCHEDULED, retry_in=seconds, attempt_delta=-1)

    @classmethod
    def put_back(cls, job: ClaimedJob, error: ErrorEntry | None = None) -> Outcome:
        """Claimable again at once, the attempt given back (shutdown, or claimed ahead and never started)."""
        return cls(job.id, job.claims, JobState.AVAILABLE, attempt_delta=-1, error=error)


class EnqueueRow(msgspec.Struct, frozen=True):
    """One job to insert, its arguments already encoded; times are relative to the database clock."""

    task: str
    queue: str
    args: str
    priority: int
    max_attempts: int
    run_at: datetime | None = None  # an absolute eta
    delay: float | None = None  # a countdown in seconds, applied with the database's now()
    expires_at: datetime | None = None
    expires_in: float | None = None
    unique_key: str | None = None
    traceparent: str | None = None  # set by pgtasks.otel's enqueuer: the producer span's W3C trace context
    limit_key: str | None = None  # the value of the task's per-key limit (pgtasks.Limit(key=...))


class StepRow(msgspec.Struct, frozen=True):
    """One step of a workflow to insert: a job row plus its place in the DAG, by step index.

    `args` is the step's own arguments, encoded; the input parameter, when there is one, is
    filled in by the database from `input_from`'s results when the step becomes ready.
    """

    step: int
    task: str
    queue: str
    args: str
    priority: int
    max_attempts: int
    waits: int  # predecessors that must complete first; 0: the step runs at once
    next_steps: tuple[int, ...] = ()
    input_from: tuple[int, ...] = ()
    input_param: str | None = None
    input_list: bool = False
    run_at: datetime | None = None  # an absolute eta
    delay: float | None = None  # a countdown, from the enqueue (a first step) or from when it is ready
    expires_at: datetime | None = None
    expires_in: float | None = None
    limit_key: str | None = None  # the value of the task's per-key limit, known at enqueue


class LinkErrorSpec(msgspec.Struct, frozen=True):
    """The job a workflow's first failure inserts: the failed job's id and its last error entry go
    into `id_param` and `error_param`, on top of `args` (a JSON object)."""

    task: str
    queue: str
    priority: int
    max_attempts: int
    args: msgspec.Raw
    id_param: str | None  # None for an immutable errback (.si()): it receives neither
    error_param: str | None
    step: int


class WorkflowPlan(msgspec.Struct, frozen=True):
    """A whole workflow, ready to insert: its steps in index order and how to read its result."""

    kind: str
    structure: dict[str, object]
    steps: tuple[StepRow, ...]
    result_steps: tuple[int, ...]
    result_list: bool
    link_error: LinkErrorSpec | None = None


# -- leadership, periodic fires, heartbeats, maintenance -------------------------------------


class LeaderLease(msgspec.Struct, frozen=True):
    """The leader row as one query saw it; `active` is expires_at > the query's now."""

    leader_id: str
    term: int
    elected_at: datetime
    expires_at: datetime
    active: bool = True
    db_now: datetime | None = None


class LastFire(msgspec.Struct, frozen=True):
    """A schedule's newest fire record (its cursor) and its newest enqueued tick, if any."""

    schedule: str
    last_time: datetime | None
    last_outcome: str | None
    enqueued_time: datetime | None
    enqueued_job_id: int | None


class FireResult(msgspec.Struct, frozen=True):
    """What recording one tick did.

    recorded is False when the tick was already recorded (by this or another scheduler): then
    nothing was written. job_id is the job enqueued for the tick. unfinished_job_id is set when
    the schedule forbids overlap and the tick was skipped because that job has not finished.
    """

    recorded: bool
    job_id: int | None = None
    unfinished_job_id: int | None = None


class RescuedJob(msgspec.Struct, frozen=True):
    """A running job the rescuer took back from a silent worker; `state` is retryable or discarded."""

    id: int
    queue: str
    state: str
    attempted_by: str | None
    attempt: int


class WorkerInfo(msgspec.Struct, frozen=True):
    """One row of the workers table."""

    worker_id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    running: list[int]
    started_at: datetime
    last_seen_at: datetime
    seen_ago_s: float
    supervisor: str | None = None  # "host:pid" of its `--processes N` supervisor
