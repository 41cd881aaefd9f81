-- Leadership lease, periodic fire records, worker heartbeats, and the rescuer's index on jobs.
-- Placeholders: the schema name is substituted by pgtasks.queries.render().

-- One lease row, forever: resigning or expiring only moves expires_at, so `term` is never reset
-- and only ever grows. `singleton` pins the table to that one row.
CREATE TABLE {schema}.leader (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    leader_id   text NOT NULL,
    term        bigint NOT NULL CHECK (term > 0),
    elected_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- One row per (schedule, fire time) that a scheduler has dealt with. The primary key is what
-- makes a tick enqueue at most once, even with two leaders: the job is inserted in the same
-- transaction as this row, and a second insert of the same key inserts nothing.
--   outcome 'enqueued'   job_id is the job enqueued for this tick
--   outcome 'skipped'    the catch-up policy dropped this tick (and `missed` older ones with it)
--   outcome 'registered' the schedule was first seen at fire_time; ticks after it are due
CREATE TABLE {schema}.periodic_fires (
    schedule     text NOT NULL,
    fire_time    timestamptz NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('enqueued', 'skipped', 'registered')),
    job_id       bigint,
    -- Ticks missed during downtime that the catch-up policy folded into this row.
    missed       integer NOT NULL DEFAULT 0 CHECK (missed >= 0),
    leader_term  bigint,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, fire_time)
);

-- Live worker processes. A worker upserts its row on every heartbeat and deletes it on a
-- graceful stop; `running` lists the jobs it is working on (jobs.attempted_by points back here).
CREATE TABLE {schema}.workers (
    worker_id     text PRIMARY KEY,
    hostname      text NOT NULL,
    pid           integer NOT NULL,
    queues        text[] NOT NULL,
    concurrency   integer NOT NULL,
    running       bigint[] NOT NULL DEFAULT '{}',
    started_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX workers_last_seen_idx ON {schema}.workers (last_seen_at);

-- The rescuer's scan: running jobs by the worker that claimed them. Only running rows are in it,
-- so it stays as small as the number of jobs in flight.
CREATE INDEX jobs_running_by_idx ON {schema}.jobs (attempted_by, attempted_at) WHERE state = 'running';
