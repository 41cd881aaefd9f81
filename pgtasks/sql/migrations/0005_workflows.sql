-- Workflows (chain, group, chord, link/link_error): every step is a job row inserted at .delay(),
-- linked into a DAG by counters, and advanced by triggers in the transaction that ends a step.
-- See docs/workflows.md. Placeholders: the schema name and the NOTIFY channel are substituted by
-- pgtasks.queries.render().

-- A step whose predecessors have not all completed. It is in no fetch index, so no worker sees it.
-- A new enum value cannot be used in the transaction that adds it, and a fresh install applies
-- every migration in one transaction: so no index predicate or WHEN clause below names 'waiting'
-- (the plpgsql bodies may, they are planned at their first call).
ALTER TYPE {schema}.job_state ADD VALUE IF NOT EXISTS 'waiting' BEFORE 'available';

-- One row per workflow: what `pgtasks workflows show` draws, where its result comes from, what runs
-- when it fails, and whether it failed. Steps point here through jobs.workflow_id (no foreign key:
-- `jobs purge` may delete single steps; the cleaner deletes a workflow's rows together).
CREATE TABLE {schema}.workflows (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at     timestamptz NOT NULL DEFAULT now(),
    kind           text NOT NULL,          -- chain, group, chord or link: the outermost shape
    structure      jsonb NOT NULL,         -- the tree of shapes; leaves name steps by jobs.workflow_step
    steps          integer NOT NULL CHECK (steps > 0),
    result_steps   integer[] NOT NULL,     -- the steps whose results are the workflow's result
    result_list    boolean NOT NULL,       -- a list of those results (a group) or the one value
    -- {"task", "queue", "priority", "max_attempts", "args", "id_param", "error_param", "step"}: the
    -- job inserted once, with the failed job's id and last error entry, when a step fails.
    link_error     jsonb,
    failed_at      timestamptz,            -- the first step that ended discarded or cancelled, and when
    failed_job_id  bigint,
    failed_state   text,                   -- how it ended, and its last error entry, as it was then (an
    failed_error   jsonb,                  -- operator may retry that job later; the workflow stays failed)
    cancelled_at   timestamptz             -- cancelled as a whole (WorkflowRef.cancel, `workflows cancel`)
);

-- The columns of a step; a plain job leaves them at their defaults, which cost no storage
-- (constant defaults are kept in the catalog) and keep it out of the two indexes below.
ALTER TABLE {schema}.jobs
    ADD COLUMN workflow_id  bigint,
    ADD COLUMN workflow_step integer,                 -- the step's index in its workflow (0, 1, ...)
    ADD COLUMN wait_count   integer NOT NULL DEFAULT 0,  -- predecessors that have not completed yet
    ADD COLUMN wait_delay   double precision,         -- its countdown, counted from when it is ready
    ADD COLUMN next_ids     bigint[],                 -- the steps whose wait_count this one decrements
    ADD COLUMN input_from   bigint[],                 -- the predecessors whose results it receives, in order
    ADD COLUMN input_param  text,                     -- the parameter that receives them (NULL: .si())
    ADD COLUMN input_list   boolean NOT NULL DEFAULT false,  -- a list of results, or the one value
    ADD COLUMN signalled    boolean NOT NULL DEFAULT false;  -- it has advanced its successors

-- A workflow's steps, for cancel, show, the failure cascade and retention. Plain jobs are not in it.
CREATE INDEX jobs_workflow_idx ON {schema}.jobs (workflow_id) WHERE workflow_id IS NOT NULL;

-- Steps that still wait for input: every waiting step (and a step cancelled before it got its
-- input) has wait_count > 0, a plain job never. Counts of waiting jobs per queue read this index;
-- it cannot say state = 'waiting' (see the top of this file).
CREATE INDEX jobs_waiting_idx ON {schema}.jobs (queue) WHERE wait_count > 0;

-- A step completed: decrement its successors' wait_count, and start those that reach 0, with
-- their input, in the completing transaction. The successor's row lock serialises two
-- predecessors completing at once, so exactly one of them sees 0. `signalled` makes a second
-- completion of the same step (an operator retry) advance nothing.
--
-- The input is read by a second statement, after the decrement: a statement takes its snapshot
-- when it starts, so the decrement, having waited for a concurrent predecessor's commit, still
-- could not see that predecessor's result; the next statement can. The completing job's own row
-- is not written yet in a BEFORE trigger: its result is NEW.result.
CREATE FUNCTION {schema}.jobs_workflow_advance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ready bigint[];
    woken integer;
BEGIN
    IF NEW.signalled THEN
        RETURN NEW;
    END IF;
    NEW.signalled := true;
    IF NEW.next_ids IS NULL OR cardinality(NEW.next_ids) = 0 THEN
        RETURN NEW;
    END IF;
    WITH counted AS (
        UPDATE {schema}.jobs SET wait_count = wait_count - 1
        WHERE id = ANY(NEW.next_ids) AND state = 'waiting'
        RETURNING id, wait_count
    )
    SELECT array_agg(id ORDER BY id) INTO ready FROM counted WHERE wait_count = 0;
    IF ready IS NULL THEN
        RETURN NEW;
    END IF;
    WITH started AS (
        UPDATE {schema}.jobs AS s
        SET args = CASE WHEN s.input_param IS NULL THEN s.args
                        ELSE s.args || jsonb_build_object(s.input_param, (
                            SELECT CASE WHEN s.input_list
                                        THEN coalesce(jsonb_agg(CASE WHEN u.pid = NEW.id THEN NEW.result
                                                                     ELSE p.result END ORDER BY u.ord), '[]')
                                        ELSE (array_agg(CASE WHEN u.pid = NEW.id THEN NEW.result
                                                             ELSE p.result END))[1] END
                            FROM unnest(s.input_from) WITH ORDINALITY AS u(pid, ord)
                            LEFT JOIN {schema}.jobs AS p ON p.id = u.pid)) END,
            -- SET reads the row as it was: run_at here is the step's own eta, if it was given one.
            run_at = greatest(s.run_at, now() + make_interval(secs => coalesce(s.wait_delay, 0))),
            state = CASE WHEN greatest(s.run_at, now() + make_interval(secs => coalesce(s.wait_delay, 0))) > now()
                         THEN 'scheduled' ELSE 'available' END::{schema}.job_state
        -- A plain primary-key lookup: joined to a subquery over the same table, the planner chose
        -- two nested sequential scans on small tables (3.7 ms a step instead of 0.07).
        WHERE s.id = ANY(ready) AND s.state = 'waiting'
        RETURNING s.queue, s.state
    )
    -- The insert trigger wakes workers for inserted rows only: these were updated.
    SELECT count(pg_notify({channel}, q.queue)) INTO woken
    FROM (SELECT DISTINCT queue FROM started WHERE state = 'available') AS q;
    RETURN NEW;
END
$$;

-- Only a step's completion pays more than this WHEN check; plain jobs (workflow_id NULL) stop at it.
CREATE TRIGGER jobs_workflow_advance BEFORE UPDATE OF state ON {schema}.jobs
    FOR EACH ROW
    WHEN (NEW.workflow_id IS NOT NULL AND NEW.state = 'completed' AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION {schema}.jobs_workflow_advance();

-- A step ended discarded or cancelled: the first such step of a workflow fails it. Its waiting
-- steps end cancelled with an error naming the failed step, and the link_error job is inserted.
-- Steps already available or running go on. An AFTER trigger, unlike the advance: its cascade
-- updates other rows of the workflow, which the statement that fired it may be about to update
-- too (a cancel of several waiting steps); after the statement, those rows are settled.
CREATE FUNCTION {schema}.jobs_workflow_fail() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    spec jsonb;
    failure jsonb;
    reason text;
BEGIN
    failure := coalesce(NEW.errors -> -1, jsonb_build_object(
        'attempt', NEW.attempt, 'at', now(), 'type', CASE WHEN NEW.state = 'cancelled' THEN 'Cancelled'
                                                          ELSE 'Discarded' END,
        'message', 'the job ended ' || NEW.state::text, 'traceback', NULL));
    UPDATE {schema}.workflows
    SET failed_at = now(), failed_job_id = NEW.id, failed_state = NEW.state::text, failed_error = failure
    WHERE id = NEW.workflow_id AND failed_at IS NULL AND cancelled_at IS NULL
    RETURNING link_error INTO spec;
    IF NOT FOUND THEN
        RETURN NULL;  -- already failed or cancelled: the first failure did all of this
    END IF;
    reason := format('workflow %s failed: step %s (job %s, %s) ended %s: %s: %s', NEW.workflow_id,
                     NEW.workflow_step, NEW.id, NEW.task, NEW.state, failure ->> 'type', failure ->> 'message');
    UPDATE {schema}.jobs
    SET state = 'cancelled', finalized_at = now(),
        errors = errors || jsonb_build_array(jsonb_build_object(
            'attempt', attempt, 'at', now(), 'type', 'WorkflowFailed', 'message', reason, 'traceback', NULL))
    WHERE workflow_id = NEW.workflow_id AND state = 'waiting';
    IF spec IS NOT NULL THEN
        INSERT INTO {schema}.jobs (task, queue, args, priority, max_attempts, workflow_id, workflow_step)
        VALUES (spec ->> 'task', spec ->> 'queue',
                (spec -> 'args') || CASE WHEN spec ->> 'id_param' IS NULL THEN '{}'::jsonb
                                         ELSE jsonb_build_object(spec ->> 'id_param', NEW.id,
                                                                 spec ->> 'error_param', failure) END,
                (spec ->> 'priority')::smallint, (spec ->> 'max_attempts')::integer, NEW.workflow_id,
                (spec ->> 'step')::integer);
    END IF;
    RETURN NULL;
END
$$;

-- A step that completed once (signalled) has done its part: an operator's re-run of it that fails
-- changes nothing after it, as its re-run that completes does not either.
CREATE TRIGGER jobs_workflow_fail AFTER UPDATE OF state ON {schema}.jobs
    FOR EACH ROW
    WHEN (NEW.workflow_id IS NOT NULL AND NEW.state IN ('cancelled', 'discarded')
          AND OLD.state IS DISTINCT FROM NEW.state AND NOT NEW.signalled)
    EXECUTE FUNCTION {schema}.jobs_workflow_fail();
