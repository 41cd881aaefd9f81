-- name: bench_drain_window
-- What a drain benchmark measured, read from the database's own clock: how many of the task's
-- jobs completed, the window from the first claim to the last outcome written, and how many
-- fetch and outcome transactions it took (each stamps its rows with one now()).
SELECT count(*) FILTER (WHERE state = 'completed') AS completed,
       count(*) AS total,
       min(attempted_at) AS first_claim,
       max(finalized_at) AS last_outcome,
       count(DISTINCT attempted_at) AS fetches,
       count(DISTINCT finalized_at) AS outcome_writes
FROM {schema}.jobs
WHERE task = %(task)s

-- name: bench_start_latencies
-- Enqueue-to-claim latency of each completed job of the task, in milliseconds: both timestamps
-- are now() of their transactions (insert and fetch), so one clock measures both ends.
SELECT extract(epoch FROM attempted_at - created_at) * 1000.0 AS latency_ms
FROM {schema}.jobs
WHERE task = %(task)s AND state = 'completed'
ORDER BY id

-- name: bench_count_completed
-- Completed jobs of one task (the benchmarks count completions here, never in logs).
SELECT count(*) FROM {schema}.jobs WHERE task = %(task)s AND state = 'completed'

-- name: bench_count_unfinished
-- Jobs not finished yet (of any task): what an observer outside the worker watches fall to zero
-- during a drain. Both halves are served by partial indexes (jobs_fetch_idx, jobs_running_by_idx).
SELECT (SELECT count(*) FROM {schema}.jobs WHERE state IN ('available', 'scheduled', 'retryable'))
     + (SELECT count(*) FROM {schema}.jobs WHERE state = 'running')

-- name: bench_schema_drop
-- Drop a benchmark's throwaway schema and everything in it (callers check the bench prefix).
DROP SCHEMA IF EXISTS {schema} CASCADE

-- name: bench_backend_pids
-- Server processes serving connections with this application_name (the worker's pool and
-- listener), so a benchmark on the database host can read their CPU time from /proc.
SELECT pid FROM pg_stat_activity WHERE application_name LIKE %(application_name)s || '%%'
