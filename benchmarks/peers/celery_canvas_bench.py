"""Celery 5 with Redis on the workflow workloads of benchmarks/workflows_vs_celery.py (peers venv).

Redis is the broker and the result backend (--redis-url, else $PGTASKS_BENCH_REDIS_URL, else
redis://127.0.0.1:6379/15). Each run uses its own queue and key prefix (`bench_cel_<random>`,
also the result backend's global_keyprefix) and deletes its keys afterwards. --database-url is
accepted and unused.

Configured as Celery's documentation says to run these at their best:
- the Redis result backend, which joins a chord natively (an atomic counter and a sorted set of
  the members' results, in member order, updated by each member; no chord_unlock polling task);
- chord members store their results (a chord needs them; Celery's docs: tasks of a chord must not
  ignore their results); every other task ignores its result (task_ignore_result), as the docs
  advise for tasks nobody reads: chain steps hand their return value to the next message
  themselves;
- worker_prefetch_multiplier high (--prefetch-multiplier, default 64): the Optimizing guide's
  advice for many short tasks;
- the worker with --without-gossip --without-mingle --without-heartbeat, at --loglevel WARNING;
  --pool prefork (the default) or threads, and --concurrency as given;
- the drain's jobs published through kombu's Producer.batch() (pipelined LPUSH, as
  celery_bench.py's bulk enqueue); a chord's header message by message, Celery's own way, which
  measured faster than batched (see main()); --publish picks either for any workload.

Workloads (the worker is started and warm before the clock starts; every end time is taken in a
task body with time.time(), on the same host as the client's start time):
- chord: chord(member.s(i) for i in range(N))(total.s()); from the apply_async() call to the end
  of the callback's body. The callback checks it got range(N) in order.
- chain: chain(step.s(0), step.s() x N-2, last.s()); from apply_async() to the end of the last
  step's body, which checks the value is N. Celery carries the rest of a chain in each message,
  so the first message holds every remaining step.
- drain: N member tasks that ignore their results; from publishing the first to the end of the
  body of the task that completed last. Celery keeps no job table, so each task INCRs a counter
  in Redis (one round trip the other libraries do not make), and the one that reaches N records
  the time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from peer_common import DEFAULT_DSN, WorkerProcess, delete_run_keys

LIBRARY = "celery"
REDIS_ENV = "PGTASKS_BENCH_REDIS_URL"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
PREFIX = "bench_cel_"


class CanvasBench:
    """One run's Celery app, its tasks and its Redis keys (all named after `run`)."""

    def __init__(self, redis_url: str, run: str, prefetch: int) -> None:
        from celery import Celery

        self.redis_url = redis_url
        self.run = run
        self.app: Any = Celery("pgtasks_wfbench", broker=redis_url, backend=redis_url, set_as_current=False)
        self.app.conf.update(
            task_default_queue=run,  # also the exchange and routing key: nothing else reads this queue
            task_ignore_result=True,
            result_backend_transport_options={"global_keyprefix": f"{run}:"},
            worker_prefetch_multiplier=prefetch,
            broker_connection_retry_on_startup=True,
            worker_hijack_root_logger=False,
        )
        self.done_key, self.count_key = f"{run}:done", f"{run}:count"
        self._client: Any = None
        self._client_pid = 0
        bench = self

        def member(index: int) -> int:
            return index

        def total(values: list[int], expected: int) -> int:
            ok = values == list(range(expected))
            bench.finish({"ok": ok, "count": len(values)})
            return len(values)

        def step(value: int) -> int:
            return value + 1

        def last(value: int, expected: int) -> int:
            bench.finish({"ok": value + 1 == expected, "value": value + 1})
            return value + 1

        def plain(index: int, expected: int) -> None:
            if int(bench.redis().incr(bench.count_key)) == expected:
                bench.finish({"ok": True, "count": expected})

        def warm() -> None:
            bench.finish({"ok": True, "warm": True})

        self.member: Any = self.app.task(name="wfbench.member", ignore_result=False)(member)
        self.total: Any = self.app.task(name="wfbench.total")(total)
        self.step: Any = self.app.task(name="wfbench.step")(step)
        self.last: Any = self.app.task(name="wfbench.last")(last)
        self.plain: Any = self.app.task(name="wfbench.plain")(plain)
        self.warm: Any = self.app.task(name="wfbench.warm")(warm)

    def redis(self) -> Any:
        """A Redis client for this process (each pool process makes its own)."""
        if self._client is None or self._client_pid != os.getpid():
            import redis

            self._client = redis.Redis.from_url(self.redis_url)
            self._client_pid = os.getpid()
        return self._client

    def finish(self, what: dict[str, Any]) -> None:
        self.redis().rpush(self.done_key, json.dumps({**what, "at": time.time()}))

    def finished(self, worker: WorkerProcess, timeout: float) -> dict[str, Any]:
        """The next record a finishing task pushed (BLPOP: woken at once); fails if the worker died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            popped = self.redis().blpop([self.done_key], timeout=1)
            if popped is not None:
                found: dict[str, Any] = json.loads(popped[1])
                return found
            if not worker.alive():
                raise RuntimeError(f"the worker exited:\n{worker.log_tail()}")
        raise RuntimeError(f"nothing finished within {timeout}s:\n{worker.log_tail()}")

    def publishing(self, batch: bool, size: int) -> Any:
        """A producer whose publishes are pipelined (batch) or sent one by one."""
        @contextmanager
        def producing() -> Iterator[Any]:
            with self.app.producer_or_acquire() as producer:
                if batch:
                    with producer.batch(max_size=size):
                        yield producer
                else:
                    yield producer
        return producing()

    def cleanup(self) -> None:
        """Delete this run's keys, and this run's members of kombu's shared binding sets."""
        delete_run_keys(self.redis(), self.run)


@contextmanager
def bench_run(args: argparse.Namespace) -> Iterator[tuple[CanvasBench, WorkerProcess]]:
    """A fresh run with its worker started and warm (one task run end to end)."""
    import redis

    bench = CanvasBench(args.redis_url, PREFIX + uuid.uuid4().hex[:10], args.prefetch_multiplier)
    try:
        bench.redis().ping()
    except redis.RedisError as exc:
        raise SystemExit(f"celery: Redis is not reachable at {args.redis_url}: {exc}") from None
    try:
        worker_args = ["--schema", bench.run, "--concurrency", str(args.concurrency), "--pool", args.pool,
                       "--prefetch-multiplier", str(args.prefetch_multiplier)]
        with WorkerProcess(__file__, "", worker_args) as worker:
            bench.warm.apply_async()
            bench.finished(worker, 120)
            yield bench, worker
            worker.stop()
    finally:
        bench.cleanup()


def emit(workload: str, size: int, seconds: float, enqueue_seconds: float, args: argparse.Namespace,
         **details: Any) -> None:
    print(json.dumps({"library": LIBRARY, "workload": workload, "jobs": size, "seconds": round(seconds, 4),
                      "rate": round(size / seconds, 1), "enqueue_seconds": round(enqueue_seconds, 4),
                      "us_per_job": round(seconds / size * 1e6, 1), "concurrency": args.concurrency,
                      "pool": args.pool, "prefetch_multiplier": args.prefetch_multiplier, "publish": args.publish,
                      **details}), flush=True)


def check(done: dict[str, Any], what: str) -> None:
    if not done.get("ok"):
        raise RuntimeError(f"celery {what}: wrong result {done}")


def cmd_chord(args: argparse.Namespace) -> None:
    from celery import chord

    with bench_run(args) as (bench, worker):
        header = [bench.member.s(i) for i in range(args.size)]
        body = bench.total.s(expected=args.size)
        started = time.time()
        with bench.publishing(args.publish == "batch", args.size + 1) as producer:
            handle = chord(header)(body, producer=producer)
        enqueued = time.time() - started
        done = bench.finished(worker, 1800)
        check(done, "chord")
        emit("chord", args.size, done["at"] - started, enqueued, args)
        # The client subscribed to every member's result and keeps waiting for each until it is
        # read (left to interpreter shutdown, every unsubscribe fails noisily): read them, after
        # the clock stopped.
        if handle.parent.get(timeout=600) != list(range(args.size)):
            raise RuntimeError("celery chord: the members' stored results differ from range(N)")


def cmd_chain(args: argparse.Namespace) -> None:
    from celery import chain

    with bench_run(args) as (bench, worker):
        steps = [bench.step.s(0), *(bench.step.s() for _ in range(args.size - 2)), bench.last.s(expected=args.size)]
        started = time.time()
        chain(*steps).apply_async()
        enqueued = time.time() - started
        done = bench.finished(worker, 1800)
        check(done, "chain")
        emit("chain", args.size, done["at"] - started, enqueued, args)


def cmd_drain(args: argparse.Namespace) -> None:
    with bench_run(args) as (bench, worker):
        started = time.time()
        with bench.publishing(args.publish == "batch", args.size) as producer:
            for i in range(args.size):
                bench.plain.apply_async((i, args.size), producer=producer)
        enqueued = time.time() - started
        done = bench.finished(worker, 1800)
        check(done, "drain")
        emit("drain", args.size, done["at"] - started, enqueued, args)


def cmd_worker(args: argparse.Namespace) -> None:
    bench = CanvasBench(args.redis_url, args.schema, args.prefetch_multiplier)
    argv = ["worker", f"--pool={args.pool}", "--loglevel=WARNING", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-Q", args.schema, "-n", f"{args.schema}@%h",
            f"--concurrency={args.concurrency}", f"--prefetch-multiplier={args.prefetch_multiplier}"]
    bench.app.worker_main(argv)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--database-url", default=os.environ.get("PGTASKS_DATABASE_URL", DEFAULT_DSN),
                   help="accepted for the command line shared with the other peers; unused")
    p.add_argument("--redis-url", default=os.environ.get(REDIS_ENV, DEFAULT_REDIS),
                   help=f"broker and result backend [env: {REDIS_ENV}]; use a database nothing else uses")
    sub = p.add_subparsers(dest="command", required=True)
    # A chord's header measured slower published in a batch (10,000 members, alternated runs: 14.5
    # and 16.7 s end to end message by message, 17.4 and 31.6 s batched; its members cannot start
    # before the batch is flushed), so the chord defaults to Celery's own message-by-message way.
    for name, size, what, publish in (("chord", 10_000, "members", "plain"), ("chain", 1000, "steps", "plain"),
                                      ("drain", 10_000, "jobs", "batch")):
        s = sub.add_parser(name, help=f"{name} of --size {what}")
        s.add_argument("--size", type=int, default=size)
        s.add_argument("--publish", choices=("batch", "plain"), default=publish)
    w = sub.add_parser("worker", help="(internal) the worker subprocess")
    w.add_argument("--schema", required=True, help="the run's name: queue and key prefix")
    for s in (*sub.choices.values(),):
        s.add_argument("--concurrency", type=int, default=10)
        s.add_argument("--pool", choices=("prefork", "threads"), default="prefork")
        s.add_argument("--prefetch-multiplier", type=int, default=64)
    args = p.parse_args(argv)
    # The worker subprocess is this script again: it finds the broker in its environment.
    os.environ[REDIS_ENV] = args.redis_url
    {"chord": cmd_chord, "chain": cmd_chain, "drain": cmd_drain, "worker": cmd_worker}[args.command](args)


if __name__ == "__main__":
    main()
