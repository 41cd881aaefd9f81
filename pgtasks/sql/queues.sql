-- name: queue_pause
-- Mark a queue paused (idempotent: a second pause keeps the first paused_at). Workers read the
-- queues table in their fetch query, so the pause holds from their next fetch on.
INSERT INTO {schema}.queues AS q (name, paused_at, updated_at)
VALUES (%(name)s, coalesce(%(now)s::timestamptz, now()), coalesce(%(now)s::timestamptz, now()))
ON CONFLICT (name) DO UPDATE SET paused_at = coalesce(q.paused_at, EXCLUDED.paused_at),
                                 updated_at = EXCLUDED.updated_at
RETURNING paused_at

-- name: queue_resume
-- Unpause a queue; returns whether it was paused.
UPDATE {schema}.queues AS q SET paused_at = NULL, updated_at = coalesce(%(now)s::timestamptz, now())
FROM (SELECT name, paused_at FROM {schema}.queues WHERE name = %(name)s FOR UPDATE) AS old
WHERE q.name = old.name
RETURNING old.paused_at IS NOT NULL AS was_paused

-- name: queue_entry_for_removal
-- The queue's entry, locked until queue_remove decides, with its jobs waiting to run (counted
-- through jobs_fetch_idx): removing the entry of a paused queue would resume those jobs. And
-- whether a limit applies in it: the entry holds the queue's own limits, and it is the row a
-- limited claim locks, so without it the jobs of a task with limits would wait for a worker's
-- start to write it again.
SELECT q.paused_at,
       (SELECT count(*) FROM {schema}.jobs AS j
        WHERE j.queue = q.name AND j.state IN ('available', 'scheduled', 'retryable'))::int AS waiting,
       (q.concurrency IS NOT NULL OR q.rate IS NOT NULL
        OR EXISTS (SELECT 1 FROM {schema}.task_limits AS t WHERE t.queue = q.name)) AS limited
FROM {schema}.queues AS q
WHERE q.name = %(name)s
FOR UPDATE OF q

-- name: queue_remove
-- Forget a queue's entry (its pause state): a name paused by mistake leaves `queues list` and doctor.
DELETE FROM {schema}.queues WHERE name = %(name)s

-- name: queue_list_paused
SELECT name, paused_at FROM {schema}.queues WHERE paused_at IS NOT NULL ORDER BY name

-- name: queue_stats
-- Per queue: jobs in each unfinished state, the lag (age of the oldest job that is due but not
-- yet claimed) and whether the queue is paused. Reads unfinished rows only, so it stays cheap
-- however many finished jobs the table keeps (metrics scrape it): workflow steps waiting for
-- their predecessors through jobs_waiting_idx, the others through the fetch and running indexes.
WITH parts AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'available') AS available,
           count(*) FILTER (WHERE state = 'scheduled') AS scheduled,
           count(*) FILTER (WHERE state = 'running') AS running,
           count(*) FILTER (WHERE state = 'retryable') AS retryable,
           0 AS waiting,
           min(run_at) FILTER (WHERE state IN ('available', 'scheduled', 'retryable')
                               AND run_at <= coalesce(%(now)s::timestamptz, now())) AS oldest_due
    FROM {schema}.jobs
    -- Two arms, one per partial index (jobs_fetch_idx, jobs_running_by_idx): a single IN list of
    -- all four states matches neither index, and the planner scans the whole table instead.
    WHERE state IN ('available', 'scheduled', 'retryable') OR state = 'running'
    GROUP BY queue
    UNION ALL
    SELECT queue, 0, 0, 0, 0, count(*), NULL FROM {schema}.jobs
    WHERE wait_count > 0 AND state = 'waiting'
    GROUP BY queue
), counts AS (
    SELECT queue, sum(available) AS available, sum(scheduled) AS scheduled, sum(running) AS running,
           sum(retryable) AS retryable, sum(waiting) AS waiting, min(oldest_due) AS oldest_due
    FROM parts GROUP BY queue
)
SELECT coalesce(c.queue, q.name) AS queue,
       coalesce(c.available, 0)::bigint AS available, coalesce(c.scheduled, 0)::bigint AS scheduled,
       coalesce(c.running, 0)::bigint AS running, coalesce(c.retryable, 0)::bigint AS retryable,
       coalesce(c.waiting, 0)::bigint AS waiting,
       coalesce(extract(epoch FROM coalesce(%(now)s::timestamptz, now()) - c.oldest_due), 0)::float8
           AS lag_seconds,
       q.paused_at
FROM counts AS c FULL JOIN {schema}.queues AS q ON q.name = c.queue
ORDER BY 1

-- name: job_task_names
-- Every task name that has jobs, for matching a short `--task` name. It reads the whole task
-- column (no index holds it): the ops commands run it only for a name the App has not registered.
SELECT DISTINCT task FROM {schema}.jobs ORDER BY task

-- name: stats_by_state
-- Jobs per state over the whole table (a full count: an operator's command, not a metric).
SELECT state::text AS state, count(*) AS count FROM {schema}.jobs GROUP BY state ORDER BY state

-- name: stats_recent_by_task
-- Per task, the jobs finished in the last %(seconds)s seconds (via jobs_finalized_idx): how many
-- completed, were discarded or cancelled, and their mean and max run time.
SELECT task,
       count(*) FILTER (WHERE state = 'completed') AS completed,
       count(*) FILTER (WHERE state = 'discarded') AS discarded,
       count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
       avg(extract(epoch FROM finalized_at - attempted_at))::float8 AS mean_run_seconds,
       max(extract(epoch FROM finalized_at - attempted_at))::float8 AS max_run_seconds
FROM {schema}.jobs
WHERE state IN ('completed', 'cancelled', 'discarded')
  AND finalized_at >= coalesce(%(now)s::timestamptz, now()) - make_interval(secs => %(seconds)s::float8)
GROUP BY task
ORDER BY task
