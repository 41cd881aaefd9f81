"""Enqueue benchmarks: (a) one job per call, each its own transaction; (b) bulk delay_many in chunks.

--with-args times the public API with a real argument: `.delay(n=i)` and
`delay_many([task.s(n=i) for i in ...])`, signatures built inside the timed window.

Prints one JSON line per workload (and per chunk size for bulk).
"""

from __future__ import annotations

from bench_common import base_parser, emit, repeated

from pgtasks.ops import bench


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=5000, help="jobs for the one-per-transaction enqueue")
    parser.add_argument("--bulk-jobs", type=int, default=50_000, help="jobs for the bulk enqueue")
    parser.add_argument("--chunks", default="5000", help="comma-separated jobs-per-statement sizes to try")
    parser.add_argument("--only", choices=("enqueue", "bulk"), default=None, help="run one of the two")
    parser.add_argument("--with-args", action="store_true",
                        help="enqueue `.delay(n=i)` and `delay_many([task.s(n=i) ...])` (signatures built in "
                             "the timed window) instead of argument-less calls")
    args = parser.parse_args(argv)
    dsn = args.database_url

    if args.only in (None, "enqueue"):
        def single() -> bench.Result:
            with bench.throwaway_app(dsn) as app:
                return bench.enqueue_single(app, args.jobs, with_args=args.with_args)

        emit(repeated(args.repeat, single))
    if args.only in (None, "bulk"):
        for chunk in (int(c) for c in args.chunks.split(",")):
            def bulk(chunk: int = chunk) -> bench.Result:
                with bench.throwaway_app(dsn) as app:
                    return bench.enqueue_bulk(app, args.bulk_jobs, chunk=chunk, with_args=args.with_args)

            emit(repeated(args.repeat, bulk))


if __name__ == "__main__":
    main()
