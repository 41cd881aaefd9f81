-- name: job_list
-- Jobs matching optional filters (NULL = any), newest first: `pgtasks jobs list`.
SELECT id, task, queue, state::text AS state, priority, attempt, max_attempts, run_at, created_at,
       attempted_at, finalized_at, errors -> -1 ->> 'type' AS last_error_type,
       errors -> -1 ->> 'message' AS last_error_message, progress::text AS progress
FROM {schema}.jobs
WHERE (%(states)s::text[] IS NULL OR state = ANY(%(states)s::{schema}.job_state[]))
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
  AND (%(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s::text[]))
ORDER BY id DESC
LIMIT %(limit)s

-- name: job_detail
-- Everything about one job, for `pgtasks jobs show` (timings are computed on the database clock).
SELECT id, task, queue, state::text AS state, priority, attempt, max_attempts, claims, args::text AS args,
       run_at, created_at, attempted_at, attempted_by, finalized_at, expires_at, cancel_requested_at,
       unique_key, errors::text AS errors, result::text AS result, progress::text AS progress,
       workflow_id, workflow_step,
       extract(epoch FROM attempted_at - created_at) AS wait_seconds,
       extract(epoch FROM finalized_at - attempted_at) AS run_seconds,
       now() AS db_now
FROM {schema}.jobs WHERE id = %(id)s

-- name: job_count_filtered
-- How many jobs a bulk retry would touch (shown before asking for confirmation).
SELECT count(*) FROM {schema}.jobs
WHERE state = ANY(%(states)s::{schema}.job_state[])
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
  AND (%(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s::text[]))
  AND (%(older_than)s::float8 IS NULL
       OR coalesce(finalized_at, created_at) < coalesce(%(now)s::timestamptz, now())
                                                - make_interval(secs => %(older_than)s::float8))

-- name: job_count_purgeable
-- How many jobs a purge would delete (job_purge_many's filter; shown before asking for confirmation).
SELECT count(*) FROM {schema}.jobs AS j
WHERE {include:_purgeable}

-- name: job_retry_many
-- Make jobs run again now: by ids, or by filter. At most %(limit)s rows per call, so a bulk retry
-- runs as many short transactions. Running and available jobs are left alone (nothing to retry),
-- and a finished job whose unique_key another live job holds is skipped instead of breaking the
-- unique index. Of finished jobs sharing a key that no live job holds, only the newest is retried
-- (retrying two would break the index). max_attempts is raised when needed so the retried job
-- gets one more attempt. A workflow step cancelled before its input arrived (wait_count > 0) is
-- skipped: it has nothing to run with. A finished step that is retried runs alone: its workflow
-- does not run on from it.
WITH candidates AS (
    SELECT id, unique_key, state FROM {schema}.jobs AS j
    WHERE state IN ('scheduled', 'retryable', 'completed', 'cancelled', 'discarded')
      AND wait_count = 0
      AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
      AND (%(states)s::text[] IS NULL OR state = ANY(%(states)s::{schema}.job_state[]))
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
      AND (%(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s::text[]))
      AND (unique_key IS NULL OR state IN ('scheduled', 'retryable') OR NOT EXISTS (
          SELECT 1 FROM {schema}.jobs AS live
          WHERE live.unique_key = j.unique_key AND live.id <> j.id
            AND live.state IN ('available', 'scheduled', 'running', 'retryable')))
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id FROM candidates WHERE unique_key IS NULL OR state IN ('scheduled', 'retryable')
    UNION ALL
    SELECT max(id) FROM candidates
    WHERE unique_key IS NOT NULL AND state NOT IN ('scheduled', 'retryable')
    GROUP BY unique_key
)
UPDATE {schema}.jobs AS j
SET state = 'available', run_at = coalesce(%(now)s::timestamptz, now()), finalized_at = NULL,
    cancel_requested_at = NULL, max_attempts = greatest(j.max_attempts, j.attempt + 1)
FROM picked
WHERE j.id = picked.id
RETURNING j.id, j.queue

-- name: _cancel_picked
-- The rest of a cancel, after a CTE `picked` (id, state) of unfinished jobs locked FOR UPDATE:
-- jobs not running end `cancelled` at once, with an error entry giving %(reason)s; running ones
-- get cancel_requested_at, and their worker stops them. Rows: (id, 'cancelled' | 'cancel_requested').
waiting AS (
    UPDATE {schema}.jobs AS j
    SET state = 'cancelled', finalized_at = coalesce(%(now)s::timestamptz, now()),
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempt, 'at', coalesce(%(now)s::timestamptz, now()), 'type', 'Cancelled',
            'message', %(reason)s::text, 'traceback', NULL))
    FROM picked
    WHERE j.id = picked.id AND picked.state <> 'running'
    RETURNING j.id
), running AS (
    UPDATE {schema}.jobs AS j
    SET cancel_requested_at = coalesce(j.cancel_requested_at, %(now)s::timestamptz, now())
    FROM picked
    WHERE j.id = picked.id AND picked.state = 'running'
    RETURNING j.id
)
SELECT id, 'cancelled' AS outcome FROM waiting
UNION ALL
SELECT id, 'cancel_requested' AS outcome FROM running

-- name: job_cancel_many
-- Cancel jobs by id. Jobs not running (a workflow's waiting steps too; cancelling one fails its
-- workflow, see 0005_workflows.sql) end `cancelled` at once; running ones get cancel_requested_at
-- and keep running until their worker (told on the control channel, or at its next poll) stops
-- them and writes the cancelled outcome. FOR UPDATE (not SKIP LOCKED) waits for a concurrent
-- claim to commit, and then sees the job as running.
WITH picked AS (
    SELECT id, state FROM {schema}.jobs
    WHERE id = ANY(%(ids)s::bigint[]) AND state IN ('waiting', 'available', 'scheduled', 'retryable', 'running')
    FOR UPDATE
), {include:_cancel_picked}

-- name: job_list_cancel_requested
-- Of the jobs a worker is running, those an operator asked to cancel (checked every poll interval).
SELECT id FROM {schema}.jobs
WHERE id = ANY(%(ids)s::bigint[]) AND state = 'running' AND cancel_requested_at IS NOT NULL

-- name: _purgeable
-- A job (j) a purge may delete: of the given states, queues and tasks, finished or created before
-- %(older_than)s seconds ago, never running, and no step of an unfinished workflow.
state = ANY(%(states)s::{schema}.job_state[]) AND state <> 'running'
AND {include:_outside_unfinished_workflows}
AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
AND (%(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s::text[]))
AND (%(older_than)s::float8 IS NULL
     OR coalesce(finalized_at, created_at) < coalesce(%(now)s::timestamptz, now())
                                              - make_interval(secs => %(older_than)s::float8))

-- name: _outside_unfinished_workflows
-- A job (j) that is no step of a workflow with a step still to finish: deleting such a step would
-- leave its workflow waiting for ever, or hand a successor a null for its result. Looked up
-- through jobs_workflow_idx; plain jobs stop at the first test.
(j.workflow_id IS NULL OR NOT EXISTS (
    SELECT 1 FROM {schema}.jobs AS sibling
    WHERE sibling.workflow_id = j.workflow_id
      AND sibling.state IN ('waiting', 'available', 'scheduled', 'retryable', 'running')))

-- name: job_forget_result
-- JobRef.forget(): drop a finished job's stored result; the row, its state and errors stay until
-- retention deletes them. Not while the job is unfinished (its result is still to come), nor for a
-- step of an unfinished workflow (a successor that starts later reads it). The outer SELECT reads
-- the row as it was before the UPDATE, to say why nothing was dropped. No row: no such job. Sets
-- no state, so no trigger fires.
WITH forgotten AS (
    UPDATE {schema}.jobs AS j SET result = NULL
    WHERE j.id = %(id)s AND j.state IN ('completed', 'cancelled', 'discarded')
      AND {include:_outside_unfinished_workflows}
    RETURNING j.id
)
SELECT state::text AS state, workflow_id, EXISTS (SELECT 1 FROM forgotten) AS forgotten
FROM {schema}.jobs WHERE id = %(id)s

-- name: job_purge_many
-- Delete at most %(limit)s jobs matching a filter (never running ones, nor steps of an unfinished
-- workflow), oldest first, in a short transaction; `pgtasks jobs purge` calls it until nothing is left.
WITH picked AS (
    SELECT id FROM {schema}.jobs AS j
    WHERE {include:_purgeable}
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {schema}.jobs AS j USING picked WHERE j.id = picked.id
RETURNING j.id

-- name: job_find_enqueued
-- Jobs of a task whose args contain the given JSON object (testing.assert_enqueued).
SELECT id, queue, state::text AS state, args::text AS args FROM {schema}.jobs
WHERE task = %(task)s AND args @> %(args)s::jsonb
  AND state = ANY(%(states)s::{schema}.job_state[])
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
ORDER BY id

-- name: notify_send
-- Send one notification per payload on a channel (worker wakeups after a retry or resume, the
-- control channel for cancel requests, the doctor's LISTEN probe).
SELECT count(pg_notify(%(channel)s::text, p)) FROM unnest(%(payloads)s::text[]) AS p

-- name: job_make_due
-- Testing (drain(with_scheduled=True)): make the waiting jobs of these queues runnable now:
-- scheduled for later, or waiting out a retry backoff. Returns how many were moved.
UPDATE {schema}.jobs SET run_at = now()
WHERE queue = ANY(%(queues)s::text[])
  AND state IN ('scheduled', 'retryable')
  AND run_at > now()
