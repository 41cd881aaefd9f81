-- The jobs table, its state type, the fetch index and the NOTIFY trigger.
-- Placeholders: the schema name and the NOTIFY channel are substituted by pgtasks.queries.render().

CREATE TYPE {schema}.job_state AS ENUM (
    'available',  -- ready to run now
    'scheduled',  -- waiting for run_at (countdown / eta / snooze)
    'running',    -- claimed by a worker
    'retryable',  -- failed, waiting for run_at to try again
    'completed',  -- finished successfully (final)
    'cancelled',  -- stopped on purpose or expired (final)
    'discarded'   -- failed max_attempts times (final)
);

CREATE TABLE {schema}.jobs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task          text NOT NULL CHECK (task <> ''),
    queue         text NOT NULL CHECK (queue <> ''),
    args          jsonb NOT NULL DEFAULT '{}',
    state         {schema}.job_state NOT NULL DEFAULT 'available',
    priority      smallint NOT NULL DEFAULT 0,
    attempt       integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts  integer NOT NULL DEFAULT 20 CHECK (max_attempts > 0),
    -- Incremented by every claim and never decremented: the fencing token that lets only the
    -- claim which owns a running job write its outcome (attempt alone can go back on Snooze).
    claims        integer NOT NULL DEFAULT 0,
    run_at        timestamptz NOT NULL DEFAULT now(),
    created_at    timestamptz NOT NULL DEFAULT now(),
    attempted_at  timestamptz,
    attempted_by  text,
    finalized_at  timestamptz,
    expires_at    timestamptz,
    errors        jsonb NOT NULL DEFAULT '[]',
    result        jsonb,
    unique_key    text
);

-- The fetch path: only jobs that can still run are in this index, so it stays small however
-- many finished rows the table holds. Order matches the fetch ORDER BY (priority high first).
CREATE INDEX jobs_fetch_idx ON {schema}.jobs (queue, priority DESC, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');

-- Finished rows, for retention cleanup and "recent outcomes" listings.
CREATE INDEX jobs_finalized_idx ON {schema}.jobs (finalized_at)
    WHERE state IN ('completed', 'cancelled', 'discarded');

-- At most one unfinished job per unique_key; enforced by the database, so it is race-free.
CREATE UNIQUE INDEX jobs_unique_key_idx ON {schema}.jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('available', 'scheduled', 'running', 'retryable');

-- One NOTIFY per inserting statement and queue (Postgres folds identical notifications within a
-- transaction, so many .delay() calls in one transaction still wake a worker once per queue).
-- A trigger rather than client code so that rows inserted by any producer, even plain SQL or
-- COPY, wake the workers.
CREATE FUNCTION {schema}.jobs_notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify({channel}, q.queue)
    FROM (SELECT DISTINCT queue FROM inserted_jobs WHERE state = 'available') AS q;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_insert AFTER INSERT ON {schema}.jobs
    REFERENCING NEW TABLE AS inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.jobs_notify_insert();
