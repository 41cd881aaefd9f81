-- Flow control: concurrency and rate limits enforced where jobs are claimed, across every worker
-- (docs/limits.md), and the supervisor of a multi-process worker.
-- Placeholders: the schema name is substituted by pgtasks.queries.render().

-- A queue's limits live on its queues row. A queue with a limit (or with a task that has one) is
-- left out of the plain claim, like a paused queue, and claimed only by job_fetch_limited under
-- this row's lock: claimers of a limited queue take turns, so counting its running jobs and taking
-- its tokens is exact. `rate` is in tokens per second; the bucket holds at most `burst` tokens
-- and had `tokens` at `tokens_at`. `declared` is what the code last declared (app.queue()), so a
-- worker that starts with the same declaration keeps a value an operator set with the CLI.
ALTER TABLE {schema}.queues
    ADD COLUMN concurrency integer CHECK (concurrency > 0),
    ADD COLUMN rate        double precision CHECK (rate > 0),
    ADD COLUMN burst       integer CHECK (burst > 0),
    ADD COLUMN tokens      double precision,
    ADD COLUMN tokens_at   timestamptz,
    ADD COLUMN declared    jsonb;

-- A task's limits, as its code declares them (@app.task(concurrency=, rate_limit=)); a worker
-- writes the rows of the tasks it registers when it starts. A task's limits are enforced in its
-- queue (`queue`): that queue is a limited one, and its row lock covers this row's tokens.
-- The key_* limits apply per value of the job's limit_key (Limit(key=...)).
CREATE TABLE {schema}.task_limits (
    task             text PRIMARY KEY,
    queue            text NOT NULL,
    concurrency      integer CHECK (concurrency > 0),
    rate             double precision CHECK (rate > 0),
    burst            integer CHECK (burst > 0),
    tokens           double precision,
    tokens_at        timestamptz,
    key_name         text,
    key_concurrency  integer CHECK (key_concurrency > 0),
    key_rate         double precision CHECK (key_rate > 0),
    key_burst        integer CHECK (key_burst > 0),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX task_limits_queue_idx ON {schema}.task_limits (queue);

-- The token bucket of one key of a task with a per-key rate. A key without a row has a full
-- bucket, so the cleaner deletes rows whose bucket has filled up again.
CREATE TABLE {schema}.key_buckets (
    task       text NOT NULL,
    key        text NOT NULL,
    tokens     double precision NOT NULL,
    tokens_at  timestamptz NOT NULL,
    PRIMARY KEY (task, key)
);

-- The value of a job's per-key limit (Limit(key=...)), computed at enqueue from its arguments;
-- NULL for a job of a task without one. Not in any index: only running jobs of limited queues
-- are counted by it, and those are found through jobs_running_by_idx.
ALTER TABLE {schema}.jobs ADD COLUMN limit_key text;

-- The supervisor (`pgtasks worker --processes N`) a worker process runs under, "host:pid"; NULL for
-- a worker started on its own. `pgtasks workers` groups the children under it.
ALTER TABLE {schema}.workers ADD COLUMN supervisor text;

-- The tasks a worker process has registered, written by its first heartbeat: it claims only their
-- jobs, and `pgtasks doctor` reports ready jobs whose task no live worker of their queue knows.
-- NULL for a worker of an older version (counted as knowing every task).
ALTER TABLE {schema}.workers ADD COLUMN tasks text[];
