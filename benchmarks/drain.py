"""Drain benchmark (c): a burst `pgtasks worker` drains N queued no-op jobs.

Runs once per --concurrency value ("default" = the worker's default). The rate is N divided by
the window from the first claim to the last outcome, read from the jobs table; completions are
counted there too. --profile wraps the worker in py-spy (or any command prefix).
"""

from __future__ import annotations

import shlex

from bench_common import base_parser, emit, repeated

from pgtasks.ops import bench


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--concurrency", default="default,10",
                        help="comma-separated worker concurrencies; 'default' = the worker's default")
    parser.add_argument("--worker-args", default="", help="extra `pgtasks worker` arguments, shell-quoted")
    parser.add_argument("--task", choices=("sync", "async"), default="sync",
                        help="drain a sync no-op (run on a thread) or an async one (run on the event loop)")
    parser.add_argument("--db-cpu", action="store_true",
                        help="also sample the CPU time of the database processes serving the worker (local server)")
    parser.add_argument("--profile", default="",
                        help="command prefix for the worker, e.g. 'py-spy record -o drain.svg --'")
    args = parser.parse_args(argv)
    for value in args.concurrency.split(","):
        concurrency = None if value.strip() == "default" else int(value)

        def run(concurrency: int | None = concurrency) -> bench.Result:
            with bench.throwaway_app(args.database_url) as app:
                return bench.drain(app, args.jobs, concurrency=concurrency,
                                   extra_args=shlex.split(args.worker_args), prefix=shlex.split(args.profile),
                                   db_cpu=args.db_cpu,
                                   task_name=bench.ASYNC_NOOP_TASK if args.task == "async" else bench.NOOP_TASK)

        emit(repeated(args.repeat, run))


if __name__ == "__main__":
    main()
