-- name: dashboard_throughput
-- Per minute over the last %(seconds)s seconds: jobs completed, discarded and cancelled (from
-- finalized_at, through jobs_finalized_idx) and attempts that failed and were retried (from the
-- `at` of each error entry). A retried attempt's job is either unfinished now (a small set, in the
-- fetch and running indexes) or finished since the window began, so both sets are index ranges,
-- never the whole table: two arms of a UNION, because one OR across them would be a scan. The
-- window's bounds are written out rather than read from a CTE, so the planner sees them and
-- estimates each range (a CTE's bounds made every window look like a ninth of the table). The
-- last error of a discarded or cancelled job ended it: not a retry.
WITH finished AS (
    SELECT date_trunc('minute', finalized_at) AS minute, state
    FROM {schema}.jobs
    WHERE state IN ('completed', 'cancelled', 'discarded')
      AND finalized_at >= coalesce(%(now)s::timestamptz, now()) - make_interval(secs => %(seconds)s::float8)
      AND finalized_at <= coalesce(%(now)s::timestamptz, now())
), failing AS (
    SELECT state, errors FROM {schema}.jobs
    WHERE state IN ('completed', 'cancelled', 'discarded') AND errors <> '[]'::jsonb
      AND finalized_at >= coalesce(%(now)s::timestamptz, now()) - make_interval(secs => %(seconds)s::float8)
    UNION ALL
    SELECT state, errors FROM {schema}.jobs
    WHERE (state IN ('available', 'scheduled', 'retryable') OR state = 'running') AND errors <> '[]'::jsonb
), failed AS (
    SELECT date_trunc('minute', (e.value ->> 'at')::timestamptz) AS minute
    FROM failing AS j
    CROSS JOIN LATERAL jsonb_array_elements(j.errors) WITH ORDINALITY AS e(value, position)
    WHERE (e.value ->> 'at')::timestamptz
              >= coalesce(%(now)s::timestamptz, now()) - make_interval(secs => %(seconds)s::float8)
      AND NOT (j.state IN ('cancelled', 'discarded') AND e.position = jsonb_array_length(j.errors))
)
SELECT minute,
       sum(completed)::bigint AS completed, sum(retried)::bigint AS retried,
       sum(discarded)::bigint AS discarded, sum(cancelled)::bigint AS cancelled
FROM (
    SELECT minute, (state = 'completed')::int AS completed, 0 AS retried,
           (state = 'discarded')::int AS discarded, (state = 'cancelled')::int AS cancelled
    FROM finished
    UNION ALL
    SELECT minute, 0, 1, 0, 0 FROM failed
) AS events
GROUP BY minute
ORDER BY minute

-- name: dashboard_durations
-- Per queue, over the jobs completed in the last %(seconds)s seconds (jobs_finalized_idx): how
-- long they waited once due (attempted_at - run_at of the last attempt) and ran, p50 and p95.
SELECT queue, count(*) AS completed,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY greatest(extract(epoch FROM attempted_at - run_at), 0))
           AS wait_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY greatest(extract(epoch FROM attempted_at - run_at), 0))
           AS wait_p95,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finalized_at - attempted_at)) AS run_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finalized_at - attempted_at)) AS run_p95
FROM {schema}.jobs
WHERE state = 'completed'
  AND finalized_at >= coalesce(%(now)s::timestamptz, now()) - make_interval(secs => %(seconds)s::float8)
GROUP BY queue
ORDER BY queue

-- name: dashboard_unfinished_counts
-- Exact counts of the unfinished states: their rows are in the fetch and running partial indexes,
-- which hold only jobs that can still run, and workflow steps waiting for their predecessors in
-- jobs_waiting_idx. Written as one OR arm per index, which the planner reads as a BitmapOr of the
-- two; one IN list of all four states implies neither index's predicate, and was a scan of the
-- whole table.
SELECT state::text AS state, count(*) AS count FROM {schema}.jobs
WHERE state IN ('available', 'scheduled', 'retryable') OR state = 'running'
GROUP BY state
UNION ALL
SELECT 'waiting', count(*) FROM {schema}.jobs WHERE wait_count > 0 AND state = 'waiting' HAVING count(*) > 0

-- name: dashboard_finished_counts
-- Exact counts of the finished states: a scan of jobs_finalized_idx, so only run while the table
-- is small (dashboard_table_size decides).
SELECT state::text AS state, count(*) AS count FROM {schema}.jobs
WHERE state IN ('completed', 'cancelled', 'discarded')
GROUP BY state

-- name: dashboard_table_size
-- The jobs table's size on disk now, and the planner's statistics of its state column: the most
-- common states with their frequencies and the row count ANALYZE last saw (-1: never analyzed).
SELECT pg_relation_size(c.oid) AS bytes, c.reltuples::float8 AS reltuples,
       s.most_common_vals::text::text[] AS common_states, s.most_common_freqs::float8[] AS common_freqs
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_stats AS s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = 'state'
WHERE n.nspname = %(schema)s AND c.relname = 'jobs'

-- name: _dashboard_job_filters
-- The jobs page's filters but the cursor and the argument search (NULL = any), included by the
-- queries below. The states come split by the index that holds them, so each arm can use it.
(%(states)s::text[] IS NULL
 OR (%(pending_states)s::{schema}.job_state[] IS NOT NULL AND state = ANY(%(pending_states)s::{schema}.job_state[]))
 OR (%(running)s::boolean AND state = 'running')
 OR (%(waiting)s::boolean AND state = 'waiting' AND wait_count > 0)
 OR (%(final_states)s::{schema}.job_state[] IS NOT NULL AND state = ANY(%(final_states)s::{schema}.job_state[])))
AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
AND (%(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s::text[]))
AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)

-- name: _dashboard_args_match
-- The argument search: a JSON object the arguments contain, or an ILIKE pattern over their text.
(%(args_contain)s::jsonb IS NULL OR args @> %(args_contain)s::jsonb)
AND (%(args_like)s::text IS NULL OR args::text ILIKE %(args_like)s::text)

-- name: dashboard_job_page
-- One page of jobs matching the filters (NULL = any), newest first, after the keyset cursor
-- %(before)s (an id; no OFFSET). An argument search looks at no more than %(scan)s jobs per page:
-- `scanned` and `scanned_to` say how far it got, so the next page can go on from there. The one
-- row with a NULL id carries those two when nothing matched.
-- The states arrive split by the partial index that holds them (pending: jobs_fetch_idx; running:
-- jobs_running_by_idx; final: jobs_finalized_idx), each arm NULL or false when unused so that it
-- folds away: a filter on unfinished states then reads its index instead of walking the primary
-- key past every finished job. The scan keeps only the id and whether the search matched (the
-- window of %(scan)s rows stays in memory); the page's rows are read by id afterwards.
WITH scanned AS (
    SELECT id,
           ({include:_dashboard_args_match}) AS hit
    FROM {schema}.jobs
    WHERE {include:_dashboard_job_filters}
      AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
    ORDER BY id DESC
    LIMIT %(scan)s
), matched AS (
    SELECT j.id, j.task, j.queue, j.state, j.priority, j.attempt, j.max_attempts, j.run_at, j.created_at,
           j.attempted_at, j.finalized_at, j.errors, j.args
    FROM (SELECT id FROM scanned WHERE hit ORDER BY id DESC LIMIT %(limit)s) AS hits
    JOIN {schema}.jobs AS j ON j.id = hits.id
), reach AS (
    SELECT count(*) AS scanned, min(id) AS scanned_to FROM scanned
)
SELECT m.id, m.task, m.queue, m.state::text AS state, m.priority, m.attempt, m.max_attempts, m.run_at,
       m.created_at, m.attempted_at, m.finalized_at, m.errors -> -1 ->> 'type' AS last_error_type,
       m.errors -> -1 ->> 'message' AS last_error_message, left(m.args::text, 160) AS args_preview,
       reach.scanned, reach.scanned_to
FROM reach LEFT JOIN matched AS m ON true
ORDER BY m.id DESC NULLS LAST

-- name: dashboard_job_match_ids
-- The ids of up to %(limit)s jobs matching every filter of the jobs page, below id %(before)s,
-- newest first: the batches of a bulk action on "everything matching the filter".
SELECT id FROM {schema}.jobs
WHERE {include:_dashboard_job_filters}
  AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
  AND {include:_dashboard_args_match}
ORDER BY id DESC
LIMIT %(limit)s

-- name: dashboard_job_match_count
-- How many jobs every filter of the jobs page matches, for the confirmation of a bulk action.
SELECT count(*) FROM {schema}.jobs
WHERE {include:_dashboard_job_filters}
  AND {include:_dashboard_args_match}

-- name: dashboard_job_delete_many
-- Delete jobs by id, never a running one (its worker would write an outcome to nothing) nor a step
-- of an unfinished workflow.
DELETE FROM {schema}.jobs AS j
WHERE id = ANY(%(ids)s::bigint[]) AND state <> 'running' AND {include:_outside_unfinished_workflows}
RETURNING id

-- name: dashboard_queue_names
-- Queue names for the filter menus: those with unfinished jobs (fetch and running indexes, one OR
-- arm each, as in dashboard_unfinished_counts) or an entry in the queues table. Queues known only
-- from finished rows come from the App's tasks.
SELECT name FROM (
    SELECT DISTINCT queue AS name FROM {schema}.jobs
    WHERE state IN ('available', 'scheduled', 'retryable') OR state = 'running'
    UNION
    SELECT name FROM {schema}.queues
) AS names
ORDER BY name

-- name: dashboard_recent_fires
-- The newest %(per_schedule)s fire records of each named schedule (a backward scan of the
-- primary key each), with the state of the job each enqueued.
SELECT n.schedule, f.fire_time, f.outcome, f.missed, f.job_id, f.recorded_at, j.state::text AS job_state
FROM unnest(%(names)s::text[]) AS n(schedule)
CROSS JOIN LATERAL (
    SELECT pf.fire_time, pf.outcome, pf.missed, pf.job_id, pf.recorded_at FROM {schema}.periodic_fires AS pf
    WHERE pf.schedule = n.schedule ORDER BY pf.fire_time DESC LIMIT %(per_schedule)s
) AS f
LEFT JOIN {schema}.jobs AS j ON j.id = f.job_id
ORDER BY n.schedule, f.fire_time DESC

-- name: dashboard_change_mark
-- What a polling dashboard compares between two reads to tell that something changed: each part
-- is one index probe or a scan of a small partial index (running jobs, the queues and workers tables).
SELECT (SELECT max(id) FROM {schema}.jobs) AS last_id,
       (SELECT max(finalized_at) FROM {schema}.jobs WHERE state IN ('completed', 'cancelled', 'discarded'))
           AS last_finalized,
       (SELECT count(*) FROM {schema}.jobs WHERE state = 'running') AS running,
       (SELECT max(attempted_at) FROM {schema}.jobs WHERE state = 'running') AS last_claimed,
       (SELECT max(updated_at) FROM {schema}.queues) AS queues_changed,
       (SELECT count(*) FROM {schema}.workers) AS workers,
       (SELECT max(started_at) FROM {schema}.workers) AS workers_started,
       (SELECT max(term) FROM {schema}.leader) AS leader_term

-- name: dashboard_workflow_window
-- The first half of a workflows page: the newest %(scan)s workflow ids below %(before)s, a backward
-- index-only scan of the workflows' primary key. It bounds what the page looks at (a page's worth
-- when nothing is filtered, since then every one matches; more with a state filter), and says how
-- far it got, so "older" goes on from `low` while there is an `oldest` below it.
SELECT count(*) AS scanned, min(id) AS low, max(id) AS high,
       (SELECT min(id) FROM {schema}.workflows) AS oldest
FROM (SELECT id FROM {schema}.workflows WHERE id < %(before)s::bigint ORDER BY id DESC LIMIT %(scan)s) AS w

-- name: dashboard_workflow_page
-- The second half: the workflows with ids from %(low)s to %(high)s (the window above) in the
-- states asked for (NULL = any), newest first, at most %(limit)s, each with its steps counted.
-- The window arrives as two values rather than as a CTE, so the planner estimates the range from
-- the table's statistics: behind a CTE it guessed a third of the table, and the per-row probes
-- below made that estimate expensive enough to be JIT compiled (0.35 s for a page).
-- A workflow's state is derived as workflow_get derives it: cancelled and failed from its own row
-- (and the failed step's, by primary key), running from the first unfinished step found through
-- jobs_workflow_idx, by a scalar subquery with LIMIT 1: as an EXISTS the planner may instead hash
-- every unfinished job in the table (100 ms over a million jobs, for a page of 50). With %(open)s
-- false (only failed or cancelled wanted) no step is probed at all, and with %(ended)s false (only
-- running or completed) the failed ones are dropped before their probe. Only the page's
-- workflows have their steps counted (one scan of jobs_workflow_idx each).
WITH judged AS MATERIALIZED (
    SELECT w.id, w.created_at, w.kind, w.steps, w.failed_job_id, w.failed_at, w.cancelled_at,
           CASE WHEN w.cancelled_at IS NOT NULL THEN 'cancelled'
                WHEN w.failed_job_id IS NOT NULL THEN
                    coalesce((SELECT CASE WHEN f.state = 'cancelled' THEN 'cancelled' ELSE 'failed' END
                              FROM {schema}.jobs AS f WHERE f.id = w.failed_job_id), 'failed')
                WHEN (SELECT j.id FROM {schema}.jobs AS j
                      WHERE j.workflow_id = w.id AND j.state NOT IN ('completed', 'cancelled', 'discarded')
                      LIMIT 1) IS NOT NULL THEN 'running'
                ELSE 'completed' END AS state
    FROM {schema}.workflows AS w
    WHERE w.id BETWEEN %(low)s::bigint AND %(high)s::bigint
      AND (%(open)s::boolean OR w.failed_job_id IS NOT NULL OR w.cancelled_at IS NOT NULL)
      AND (%(ended)s::boolean OR (w.failed_job_id IS NULL AND w.cancelled_at IS NULL))
), shown AS (
    SELECT * FROM judged
    WHERE %(states)s::text[] IS NULL OR state = ANY(%(states)s::text[])
    ORDER BY id DESC
    LIMIT %(limit)s
)
SELECT s.id, s.created_at, s.kind, s.steps, s.state, s.failed_job_id, s.failed_at, s.cancelled_at,
       c.completed, c.unfinished, c.failed, c.finished_at
FROM shown AS s
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE j.state = 'completed') AS completed,
           count(*) FILTER (WHERE j.state NOT IN ('completed', 'cancelled', 'discarded')) AS unfinished,
           count(*) FILTER (WHERE j.state IN ('cancelled', 'discarded')) AS failed,
           max(j.finalized_at) AS finished_at
    FROM {schema}.jobs AS j WHERE j.workflow_id = s.id
) AS c
ORDER BY s.id DESC

-- name: dashboard_snapshot
-- The first statement of a transaction whose reads must agree with each other (a workflow's state
-- and its steps): one snapshot for all of them. Transaction-scoped, so safe behind any pooler.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY

-- name: dashboard_workflow_steps
-- Every step of a workflow in step order (the link_error job last), through jobs_workflow_idx:
-- what its graph and its table of steps show. Arguments and results are cut to a preview here, so
-- a chord callback's list of 10,000 results is not sent to draw one table cell.
SELECT id, workflow_step AS step, task, queue, state::text AS state, attempt, max_attempts, wait_count,
       next_ids, left(args::text, %(preview)s) AS args_preview, length(args::text) > %(preview)s AS args_cut,
       left(result::text, %(preview)s) AS result_preview, length(result::text) > %(preview)s AS result_cut,
       errors -> -1 ->> 'type' AS last_error_type, errors -> -1 ->> 'message' AS last_error_message,
       created_at, attempted_at, finalized_at, cancel_requested_at,
       extract(epoch FROM finalized_at - attempted_at) AS run_seconds,
       extract(epoch FROM now() - attempted_at) AS running_seconds
FROM {schema}.jobs
WHERE workflow_id = %(id)s
ORDER BY workflow_step, id
