"""Idle-latency benchmark (d): an idle worker; N jobs enqueued --interval apart; p50/p95/p99 of start - enqueue.

Start - enqueue is jobs.attempted_at - jobs.created_at (both now() on the database clock). With
--no-listen the worker only polls, so latency is bounded by --poll-interval.
"""

from __future__ import annotations

from bench_common import base_parser, emit, repeated

from pgtasks.ops import bench


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between enqueues")
    parser.add_argument("--no-listen", action="store_true", help="also measure a worker without LISTEN")
    parser.add_argument("--poll-interval", type=float, default=None,
                        help="the worker's --poll-interval (default: the worker's default)")
    args = parser.parse_args(argv)
    modes = [True, False] if args.no_listen else [True]
    for listen in modes:
        def run(listen: bool = listen) -> bench.Result:
            with bench.throwaway_app(args.database_url) as app:
                return bench.idle_latency(app, args.jobs, interval=args.interval, listen=listen,
                                          poll_interval=args.poll_interval)

        emit(repeated(args.repeat, run))


if __name__ == "__main__":
    main()
