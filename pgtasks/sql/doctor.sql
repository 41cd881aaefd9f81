-- name: doctor_server
-- Server version and connection use, for `pgtasks doctor`.
SELECT current_setting('server_version_num')::int AS version_num,
       current_setting('server_version') AS version,
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS reserved,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS used,
       pg_backend_pid() AS backend_pid

-- name: doctor_table_health
-- Live and dead tuples, the last (auto)vacuum and the per-table autovacuum settings of the jobs
-- table: a queue table churns rows, and vacuum falling behind slows every fetch.
SELECT s.n_live_tup AS live, s.n_dead_tup AS dead, s.last_autovacuum, s.last_vacuum,
       s.autovacuum_count, c.reloptions, current_setting('autovacuum') = 'on' AS autovacuum_on,
       current_setting('autovacuum_vacuum_scale_factor')::float8 AS scale_factor,
       current_setting('autovacuum_vacuum_threshold')::int AS threshold
FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid
WHERE s.schemaname = %(schema)s AND s.relname = 'jobs'

-- name: doctor_long_transactions
-- Transactions open longer than %(seconds)s seconds: they hold back vacuum on every table,
-- the jobs table included, so its dead rows pile up.
SELECT pid, application_name, state, extract(epoch FROM now() - xact_start)::float8 AS age_seconds,
       left(query, 120) AS query
FROM pg_stat_activity
WHERE xact_start < now() - make_interval(secs => %(seconds)s::float8)
  AND pid <> pg_backend_pid() AND backend_type = 'client backend'
ORDER BY xact_start

-- name: doctor_replication_slots
-- Replication slots, with how far back their xmin holds vacuum (in transactions).
SELECT slot_name, slot_type, active, age(xmin) AS xmin_age, age(catalog_xmin) AS catalog_xmin_age
FROM pg_replication_slots ORDER BY slot_name

-- name: doctor_unrunnable_tasks
-- Ready jobs whose queue a live worker serves (seen in the last %(stale_after)s seconds) but whose
-- task no such worker has registered: a worker claims only jobs of its own tasks, so these wait
-- until one that knows the task starts (a task renamed or removed, or an app whose workers are
-- down). Workers from before tasks were recorded (tasks IS NULL) count as knowing every task.
-- A scan of the ready jobs (jobs_fetch_idx), grouped: fine for an occasional check.
WITH live AS (
    SELECT queues, tasks FROM {schema}.workers
    WHERE last_seen_at > now() - make_interval(secs => %(stale_after)s::float8)
)
SELECT j.queue, j.task, count(*) AS ready, extract(epoch FROM now() - min(j.run_at))::float8 AS oldest_s
FROM {schema}.jobs AS j
WHERE j.state IN ('available', 'scheduled', 'retryable') AND j.run_at <= now()
  AND EXISTS (SELECT 1 FROM live AS w WHERE j.queue = ANY(w.queues))
  AND NOT EXISTS (SELECT 1 FROM live AS w WHERE j.queue = ANY(w.queues) AND (w.tasks IS NULL OR j.task = ANY(w.tasks)))
GROUP BY j.queue, j.task
ORDER BY count(*) DESC, j.queue, j.task
LIMIT 50
