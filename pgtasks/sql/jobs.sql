-- name: job_insert
-- Insert one job. run_at comes from the database clock (countdown) unless an eta is given, so
-- client clock skew cannot make a job early. A live duplicate unique_key inserts nothing.
INSERT INTO {schema}.jobs AS j (task, queue, args, state, priority, max_attempts, run_at, expires_at, unique_key,
                                traceparent, limit_key)
SELECT %(task)s, %(queue)s, %(args)s::jsonb,
       CASE WHEN v.run_at > now() THEN 'scheduled' ELSE 'available' END::{schema}.job_state,
       %(priority)s, %(max_attempts)s, v.run_at,
       coalesce(%(expires_at)s::timestamptz, now() + make_interval(secs => %(expires_in)s::float8)),
       %(unique_key)s, %(traceparent)s, %(limit_key)s
FROM (SELECT coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => coalesce(%(delay)s::float8, 0)))
      AS run_at) AS v
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'scheduled', 'running', 'retryable')
DO NOTHING
RETURNING j.id

-- name: job_insert_now
-- job_insert's common case: a job to run now, with no unique_key, eta, countdown, expiry or
-- traceparent (a traced enqueue takes job_insert, so tracing costs nothing while it is off). A
-- plain INSERT that the column defaults complete (state 'available', run_at = now()), without the
-- ON CONFLICT arbiter and the run_at arithmetic: about a quarter cheaper a call, which is most of
-- a one-job enqueue's cost besides the commit (docs/performance.md).
INSERT INTO {schema}.jobs (task, queue, args, priority, max_attempts)
VALUES (%(task)s, %(queue)s, %(args)s::jsonb, %(priority)s, %(max_attempts)s)
RETURNING id

-- name: job_insert_many_now
-- job_insert_many's common case (every row runs now, none has a unique_key, an expiry or a
-- traceparent): the rows
-- travel as one JSON array that the server unpacks, ~2x cheaper to send than ten typed arrays.
-- Rows are inserted, and so returned, in input order.
INSERT INTO {schema}.jobs (task, queue, args, priority, max_attempts)
SELECT r.task, r.queue, r.args::jsonb, r.priority, r.max_attempts
FROM ROWS FROM (json_to_recordset(%(rows)s::json)
                AS (task text, queue text, args json, priority smallint, max_attempts int))
     WITH ORDINALITY AS r(task, queue, args, priority, max_attempts, ord)
ORDER BY r.ord
RETURNING id

-- name: job_reserve_ids
-- Draw %(n)s ids from the jobs' identity sequence, for job_copy_now to write explicitly (COPY
-- returns nothing, so the caller must know the ids beforehand). The sequence is named as a
-- constant: looked up per row (pg_get_serial_sequence) it costs ~2 us a row, named ~0.3 us.
SELECT array_agg(nextval('{schema}.jobs_id_seq'::regclass)) FROM generate_series(1, %(n)s)

-- name: job_copy_now
-- job_insert_many_now for big batches: rows streamed by COPY with ids from job_reserve_ids.
-- COPY writes given values into the GENERATED ALWAYS id (documented in CREATE TABLE), the
-- other columns take their defaults (state 'available', run_at = now()), and the statement
-- trigger sees the rows in its transition table, so workers are woken as for an INSERT.
COPY {schema}.jobs (id, task, queue, args, priority, max_attempts) FROM STDIN

-- name: job_insert_many
-- Insert many jobs in one statement (one round trip, one trigger run, one NOTIFY per queue).
-- Rows are inserted, and so returned, in input order; a row skipped as a live duplicate
-- unique_key is missing from the result and the caller looks its holder up.
WITH input AS (
    SELECT * FROM unnest(
        %(tasks)s::text[], %(queues)s::text[], %(args)s::jsonb[], %(priorities)s::smallint[],
        %(max_attempts)s::int[], %(run_ats)s::timestamptz[], %(delays)s::float8[],
        %(expires_ats)s::timestamptz[], %(expires_ins)s::float8[], %(unique_keys)s::text[],
        %(traceparents)s::text[], %(limit_keys)s::text[]
    ) WITH ORDINALITY AS t(task, queue, args, priority, max_attempts, run_at, delay, expires_at,
                           expires_in, unique_key, traceparent, limit_key, ord)
), prepared AS (
    SELECT ord, task, queue, args, priority, max_attempts, unique_key, traceparent, limit_key,
           coalesce(run_at, now() + make_interval(secs => coalesce(delay, 0))) AS run_at,
           coalesce(expires_at, now() + make_interval(secs => expires_in)) AS expires_at
    FROM input
)
INSERT INTO {schema}.jobs (task, queue, args, state, priority, max_attempts, run_at, expires_at, unique_key,
                           traceparent, limit_key)
SELECT task, queue, args,
       CASE WHEN run_at > now() THEN 'scheduled' ELSE 'available' END::{schema}.job_state,
       priority, max_attempts, run_at, expires_at, unique_key, traceparent, limit_key
FROM prepared ORDER BY ord
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL
    AND state IN ('available', 'scheduled', 'running', 'retryable')
DO NOTHING
RETURNING id, unique_key

-- name: job_get_id_by_unique_key
-- The live job holding a unique_key (used when an insert was skipped as a duplicate).
SELECT id FROM {schema}.jobs
WHERE unique_key = %(unique_key)s AND state IN ('available', 'scheduled', 'running', 'retryable')

-- name: job_fetch_available
-- Claim up to %(limit)s runnable jobs. The CTE is the optimisation fence that makes LIMIT really
-- bound the UPDATE; SKIP LOCKED lets many workers claim concurrently without waiting on each
-- other. Every claim bumps `claims`, the fencing token the outcome is written against.
-- One LATERAL index scan per queue (each reads jobs_fetch_idx in order and stops after LIMIT)
-- then a merge by priority: with `queue = ANY(...)` instead, several queues would need a sort of
-- the whole backlog, or an ORDER BY queue that drains one queue before the next is looked at.
-- Paused queues (rows of the queues table with paused_at set) are dropped from the list before
-- any index scan, so a pause holds from every worker's next fetch on. So are limited queues (a
-- limit of their own, or a task with one): only job_fetch_limited claims those, under a lock.
-- Only jobs of the tasks this worker has registered (%(tasks)s) are claimed: a job of a task it does
-- not know stays available for a worker that does (two apps sharing a queue, a rolling deploy),
-- instead of burning its attempts here. A hashed `= ANY` (PostgreSQL 14+): cheap per row; NULL
-- (any task) is folded away when the statement is planned with its parameters.
WITH claimable AS (
    SELECT c.id
    FROM (SELECT u.name FROM unnest(%(queues)s::text[]) AS u(name)
          WHERE NOT EXISTS (SELECT 1 FROM {schema}.queues AS p
                            WHERE p.name = u.name
                              AND (p.paused_at IS NOT NULL OR p.concurrency IS NOT NULL OR p.rate IS NOT NULL))
            AND NOT EXISTS (SELECT 1 FROM {schema}.task_limits AS t WHERE t.queue = u.name)) AS q
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at FROM {schema}.jobs
        WHERE queue = q.name
          AND state IN ('available', 'scheduled', 'retryable')
          AND run_at <= coalesce(%(now)s::timestamptz, now())
          AND (%(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s::text[]))
        ORDER BY priority DESC, run_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS c
    ORDER BY c.priority DESC, c.run_at, c.id
    LIMIT %(limit)s
)
UPDATE {schema}.jobs AS j
SET state = 'running', attempt = j.attempt + 1, claims = j.claims + 1,
    attempted_at = coalesce(%(now)s::timestamptz, now()), attempted_by = %(worker_id)s
FROM claimable
WHERE j.id = claimable.id
RETURNING j.id, j.task, j.queue, j.args::text AS args, j.priority, j.attempt, j.max_attempts, j.claims,
          j.run_at, j.created_at, (j.expires_at IS NOT NULL AND j.expires_at <= coalesce(%(now)s::timestamptz, now())) AS expired,
          j.traceparent

-- name: job_set_outcome_many
-- Write the outcomes of many finished attempts in one statement. Each row is fenced on
-- (id, claims) and state = 'running', so an attempt that no longer owns its job (it was
-- rescued and claimed again) changes nothing. Returns the ids that were written.
-- An attempt that would go back to waiting (retry, snooze, shutdown put-back) of a job an
-- operator asked to cancel (cancel_requested_at is set) ends cancelled instead.
-- The state is compared as text on purpose: as `state = 'running'` it matches the predicate of
-- jobs_running_by_idx, and when the statistics still say few jobs run (they lag any burst, and
-- never catch up without autovacuum), the planner drives the join from that index, re-running the
-- unnest for every running job: with 100,000 running, one write took minutes. As text it can only
-- look each outcome up by its primary key, which bounds the write by its own size.
UPDATE {schema}.jobs AS j
SET state = CASE WHEN j.cancel_requested_at IS NOT NULL AND o.state NOT IN ('completed', 'cancelled', 'discarded')
                 THEN 'cancelled' ELSE o.state END::{schema}.job_state,
    finalized_at = CASE WHEN o.state IN ('completed', 'cancelled', 'discarded') OR j.cancel_requested_at IS NOT NULL
                        THEN coalesce(%(now)s::timestamptz, now()) END,
    run_at = CASE WHEN o.retry_in IS NULL THEN j.run_at
                  ELSE coalesce(%(now)s::timestamptz, now()) + make_interval(secs => o.retry_in) END,
    attempt = j.attempt + o.attempt_delta,
    errors = CASE WHEN o.error IS NULL THEN j.errors ELSE j.errors || jsonb_build_array(o.error) END,
    -- A workflow step that completed once (signalled) and is run again by an operator keeps that
    -- result until a re-run completes: a successor that starts meanwhile reads it.
    result = CASE WHEN o.state = 'completed' OR NOT j.signalled THEN o.result ELSE j.result END
FROM unnest(%(ids)s::bigint[], %(claims)s::int[], %(states)s::text[], %(retry_ins)s::float8[],
            %(attempt_deltas)s::int[], %(errors)s::jsonb[], %(results)s::jsonb[])
     AS o(id, claims, state, retry_in, attempt_delta, error, result)
WHERE j.id = o.id AND j.state::text = 'running' AND j.claims = o.claims
RETURNING j.id

-- name: job_get
SELECT id, task, queue, args::text AS args, state::text AS state, priority, attempt, max_attempts, claims,
       run_at, created_at, attempted_at, attempted_by, finalized_at, expires_at, errors::text AS errors,
       result::text AS result, unique_key
FROM {schema}.jobs WHERE id = %(id)s

-- name: job_release_unknown_claims
-- Put back jobs this worker claimed without knowing it: a fetch whose reply was lost with its
-- connection (pooler restart, dropped TCP) may still have committed its claims. Those jobs never
-- started, so their attempt is given back. Jobs the worker runs or has yet to record are passed in
-- %(known_ids)s and left alone. A fetch still running on the server holds its row locks, so this
-- waits for it and then sees its claims. A job an operator asked to cancel ends `cancelled`.
UPDATE {schema}.jobs
SET state = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled' ELSE 'available' END::{schema}.job_state,
    finalized_at = CASE WHEN cancel_requested_at IS NOT NULL THEN now() END,
    attempt = greatest(attempt - 1, 0)
WHERE state = 'running' AND attempted_by = %(worker_id)s AND id <> ALL(%(known_ids)s::bigint[])
RETURNING id

-- name: job_get_outcome
-- What JobRef.wait() needs: the state, the stored result and the last error entry.
SELECT state::text AS state, result::text AS result, errors -> -1 AS last_error
FROM {schema}.jobs WHERE id = %(id)s

-- name: job_set_progress_many
-- Store the latest progress of many running jobs in one statement (the worker's ProgressWriter,
-- at most a few times a second). Fenced on (id, claims) only, not on state, so the last value a
-- task reported just before it returned still lands after its outcome; a newer claim of the job
-- (a rescue and another attempt) stops an older attempt's values. Setting no other column, it
-- fires no trigger (jobs_notify_final is UPDATE OF state) and stays a HOT update.
UPDATE {schema}.jobs AS j
SET progress = p.progress || jsonb_build_object('at', now())
FROM unnest(%(ids)s::bigint[], %(claims)s::int[], %(progress)s::jsonb[]) AS p(id, claims, progress)
WHERE j.id = p.id AND j.claims = p.claims

-- name: job_get_progress
-- JobRef.progress(): the job's stored progress JSON (NULL before any report), no row if no job.
SELECT progress::text FROM {schema}.jobs WHERE id = %(id)s

-- name: job_get_task
-- JobRef.from_id(): the task of a job known by its id (no row if there is no such job).
SELECT task FROM {schema}.jobs WHERE id = %(id)s
