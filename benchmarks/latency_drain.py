"""Idle enqueue-to-start latency, LISTEN on and off; the drain rate of 10,000 no-op jobs."""

from __future__ import annotations

from bench_common import base_parser, emit, repeated

from pgtasks.ops import bench


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--drain-jobs", type=int, default=10_000)
    args = parser.parse_args(argv)
    dsn = args.database_url
    for listen in (True, False):
        def latency(listen: bool = listen) -> bench.Result:
            with bench.throwaway_app(dsn) as app:
                return bench.idle_latency(app, args.latency_jobs, listen=listen)

        emit(repeated(args.repeat, latency))

    def drain() -> bench.Result:
        with bench.throwaway_app(dsn) as app:
            return bench.drain(app, args.drain_jobs)

    emit(repeated(args.repeat, drain))


if __name__ == "__main__":
    main()
