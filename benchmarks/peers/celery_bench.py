"""Celery 5 with the Redis broker on the pgtasks benchmark workloads (peers venv; see benchmarks/compare.py).

Not a PostgreSQL queue: jobs are messages in Redis (--redis-url, else $PGTASKS_BENCH_REDIS_URL, else
redis://127.0.0.1:6379/15: a database of its own). Every run uses its own queue and key prefix
(`bench_cel_<random>`) and deletes its keys afterwards. --database-url is accepted and unused.
No result backend is configured (task_ignore_result), so a finished task writes nothing by itself.

What is measured, and where it differs from the PostgreSQL peers:
- enqueue: N calls of apply_async(), each publishing one message (one Redis LPUSH), timed on the
  client (like pgtasks' sync .delay()).
- bulk: Celery has no bulk insert of its own (a group, too, publishes its tasks one message and one
  round trip at a time). Its messaging library kombu (5.7+) can batch publishes: inside
  Producer.batch() apply_async() buffers each LPUSH in a Redis pipeline, sent once per chunk. That
  is measured by default; `--bulk-path loop` measures plain apply_async() calls sharing a producer
  instead (what a group does).
- drain: N messages queued, then `celery worker` (prefork pool) started as a subprocess. Celery has
  no burst mode and keeps no job table, so the no-op task records its own progress in Redis with
  one pipelined round trip (INCR a completion counter; ZADD LT/GT keep the earliest start and the
  latest finish). This script counts completions from that counter (not from logs), stops the
  worker with SIGTERM (warm shutdown) once all N are done, and reports N / (last finish - first
  start). That round trip is work the other peers do not do per job (their outcome write is their
  own); the start is the task body's start, which comes after the message was fetched.
- latency: an idle worker; jobs enqueued --interval apart, each carrying time.time() taken just
  before apply_async(); the task records (its start - that) in Redis. There is no claim timestamp,
  so the start of the task body stands for it: it includes the hand-off from the consumer to a
  pool process. The worker waits on the queue with BRPOP, so it is woken, not polling.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from peer_common import (
    WorkerProcess,
    delete_run_keys,
    emit,
    emit_idle_latency,
    paced_run,
    parser,
    run_workload,
    wait_until,
)

LIBRARY = "celery"
TASK = "pgtasks_bench.noop"
REDIS_ENV = "PGTASKS_BENCH_REDIS_URL"
LOG_LEVEL_ENV = "PGTASKS_BENCH_CELERY_LOG_LEVEL"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"


class Bench:
    """One run's Celery app, its no-op task and its Redis keys (all named after `run`)."""

    def __init__(self, redis_url: str, run: str) -> None:
        from celery import Celery

        self.redis_url = redis_url
        self.run = run
        self.app: Any = Celery("pgtasks_bench", broker=redis_url, set_as_current=False)
        self.app.conf.update(
            task_default_queue=run,  # also the exchange and routing key: nothing else reads this queue
            task_ignore_result=True,
            broker_connection_retry_on_startup=True,
        )
        self.done_key, self.first_key, self.last_key, self.lat_key = (
            f"{run}:done", f"{run}:first_start", f"{run}:last_finish", f"{run}:latency_ms")
        self._client: Any = None
        self._client_pid = 0
        keys = self

        def noop(enqueued_at: float | None = None) -> None:
            started = time.time()
            # The job's work: none. Then record it, in one round trip.
            pipe = keys.redis().pipeline(transaction=False)
            if enqueued_at is not None:
                pipe.rpush(keys.lat_key, (started - enqueued_at) * 1000)
            pipe.zadd(keys.first_key, {"t": started}, lt=True)
            pipe.zadd(keys.last_key, {"t": time.time()}, gt=True)
            pipe.incr(keys.done_key)
            pipe.execute()

        self.task: Any = self.app.task(name=TASK)(noop)

    def redis(self) -> Any:
        """A Redis client for this process (the worker's pool processes each make their own)."""
        if self._client is None or self._client_pid != os.getpid():
            import redis

            self._client = redis.Redis.from_url(self.redis_url)
            self._client_pid = os.getpid()
        return self._client

    def done(self) -> int:
        return int(self.redis().get(self.done_key) or 0)

    def window(self) -> float:
        """Seconds from the earliest task start to the latest task finish."""
        first = self.redis().zscore(self.first_key, "t")
        last = self.redis().zscore(self.last_key, "t")
        if first is None or last is None:
            raise RuntimeError("celery: no task recorded its start and finish")
        return max(float(last) - float(first), 1e-6)

    def publish(self, jobs: int, chunk: int, *, batch: bool) -> None:
        """Queue `jobs` no-op tasks, `chunk` per producer (and, with `batch`, per pipeline)."""
        for offset in range(0, jobs, chunk):
            n = min(chunk, jobs - offset)
            with self.app.producer_or_acquire() as producer:
                if batch:
                    with producer.batch(max_size=n):
                        for _ in range(n):
                            self.task.apply_async(producer=producer)
                else:
                    for _ in range(n):
                        self.task.apply_async(producer=producer)

    def cleanup(self) -> None:
        """Delete this run's keys, and this run's members of kombu's shared binding sets."""
        delete_run_keys(self.redis(), self.run)


@contextmanager
def bench_run(redis_url: str) -> Iterator[Bench]:
    import redis

    bench = Bench(redis_url, f"bench_cel_{uuid.uuid4().hex[:10]}")
    try:
        bench.redis().ping()
    except redis.RedisError as exc:
        raise SystemExit(f"celery: Redis is not reachable at {redis_url}: {exc}") from None
    try:
        yield bench
    finally:
        bench.cleanup()


def _worker_args(bench: Bench, concurrency: int | None) -> list[str]:
    # The worker subcommand's --schema carries the run name (queue and key prefix).
    args = ["--schema", bench.run]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    return args


def _wait_for(bench: Bench, worker: WorkerProcess, count: int, timeout: float, what: str) -> None:
    wait_until(lambda: bench.done() >= count, timeout=timeout, worker=worker, what=what)


def cmd_enqueue(redis_url: str, jobs: int) -> None:
    with bench_run(redis_url) as bench:
        bench.task.apply_async()  # connects (and declares the queue): not part of enqueueing
        started = time.perf_counter()
        for _ in range(jobs):
            bench.task.apply_async()
        seconds = time.perf_counter() - started
        emit(LIBRARY, "enqueue", jobs, seconds, broker="redis")


def cmd_bulk(redis_url: str, jobs: int, chunk: int, path: str) -> None:
    with bench_run(redis_url) as bench:
        bench.publish(1, 1, batch=path == "batch")  # connects and declares the queue
        started = time.perf_counter()
        bench.publish(jobs, chunk, batch=path == "batch")
        seconds = time.perf_counter() - started
        queued = int(bench.redis().llen(bench.run))
        if queued != jobs + 1:
            raise RuntimeError(f"celery bulk: {queued} messages queued, expected {jobs + 1}")
        emit(LIBRARY, "bulk_enqueue", jobs, seconds, chunk=chunk, broker="redis",
             path="kombu Producer.batch (pipelined LPUSH)" if path == "batch" else "apply_async loop")


def cmd_drain(redis_url: str, jobs: int, concurrency: int | None) -> None:
    with bench_run(redis_url) as bench:
        bench.publish(jobs, 5000, batch=True)
        with WorkerProcess(__file__, "", _worker_args(bench, concurrency)) as w:
            _wait_for(bench, w, jobs, 1800, f"{jobs} jobs to complete")
            wall = time.perf_counter() - w.started_at
            w.stop()
        done = bench.done()
        if done != jobs:
            raise RuntimeError(f"celery drain: {done} of {jobs} completed")
        details: dict[str, Any] = {"concurrency": concurrency or "default", "pool": "prefork"}
        if concurrency is None:
            details["processes"] = os.cpu_count()  # Celery's default: one per CPU
        emit(LIBRARY, "drain", jobs, bench.window(), **details, broker="redis", wall_seconds=round(wall, 3))


def cmd_latency(redis_url: str, jobs: int, interval: float) -> None:
    with bench_run(redis_url) as bench:
        with WorkerProcess(__file__, "", _worker_args(bench, None)) as w:
            # The warm-up job carries no enqueue time, so it records no latency.
            seconds = paced_run(w, lambda: bench.task.apply_async((time.time(),)), bench.done, jobs=jobs,
                                interval=interval, warm_up=bench.task.apply_async)
            w.stop()
        latencies = [float(v) for v in bench.redis().lrange(bench.lat_key, 0, -1)]
        emit_idle_latency(LIBRARY, jobs, seconds, interval, latencies, broker="redis", wakeup="BRPOP")


def cmd_worker(redis_url: str, run: str, concurrency: int | None, log_level: str) -> None:
    bench = Bench(redis_url, run)
    argv = ["worker", "--pool=prefork", f"--loglevel={log_level}", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-Q", run, "-n", f"{run}@%h"]
    if concurrency is not None:
        argv.append(f"--concurrency={concurrency}")
    bench.app.worker_main(argv)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__ or LIBRARY)
    p.add_argument("--redis-url", default=os.environ.get(REDIS_ENV, DEFAULT_REDIS),
                   help=f"the broker [env: {REDIS_ENV}]; use a database nothing else uses")
    p.add_argument("--bulk-path", choices=("batch", "loop"), default="batch",
                   help="bulk: kombu's Producer.batch pipeline, or plain apply_async calls")
    p.add_argument("--worker-log-level", default=os.environ.get(LOG_LEVEL_ENV, "INFO"),
                   help="the worker's --loglevel (at INFO, Celery logs 2 lines a task)")
    args = p.parse_args(argv)
    # The worker subprocess is this script again: it finds the broker and log level in its environment.
    os.environ[REDIS_ENV] = args.redis_url
    os.environ[LOG_LEVEL_ENV] = args.worker_log_level
    run_workload(args, args.redis_url, enqueue=cmd_enqueue, drain=cmd_drain, latency=cmd_latency,
                 bulk=lambda url, jobs, chunk: cmd_bulk(url, jobs, chunk, args.bulk_path),
                 worker=lambda url, a: cmd_worker(url, a.schema, a.concurrency, a.worker_log_level))


if __name__ == "__main__":
    main()
