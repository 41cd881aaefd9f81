-- name: job_rescue_stuck
-- Put running jobs whose worker is gone back to retry (or discard them when out of attempts).
-- A job is stuck when its attempt began more than rescue_after ago and its worker either has no
-- row (crashed before or after a heartbeat was pruned), has been silent for rescue_after, or is
-- alive but has not listed the job for rescue_after (a claim whose reply never reached it).
-- SKIP LOCKED and the state = 'running' re-check keep it safe next to completing workers; the
-- claim's outcome is fenced on `claims`, so a stale worker that comes back changes nothing.
-- Retried jobs wake workers on their queue with the same NOTIFY the insert trigger sends.
-- A job an operator asked to cancel (cancel_requested_at) ends `cancelled` instead of running again.
WITH stuck AS (
    SELECT j.id,
           CASE
               WHEN w.worker_id IS NULL THEN
                   'worker ' || coalesce(j.attempted_by, '(unknown)') || ' is gone (no heartbeat row)'
               WHEN w.last_seen_at < coalesce(%(now)s::timestamptz, now()) - make_interval(secs => %(rescue_after)s::float8) THEN
                   'worker ' || w.worker_id || ' went silent (last heartbeat ' || w.last_seen_at::text || ')'
               ELSE 'worker ' || w.worker_id || ' is alive but no longer reports running this job'
           END AS reason
    FROM {schema}.jobs AS j
    LEFT JOIN {schema}.workers AS w ON w.worker_id = j.attempted_by
    WHERE j.state = 'running'
      AND j.attempted_at < coalesce(%(now)s::timestamptz, now()) - make_interval(secs => %(rescue_after)s::float8)
      AND (w.worker_id IS NULL
           OR w.last_seen_at < coalesce(%(now)s::timestamptz, now()) - make_interval(secs => %(rescue_after)s::float8)
           OR (NOT j.id = ANY(w.running)
               AND j.attempted_at < w.last_seen_at - make_interval(secs => %(rescue_after)s::float8)))
    ORDER BY j.attempted_at, j.id
    LIMIT %(limit)s
    FOR UPDATE OF j SKIP LOCKED
), rescued AS (
    UPDATE {schema}.jobs AS j
    SET state = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                     WHEN j.attempt >= j.max_attempts THEN 'discarded'
                     ELSE 'retryable' END::{schema}.job_state,
        finalized_at = CASE WHEN j.cancel_requested_at IS NOT NULL OR j.attempt >= j.max_attempts
                            THEN coalesce(%(now)s::timestamptz, now()) END,
        run_at = coalesce(%(now)s::timestamptz, now()),
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempt,
            'at', coalesce(%(now)s::timestamptz, now()),
            'type', 'Rescued',
            'message', 'rescued: ' || stuck.reason || ' for more than ' || %(rescue_after)s::float8::text
                       || 's; the attempt was abandoned',
            'traceback', NULL))
    FROM stuck
    WHERE j.id = stuck.id AND j.state = 'running'
    RETURNING j.id, j.queue, j.state::text AS state, j.attempted_by, j.attempt
), woken AS (
    SELECT count(pg_notify({channel}, q.queue)) AS notified
    FROM (SELECT DISTINCT queue FROM rescued WHERE state = 'retryable') AS q
)
SELECT r.id, r.queue, r.state, r.attempted_by, r.attempt, (SELECT notified FROM woken) AS notified
FROM rescued AS r ORDER BY r.id

-- name: job_delete_finished
-- Delete one small batch of jobs in one final state finalized before the cutoff. The batch is
-- chosen with SKIP LOCKED and bounded by LIMIT, so a run never holds many row locks or waits
-- on a row someone else holds; the caller loops until a batch comes back short. Workflow steps
-- are left to workflow_delete_finished, which deletes a workflow's jobs together.
DELETE FROM {schema}.jobs
WHERE id IN (
    SELECT id FROM {schema}.jobs
    WHERE state = %(state)s::{schema}.job_state AND workflow_id IS NULL
      AND finalized_at < coalesce(%(now)s::timestamptz, now()) - make_interval(secs => %(retention)s::float8)
    ORDER BY finalized_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)

-- name: periodic_fire_prune
-- Delete one batch of fire records older than the cutoff, always keeping each schedule's newest
-- record: it is the scheduler's cursor, and losing it would make the schedule start afresh. Each
-- schedule's newest enqueued record is kept too: overlap=False looks there for the run that may
-- still be unfinished (a run older than the retention, behind a paused queue, say).
DELETE FROM {schema}.periodic_fires
WHERE (schedule, fire_time) IN (
    SELECT p.schedule, p.fire_time FROM {schema}.periodic_fires AS p
    WHERE p.fire_time < coalesce(%(now)s::timestamptz, now()) - make_interval(secs => %(retention)s::float8)
      AND p.fire_time < (SELECT max(n.fire_time) FROM {schema}.periodic_fires AS n WHERE n.schedule = p.schedule)
      AND NOT (p.outcome = 'enqueued'
               AND p.fire_time = (SELECT max(e.fire_time) FROM {schema}.periodic_fires AS e
                                  WHERE e.schedule = p.schedule AND e.outcome = 'enqueued'))
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)

-- name: worker_prune_dead
-- Delete one batch of worker rows not seen since the cutoff (crashed processes). Their running
-- jobs, if any are left, are still rescued: a missing worker row counts as a dead worker.
DELETE FROM {schema}.workers
WHERE worker_id IN (
    SELECT worker_id FROM {schema}.workers
    WHERE last_seen_at < coalesce(%(now)s::timestamptz, now()) - make_interval(secs => %(retention)s::float8)
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)

-- name: key_bucket_prune
-- Delete one batch of per-key token buckets that need no row: a key without one has a full
-- bucket, so a bucket that has filled up again (its tokens plus what its rate added since are at
-- least the burst) is dropped, and so is the bucket of a task that has no per-key rate any more
-- (no task_limits row, or no key_rate). The full buckets are deleted under their queue's row
-- lock, the one a limited claim takes to read and write them (job_fetch_limited): a claim that
-- read a bucket writes it back before the lock is released, and this statement re-checks a row
-- a claim changed since its snapshot (READ COMMITTED re-reads it), so a deleted bucket was full.
-- SKIP LOCKED on both: a queue being claimed now, or a bucket in use, waits for the next pass.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
), locked AS (
    SELECT p.name FROM {schema}.queues AS p
    WHERE EXISTS (SELECT 1 FROM {schema}.task_limits AS t WHERE t.queue = p.name AND t.key_rate IS NOT NULL)
    FOR UPDATE OF p SKIP LOCKED
), picked AS (
    SELECT b.task, b.key
    FROM {schema}.key_buckets AS b
    CROSS JOIN clock AS k
    LEFT JOIN {schema}.task_limits AS t ON t.task = b.task
    WHERE t.task IS NULL OR t.key_rate IS NULL
       OR (t.queue IN (SELECT name FROM locked)
           AND b.tokens + t.key_rate * greatest(0, extract(epoch FROM k.now - b.tokens_at)) >= t.key_burst)
    LIMIT %(limit)s
    FOR UPDATE OF b SKIP LOCKED
)
DELETE FROM {schema}.key_buckets AS b
USING picked
WHERE b.task = picked.task AND b.key = picked.key
