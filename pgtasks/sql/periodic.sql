-- name: periodic_fire_record
-- Claim one (schedule, fire time). The primary key makes this the at-most-once guard: a second
-- scheduler inserting the same tick gets no row back (it waits for the first one's transaction
-- and then skips), and so never inserts the job that goes with it.
INSERT INTO {schema}.periodic_fires (schedule, fire_time, outcome, missed, leader_term, recorded_at)
VALUES (%(schedule)s, %(fire_time)s, %(outcome)s, %(missed)s, %(leader_term)s, coalesce(%(now)s::timestamptz, now()))
ON CONFLICT (schedule, fire_time) DO NOTHING
RETURNING fire_time

-- name: periodic_fire_set_job
-- Link a claimed tick to the job enqueued for it, in the same transaction as both inserts.
UPDATE {schema}.periodic_fires SET job_id = %(job_id)s
WHERE schedule = %(schedule)s AND fire_time = %(fire_time)s

-- name: periodic_last_fires
-- For each named schedule: its newest record (the scheduler's durable cursor) and its newest
-- enqueued tick. Each LATERAL is a backward scan of the primary key, so it costs one probe.
SELECT n.schedule, last.fire_time AS last_time, last.outcome AS last_outcome,
       enq.fire_time AS enqueued_time, enq.job_id AS enqueued_job_id
FROM unnest(%(names)s::text[]) AS n(schedule)
LEFT JOIN LATERAL (
    SELECT f.fire_time, f.outcome FROM {schema}.periodic_fires AS f
    WHERE f.schedule = n.schedule ORDER BY f.fire_time DESC LIMIT 1
) AS last ON true
LEFT JOIN LATERAL (
    SELECT f.fire_time, f.job_id FROM {schema}.periodic_fires AS f
    WHERE f.schedule = n.schedule AND f.outcome = 'enqueued' ORDER BY f.fire_time DESC LIMIT 1
) AS enq ON true

-- name: periodic_schedule_names
-- Every schedule that has fire records, including ones no longer defined in code.
SELECT DISTINCT schedule FROM {schema}.periodic_fires ORDER BY schedule

-- name: periodic_fire_timeouts_set
-- First statement of each fire transaction. If this scheduler stalls mid-transaction (a frozen
-- network, a paused process), the server ends the session after idle_in_transaction_session_timeout
-- and frees the tick's key; without it a stuck ex-leader could block the new leader's insert of
-- the same tick until TCP keepalive noticed, hours later. lock_timeout bounds our own wait for
-- such a key. Both are transaction-local (set_config(..., true)), so they are pooler-safe.
SELECT set_config('idle_in_transaction_session_timeout', %(idle_ms)s, true),
       set_config('lock_timeout', %(lock_ms)s, true)

-- name: periodic_unfinished_run
-- overlap=False: the job of this schedule's newest enqueued tick before this one, if it has not
-- finished. One backward probe of the primary key, one jobs lookup by id. A job the cleaner has
-- deleted has finished.
SELECT j.id
FROM (
    SELECT f.job_id FROM {schema}.periodic_fires AS f
    WHERE f.schedule = %(schedule)s AND f.fire_time < %(fire_time)s AND f.outcome = 'enqueued'
    ORDER BY f.fire_time DESC LIMIT 1
) AS previous
JOIN {schema}.jobs AS j ON j.id = previous.job_id
WHERE j.state IN ('available', 'scheduled', 'retryable', 'running')

-- name: periodic_fire_set_skipped
-- overlap=False and the previous run is unfinished: the tick is recorded, but as skipped.
UPDATE {schema}.periodic_fires SET outcome = 'skipped'
WHERE schedule = %(schedule)s AND fire_time = %(fire_time)s
