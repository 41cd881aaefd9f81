#!/usr/bin/env bash
# stop.sh - stop PgBouncer instances started by start.sh, found by pidfile.
#
#   scripts/pgbouncer/stop.sh [NAME ...]      # no NAME: every instance under the run dir
#
# A pid is only signalled if its command line names that instance's config file, so a stale
# pidfile can never kill an unrelated process. Config and logs stay in place.
set -uo pipefail

RUN=${PGTASKS_PGBOUNCER_RUN:-/tmp/pgtasks-pgbouncer}

# ours PID DIR: PID is alive and was started with DIR's config (a zombie has an empty cmdline).
ours() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "$2/pgbouncer.ini"; }

dirs=()
if [ $# -gt 0 ]; then
    for name in "$@"; do dirs+=("$RUN/$name"); done
else
    for dir in "$RUN"/*/; do [ -d "$dir" ] && dirs+=("${dir%/}"); done
fi

for dir in "${dirs[@]}"; do
    pid=$(cat "$dir/pgbouncer.pid" 2>/dev/null) || continue
    if ours "$pid" "$dir"; then
        echo "pgtasks-pgbouncer: stopping $(basename "$dir") (pid $pid)" >&2
        kill -TERM "$pid"                       # SIGTERM = immediate shutdown
        for _ in $(seq 1 80); do ours "$pid" "$dir" || break; sleep 0.05; done
        if ours "$pid" "$dir"; then echo "pgtasks-pgbouncer: pid $pid still running" >&2; exit 1; fi
    fi
    rm -f "$dir/pgbouncer.pid"
done
exit 0
