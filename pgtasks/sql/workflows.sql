-- name: workflow_reserve
-- The first of a workflow's two round trips: its row, its steps' ids (drawn from the jobs'
-- identity sequence, so the steps can point at each other before they exist) and the database
-- clock, from which the steps' run_at and expires_at are computed (both statements run in one
-- transaction, whose now() is the same).
WITH w AS (
    INSERT INTO {schema}.workflows (kind, structure, steps, result_steps, result_list, link_error)
    VALUES (%(kind)s, %(structure)s::jsonb, %(steps)s, %(result_steps)s::int[], %(result_list)s,
            %(link_error)s::jsonb)
    RETURNING id
)
SELECT w.id, now(),
       (SELECT array_agg(nextval('{schema}.jobs_id_seq'::regclass)) FROM generate_series(1, %(steps)s))
FROM w

-- name: workflow_insert_steps
-- The second round trip of a small workflow: every step in one statement, from one JSON array.
INSERT INTO {schema}.jobs (id, task, queue, args, state, priority, max_attempts, run_at, expires_at,
                           workflow_id, workflow_step, wait_count, wait_delay, next_ids, input_from,
                           input_param, input_list, limit_key)
OVERRIDING SYSTEM VALUE
SELECT r.id, r.task, r.queue, r.args::jsonb, r.state::{schema}.job_state, r.priority, r.max_attempts,
       r.run_at, r.expires_at, %(workflow_id)s, r.step, r.waits, r.wait_delay, r.next_ids, r.input_from,
       r.input_param, r.input_list, r.limit_key
FROM json_to_recordset(%(rows)s::json)
     AS r(id bigint, task text, queue text, args json, state text, priority smallint, max_attempts int,
          run_at timestamptz, expires_at timestamptz, step int, waits int, wait_delay float8,
          next_ids bigint[], input_from bigint[], input_param text, input_list boolean, limit_key text)

-- name: workflow_copy_steps
-- workflow_insert_steps for big workflows (a 10,000-member chord): the steps streamed by COPY.
COPY {schema}.jobs (id, task, queue, args, state, priority, max_attempts, run_at, expires_at, workflow_id,
                    workflow_step, wait_count, wait_delay, next_ids, input_from, input_param, input_list,
                    limit_key)
FROM STDIN

-- name: workflow_get
-- One workflow with its state derived from its steps: cancelled (as a whole, or its first failure
-- was a cancel), failed (a step was discarded), running (a step is unfinished) or completed.
SELECT w.id, w.created_at, w.kind, w.steps, w.structure::text AS structure, w.result_steps, w.result_list,
       w.link_error IS NOT NULL AS has_link_error, w.failed_at, w.failed_job_id, w.cancelled_at,
       CASE WHEN w.cancelled_at IS NOT NULL THEN 'cancelled'
            WHEN w.failed_job_id IS NOT NULL THEN
                CASE WHEN f.state = 'cancelled' THEN 'cancelled' ELSE 'failed' END
            WHEN EXISTS (SELECT 1 FROM {schema}.jobs AS j
                         WHERE j.workflow_id = w.id AND j.state NOT IN ('completed', 'cancelled', 'discarded'))
                THEN 'running'
            ELSE 'completed' END AS state
FROM {schema}.workflows AS w
LEFT JOIN {schema}.jobs AS f ON f.id = w.failed_job_id
WHERE w.id = %(id)s

-- name: workflow_list
-- Workflows newest first, each with its state and its steps counted by state (one scan of
-- jobs_workflow_idx per workflow).
SELECT w.id, w.created_at, w.kind, w.steps,
       CASE WHEN w.cancelled_at IS NOT NULL THEN 'cancelled'
            WHEN w.failed_job_id IS NOT NULL THEN
                CASE WHEN f.state = 'cancelled' THEN 'cancelled' ELSE 'failed' END
            WHEN c.unfinished > 0 THEN 'running'
            ELSE 'completed' END AS state,
       c.completed, c.unfinished, c.failed, w.failed_job_id,
       extract(epoch FROM c.last_finalized - w.created_at) AS seconds
FROM {schema}.workflows AS w
LEFT JOIN {schema}.jobs AS f ON f.id = w.failed_job_id
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE j.state = 'completed') AS completed,
           count(*) FILTER (WHERE j.state NOT IN ('completed', 'cancelled', 'discarded')) AS unfinished,
           count(*) FILTER (WHERE j.state IN ('cancelled', 'discarded')) AS failed,
           max(j.finalized_at) AS last_finalized
    FROM {schema}.jobs AS j WHERE j.workflow_id = w.id
) AS c
WHERE (%(states)s::text[] IS NULL
       OR CASE WHEN w.cancelled_at IS NOT NULL THEN 'cancelled'
               WHEN w.failed_job_id IS NOT NULL THEN
                   CASE WHEN f.state = 'cancelled' THEN 'cancelled' ELSE 'failed' END
               WHEN c.unfinished > 0 THEN 'running'
               ELSE 'completed' END = ANY(%(states)s::text[]))
ORDER BY w.id DESC
LIMIT %(limit)s

-- name: workflow_steps
-- Every step of a workflow in step order (the link_error job last, after the step it ran for).
SELECT id, workflow_step AS step, task, queue, state::text AS state, attempt, max_attempts, wait_count,
       result::text AS result, errors -> -1 AS last_error, created_at, attempted_at, finalized_at,
       extract(epoch FROM finalized_at - attempted_at) AS run_seconds
FROM {schema}.jobs
WHERE workflow_id = %(id)s
ORDER BY workflow_step, id

-- name: workflow_step_ids
-- The job ids of some steps of a workflow, by step index (a WorkflowRef looked up by id alone).
SELECT s.step, j.id
FROM unnest(%(steps)s::int[]) AS s(step)
JOIN {schema}.jobs AS j ON j.workflow_id = %(id)s AND j.workflow_step = s.step

-- name: workflow_failure
-- What WorkflowRef.wait() checks besides its result steps: the failed step's outcome, if any.
-- How the step ended is kept in the workflows row: an operator may have retried that job since.
SELECT w.failed_job_id, w.cancelled_at IS NOT NULL AS cancelled, f.task, w.failed_state AS state,
       w.failed_error AS last_error
FROM {schema}.workflows AS w
LEFT JOIN {schema}.jobs AS f ON f.id = w.failed_job_id
WHERE w.id = %(id)s

-- name: workflow_outcomes
-- (id, state, result, last error) of the result steps WorkflowRef.wait() waits for.
SELECT id, state::text AS state, result::text AS result, errors -> -1 AS last_error
FROM {schema}.jobs WHERE id = ANY(%(ids)s::bigint[])

-- name: workflow_lock_steps
-- Cancelling a workflow, first: lock its unfinished steps, in id order, before its workflows row,
-- the order in which a failing step's trigger takes them (its own row, then the workflows row), so
-- a cancel and a discard never deadlock.
SELECT id FROM {schema}.jobs
WHERE workflow_id = %(id)s AND state IN ('waiting', 'available', 'scheduled', 'retryable', 'running')
ORDER BY id
FOR UPDATE

-- name: workflow_exists
SELECT 1 FROM {schema}.workflows WHERE id = %(id)s

-- name: workflow_mark_cancelled
-- Then: once cancelled_at is set, the steps cancelled next do not fail the workflow (no link_error
-- runs for a cancel asked for on purpose). A workflow that failed stays failed: its remaining
-- steps are cancelled, its state is what happened first.
UPDATE {schema}.workflows SET cancelled_at = coalesce(cancelled_at, coalesce(%(now)s::timestamptz, now()))
WHERE id = %(id)s AND failed_at IS NULL

-- name: workflow_cancel_steps
-- The second half: every unfinished step, as job_cancel_many cancels a job. Waiting and pending
-- steps end cancelled at once; running ones get cancel_requested_at, and their worker stops them.
WITH picked AS (
    SELECT id, state FROM {schema}.jobs
    WHERE workflow_id = %(id)s AND state IN ('waiting', 'available', 'scheduled', 'retryable', 'running')
    ORDER BY id
    FOR UPDATE
), {include:_cancel_picked}

-- name: _workflow_step_expired
-- A step (j) that is finished and past its state's retention (NULL: kept forever).
coalesce(j.finalized_at < coalesce(%(now)s::timestamptz, now()) - make_interval(secs =>
         CASE j.state WHEN 'completed' THEN %(completed)s::float8
                      WHEN 'cancelled' THEN %(cancelled)s::float8
                      WHEN 'discarded' THEN %(discarded)s::float8 END), false)

-- name: workflow_delete_finished
-- The cleaner, for workflows: delete up to %(limit)s workflows (their row and all their jobs, in
-- one statement) whose every job is finished and past its state's retention (NULL: kept forever).
-- A workflow created after the shortest retention began cannot qualify, so only older rows are
-- looked at; each is checked through jobs_workflow_idx. SKIP LOCKED passes over a workflow whose
-- first failure is being recorded right now.
--
-- The steps are then locked and looked at again: a step an operator retried after this
-- statement's snapshot was taken is seen as it is now (the lock waits for that retry to commit and
-- returns the new row version), and its workflow is left alone.
WITH candidates AS (
    SELECT w.id FROM {schema}.workflows AS w
    WHERE w.created_at < coalesce(%(now)s::timestamptz, now()) - make_interval(secs => %(shortest)s::float8)
      AND NOT EXISTS (
          SELECT 1 FROM {schema}.jobs AS j
          WHERE j.workflow_id = w.id AND NOT {include:_workflow_step_expired})
    ORDER BY w.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), locked AS (
    SELECT j.workflow_id, {include:_workflow_step_expired} AS expired
    FROM {schema}.jobs AS j JOIN candidates AS c ON j.workflow_id = c.id
    FOR UPDATE OF j
), picked AS (
    SELECT c.id FROM candidates AS c
    WHERE NOT EXISTS (SELECT 1 FROM locked AS l WHERE l.workflow_id = c.id AND NOT l.expired)
), steps AS (
    DELETE FROM {schema}.jobs AS j USING picked WHERE j.workflow_id = picked.id
    RETURNING j.id
), gone AS (
    DELETE FROM {schema}.workflows AS w USING picked WHERE w.id = picked.id
    RETURNING w.id
)
SELECT (SELECT count(*) FROM gone) AS workflows, (SELECT count(*) FROM steps) AS jobs
