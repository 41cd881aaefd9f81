-- Operations: queue pause state, operator cancel requests for running jobs, and a NOTIFY when a
-- job reaches a final state (so JobRef.wait() need not poll).
-- Placeholders: the schema name is substituted by pgtasks.queries.render().

-- One row per queue an operator has touched; a queue without a row is not paused. Workers read
-- it in their fetch query, so a pause is honoured by every worker at its next fetch.
CREATE TABLE {schema}.queues (
    name        text PRIMARY KEY CHECK (name <> ''),
    paused_at   timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Set by `pgtasks jobs cancel` on a running job: the worker running it is told (control NOTIFY,
-- and a check every poll interval) and the attempt's outcome is written as cancelled.
ALTER TABLE {schema}.jobs ADD COLUMN cancel_requested_at timestamptz;

-- A row trigger with a WHEN clause costs nothing on updates that do not finish a job (the fetch
-- claim, heartbeats); on those that do, about 2 microseconds per row (benchmarks/completion_notify.py).
-- A trigger rather than a NOTIFY in the completer, so that every path that ends a job (worker,
-- operator cancel, rescuer, plain SQL) wakes the waiters. The channel is "<schema>.done" and the
-- payload the job id.
CREATE FUNCTION {schema}.jobs_notify_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.done', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_final AFTER UPDATE OF state ON {schema}.jobs
    FOR EACH ROW
    WHEN (NEW.state IN ('completed', 'cancelled', 'discarded') AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION {schema}.jobs_notify_final();
