-- name: limits_lock_queues
-- The first statement of a limited claim: lock the rows of the limited queues among those asked
-- for, in name order (so two claimers never wait on each other in a cycle). Claimers of one limited
-- queue take turns here; job_fetch_limited, the next statement, takes a new snapshot after the
-- lock is granted, so it sees every claim the previous holder committed. Returns the names locked.
SELECT p.name FROM {schema}.queues AS p
WHERE p.name = ANY(%(queues)s::text[]) AND p.paused_at IS NULL
  AND (p.concurrency IS NOT NULL OR p.rate IS NOT NULL
       OR EXISTS (SELECT 1 FROM {schema}.task_limits AS t WHERE t.queue = p.name))
ORDER BY p.name
FOR UPDATE OF p

-- name: job_fetch_limited
-- Claim up to %(limit)s jobs of the limited queues %(queues)s, locked by limits_lock_queues in
-- this transaction. The first %(scan)s claimable jobs (of the tasks %(tasks)s this worker has
-- registered, as in job_fetch_available) of each queue in priority order are the
-- candidates; then each level of limit keeps the candidates it has room for, in priority order:
--   1. per key (task_limits.key_*): the n-th candidate of a (task, key) passes while n <= the
--      key's free slots and its whole tokens;
--   2. per task (task_limits.concurrency / rate): the same over the survivors of a task;
--   3. per queue (queues.concurrency / rate), and the batch size.
-- Running jobs are counted through jobs_running_by_idx (only running rows are in it). The tokens
-- taken are written back in the same statement. Besides the claimed jobs it returns one row with a
-- NULL id when some candidate was held back: `wake_in` is the seconds until the soonest rate limit
-- that held one back has a token again (NULL if only concurrency did), `held` that something was.
-- Seconds rather than a time, so the worker's clock does not have to agree with the database's.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
), q AS (
    SELECT p.name, p.concurrency, p.rate,
           least(p.burst, coalesce(p.tokens, p.burst)
                 + p.rate * greatest(0, extract(epoch FROM c.now - coalesce(p.tokens_at, c.now)))) AS tokens
    FROM {schema}.queues AS p, clock AS c
    WHERE p.name = ANY(%(queues)s::text[])
), running AS (
    SELECT j.queue, j.task, j.limit_key, count(*) AS n
    FROM {schema}.jobs AS j
    WHERE j.state = 'running' AND j.queue = ANY(%(queues)s::text[])
    GROUP BY j.queue, j.task, j.limit_key
), candidates AS (
    SELECT j.id, j.queue, j.task, j.limit_key, j.priority, j.run_at
    FROM q CROSS JOIN LATERAL (
        SELECT id, queue, task, limit_key, priority, run_at FROM {schema}.jobs
        WHERE queue = q.name
          AND state IN ('available', 'scheduled', 'retryable')
          AND run_at <= (SELECT now FROM clock)
          AND (%(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s::text[]))
        ORDER BY priority DESC, run_at, id
        LIMIT %(scan)s
    ) AS j
), limited AS (
    SELECT c.*, t.concurrency AS task_max, t.rate AS task_rate,
           least(t.burst, coalesce(t.tokens, t.burst)
                 + t.rate * greatest(0, extract(epoch FROM k.now - coalesce(t.tokens_at, k.now)))) AS task_tokens,
           CASE WHEN c.limit_key IS NOT NULL THEN t.key_concurrency END AS key_max,
           CASE WHEN c.limit_key IS NOT NULL THEN t.key_rate END AS key_rate,
           least(t.key_burst, coalesce(b.tokens
                 + t.key_rate * greatest(0, extract(epoch FROM k.now - b.tokens_at)), t.key_burst)) AS key_tokens,
           coalesce(r.n, 0) AS key_running,
           row_number() OVER (PARTITION BY c.task, c.limit_key ORDER BY c.priority DESC, c.run_at, c.id) AS key_rank
    FROM candidates AS c
    CROSS JOIN clock AS k
    LEFT JOIN {schema}.task_limits AS t ON t.task = c.task
    LEFT JOIN {schema}.key_buckets AS b ON b.task = c.task AND b.key = c.limit_key
    LEFT JOIN running AS r ON r.queue = c.queue AND r.task = c.task AND r.limit_key = c.limit_key
), key_passed AS (
    SELECT l.*, row_number() OVER (PARTITION BY l.task ORDER BY l.priority DESC, l.run_at, l.id) AS task_rank
    FROM limited AS l
    WHERE (l.key_max IS NULL OR l.key_rank <= l.key_max - l.key_running)
      AND (l.key_rate IS NULL OR l.key_rank <= floor(l.key_tokens))
), task_passed AS (
    SELECT p.*, row_number() OVER (PARTITION BY p.queue ORDER BY p.priority DESC, p.run_at, p.id) AS queue_rank
    FROM key_passed AS p
    LEFT JOIN (SELECT task, sum(n) AS n FROM running GROUP BY task) AS rt ON rt.task = p.task
    WHERE (p.task_max IS NULL OR p.task_rank <= p.task_max - coalesce(rt.n, 0))
      AND (p.task_rate IS NULL OR p.task_rank <= floor(p.task_tokens))
), picked AS (
    SELECT p.id FROM task_passed AS p
    JOIN q ON q.name = p.queue
    LEFT JOIN (SELECT queue, sum(n) AS n FROM running GROUP BY queue) AS rq ON rq.queue = p.queue
    WHERE (q.concurrency IS NULL OR p.queue_rank <= q.concurrency - coalesce(rq.n, 0))
      AND (q.rate IS NULL OR p.queue_rank <= floor(q.tokens))
    ORDER BY p.priority DESC, p.run_at, p.id
    LIMIT %(limit)s
), claimed AS (
    UPDATE {schema}.jobs AS j
    SET state = 'running', attempt = j.attempt + 1, claims = j.claims + 1,
        attempted_at = (SELECT now FROM clock), attempted_by = %(worker_id)s
    FROM picked
    WHERE j.id = picked.id AND j.state IN ('available', 'scheduled', 'retryable')
    RETURNING j.id, j.task, j.queue, j.args::text AS args, j.priority, j.attempt, j.max_attempts, j.claims,
              j.run_at, j.created_at,
              (j.expires_at IS NOT NULL AND j.expires_at <= (SELECT now FROM clock)) AS expired,
              j.traceparent, j.limit_key
), queue_tokens AS (
    UPDATE {schema}.queues AS p
    SET tokens = q.tokens - (SELECT count(*) FROM claimed WHERE claimed.queue = p.name),
        tokens_at = (SELECT now FROM clock)
    FROM q
    WHERE p.name = q.name AND q.rate IS NOT NULL
), task_tokens AS (
    UPDATE {schema}.task_limits AS t
    SET tokens = least(t.burst, coalesce(t.tokens, t.burst)
                 + t.rate * greatest(0, extract(epoch FROM k.now - coalesce(t.tokens_at, k.now)))) - c.n,
        tokens_at = k.now
    FROM (SELECT task, count(*) AS n FROM claimed GROUP BY task) AS c, clock AS k
    WHERE t.task = c.task AND t.rate IS NOT NULL
), key_tokens AS (
    -- A new bucket starts full; EXCLUDED.tokens carries the full bucket less the tokens taken.
    INSERT INTO {schema}.key_buckets AS b (task, key, tokens, tokens_at)
    SELECT c.task, c.limit_key, t.key_burst - c.n, k.now
    FROM (SELECT task, limit_key, count(*) AS n FROM claimed WHERE limit_key IS NOT NULL GROUP BY task, limit_key) AS c
    JOIN {schema}.task_limits AS t ON t.task = c.task AND t.key_rate IS NOT NULL
    CROSS JOIN clock AS k
    ON CONFLICT (task, key) DO UPDATE
    SET (tokens, tokens_at) = (
        SELECT least(t.key_burst, b.tokens + t.key_rate * greatest(0, extract(epoch FROM EXCLUDED.tokens_at - b.tokens_at)))
               - (t.key_burst - EXCLUDED.tokens),
               EXCLUDED.tokens_at
        FROM {schema}.task_limits AS t WHERE t.task = b.task)
), wake AS (
    SELECT min(due) AS wake_at FROM (
        SELECT k.now + make_interval(secs => (1 - q.tokens) / q.rate) AS due
        FROM q, clock AS k
        WHERE q.rate IS NOT NULL AND q.tokens < 1 AND EXISTS (SELECT 1 FROM candidates AS c WHERE c.queue = q.name)
        UNION ALL
        SELECT k.now + make_interval(secs => (1 - l.task_tokens) / l.task_rate)
        FROM limited AS l, clock AS k WHERE l.task_rate IS NOT NULL AND l.task_tokens < 1
        UNION ALL
        SELECT k.now + make_interval(secs => (1 - l.key_tokens) / l.key_rate)
        FROM limited AS l, clock AS k WHERE l.key_rate IS NOT NULL AND l.key_tokens < 1
    ) AS d
)
SELECT id, task, queue, args, priority, attempt, max_attempts, claims, run_at, created_at, expired, traceparent,
       NULL::float8 AS wake_in, false AS held
FROM claimed
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       extract(epoch FROM wake.wake_at - (SELECT now FROM clock))::float8, true
FROM wake
WHERE (SELECT count(*) FROM candidates) > (SELECT count(*) FROM claimed)

-- name: limits_queue_declare
-- A worker's start: write the limits its code declares for a queue (app.queue()). A queue whose
-- stored declaration is the same keeps the values it has (an operator may have changed them with
-- `pgtasks queues limit`); a new or changed declaration replaces them. Returns the row as it is
-- now and whether this changed it.
INSERT INTO {schema}.queues AS p (name, concurrency, rate, burst, declared, updated_at)
VALUES (%(name)s, %(concurrency)s, %(rate)s, %(burst)s, %(declared)s::jsonb, now())
ON CONFLICT (name) DO UPDATE
SET concurrency = EXCLUDED.concurrency, rate = EXCLUDED.rate, burst = EXCLUDED.burst,
    tokens = NULL, tokens_at = NULL, declared = EXCLUDED.declared, updated_at = now()
WHERE p.declared IS DISTINCT FROM EXCLUDED.declared
RETURNING p.name

-- name: limits_task_declare
-- A worker's start: write the limits its code declares for a task, and create its queue's row
-- (the lock a limited claim takes). Unchanged values keep their tokens.
WITH queue_row AS (
    INSERT INTO {schema}.queues (name) VALUES (%(queue)s) ON CONFLICT (name) DO NOTHING
)
INSERT INTO {schema}.task_limits AS t (task, queue, concurrency, rate, burst, key_name, key_concurrency,
                                       key_rate, key_burst)
VALUES (%(task)s, %(queue)s, %(concurrency)s, %(rate)s, %(burst)s, %(key_name)s, %(key_concurrency)s,
        %(key_rate)s, %(key_burst)s)
ON CONFLICT (task) DO UPDATE
SET queue = EXCLUDED.queue, concurrency = EXCLUDED.concurrency, rate = EXCLUDED.rate, burst = EXCLUDED.burst,
    key_name = EXCLUDED.key_name, key_concurrency = EXCLUDED.key_concurrency, key_rate = EXCLUDED.key_rate,
    key_burst = EXCLUDED.key_burst, updated_at = now(),
    tokens = CASE WHEN (t.rate, t.burst) IS NOT DISTINCT FROM (EXCLUDED.rate, EXCLUDED.burst) THEN t.tokens END,
    tokens_at = CASE WHEN (t.rate, t.burst) IS NOT DISTINCT FROM (EXCLUDED.rate, EXCLUDED.burst) THEN t.tokens_at END
WHERE (t.queue, t.concurrency, t.rate, t.burst, t.key_name, t.key_concurrency, t.key_rate, t.key_burst)
      IS DISTINCT FROM (EXCLUDED.queue, EXCLUDED.concurrency, EXCLUDED.rate, EXCLUDED.burst, EXCLUDED.key_name,
                        EXCLUDED.key_concurrency, EXCLUDED.key_rate, EXCLUDED.key_burst)
RETURNING t.task

-- name: limits_task_forget
-- A worker's start: the tasks it registers without limits lose the rows an earlier version wrote.
DELETE FROM {schema}.task_limits WHERE task = ANY(%(tasks)s::text[])
RETURNING task

-- name: limits_queue_set
-- `pgtasks queues limit NAME`: set a queue's limits while workers run; the next claim uses them.
-- NULL leaves a value as it is unless %(clear)s. The queue's bucket starts full again.
INSERT INTO {schema}.queues AS p (name, concurrency, rate, burst, updated_at)
VALUES (%(name)s, %(concurrency)s, %(rate)s, %(burst)s, now())
ON CONFLICT (name) DO UPDATE
SET concurrency = CASE WHEN %(clear)s THEN NULL ELSE coalesce(EXCLUDED.concurrency, p.concurrency) END,
    rate = CASE WHEN %(clear)s OR %(clear_rate)s THEN NULL ELSE coalesce(EXCLUDED.rate, p.rate) END,
    burst = CASE WHEN %(clear)s OR %(clear_rate)s THEN NULL ELSE coalesce(EXCLUDED.burst, p.burst) END,
    tokens = NULL, tokens_at = NULL, updated_at = now()
RETURNING p.name, p.concurrency, p.rate, p.burst

-- name: limits_list
-- Every limit, a queue's own (queues row) or a task's (task_limits row), with the jobs running
-- against it, those ready (due and not running: what a claim would look at) and how many of the
-- ready ones it holds back: those beyond its room, where room is what it would let start now,
-- the smaller of its free slots (concurrency - running) and the whole tokens in its bucket by
-- now. So a limit at its limit holds back every ready job, and one with 2 free slots holds back
-- all but 2. Each limit is counted on its own: a job two limits hold back counts under both.
-- A per-key limit is counted per key and summed (key_held), with the keys that hold any back
-- (keys_held); keys_running is how many keys have a job running. Jobs are read through
-- jobs_fetch_idx and jobs_running_by_idx, only those of queues a limit applies in.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
), limited AS (
    SELECT p.name AS queue FROM {schema}.queues AS p WHERE p.concurrency IS NOT NULL OR p.rate IS NOT NULL
    UNION
    SELECT t.queue FROM {schema}.task_limits AS t
), parts AS (
    -- Two arms, one per partial index, as in queue_stats.
    SELECT j.queue, j.task, j.limit_key, count(*) AS running, 0 AS ready
    FROM {schema}.jobs AS j
    WHERE j.state = 'running' AND j.queue IN (SELECT queue FROM limited)
    GROUP BY j.queue, j.task, j.limit_key
    UNION ALL
    SELECT j.queue, j.task, j.limit_key, 0, count(*)
    FROM {schema}.jobs AS j
    WHERE j.state IN ('available', 'scheduled', 'retryable') AND j.run_at <= (SELECT now FROM clock)
      AND j.queue IN (SELECT queue FROM limited)
    GROUP BY j.queue, j.task, j.limit_key
), counts AS (
    SELECT queue, task, limit_key, sum(running)::bigint AS running, sum(ready)::bigint AS ready
    FROM parts GROUP BY queue, task, limit_key
), per_key AS (
    -- least() skips NULLs: a key limited by one of the two is bounded by that one. A key without
    -- a key_buckets row has a full bucket.
    SELECT c.task, c.running,
           greatest(0, c.ready - least(
               CASE WHEN t.key_concurrency IS NOT NULL THEN greatest(0, t.key_concurrency - c.running) END,
               CASE WHEN t.key_rate IS NOT NULL THEN floor(least(t.key_burst, coalesce(
                   b.tokens + t.key_rate * greatest(0, extract(epoch FROM k.now - b.tokens_at)), t.key_burst))) END
           ))::bigint AS held
    FROM counts AS c
    JOIN {schema}.task_limits AS t ON t.task = c.task AND t.queue = c.queue
    CROSS JOIN clock AS k
    LEFT JOIN {schema}.key_buckets AS b ON b.task = c.task AND b.key = c.limit_key
    WHERE c.limit_key IS NOT NULL AND (t.key_concurrency IS NOT NULL OR t.key_rate IS NOT NULL)
), scopes AS (
    SELECT 'queue' AS kind, p.name AS name, p.name AS queue, p.concurrency, p.rate, p.burst,
           NULL::text AS key_name, NULL::int AS key_concurrency, NULL::float8 AS key_rate, NULL::int AS key_burst,
           CASE WHEN p.rate IS NOT NULL THEN least(p.burst, coalesce(p.tokens, p.burst)
                + p.rate * greatest(0, extract(epoch FROM k.now - coalesce(p.tokens_at, k.now)))) END AS tokens,
           coalesce(s.running, 0) AS running, coalesce(s.ready, 0) AS ready,
           NULL::bigint AS keys_running, NULL::bigint AS key_held, NULL::bigint AS keys_held
    FROM {schema}.queues AS p
    CROSS JOIN clock AS k
    LEFT JOIN (SELECT queue, sum(running) AS running, sum(ready) AS ready FROM counts GROUP BY queue) AS s
           ON s.queue = p.name
    WHERE p.concurrency IS NOT NULL OR p.rate IS NOT NULL
    UNION ALL
    SELECT 'task', t.task, t.queue, t.concurrency, t.rate, t.burst, t.key_name, t.key_concurrency, t.key_rate,
           t.key_burst,
           CASE WHEN t.rate IS NOT NULL THEN least(t.burst, coalesce(t.tokens, t.burst)
                + t.rate * greatest(0, extract(epoch FROM k.now - coalesce(t.tokens_at, k.now)))) END,
           coalesce(s.running, 0), coalesce(s.ready, 0), coalesce(s.keys_running, 0),
           CASE WHEN t.key_concurrency IS NOT NULL OR t.key_rate IS NOT NULL THEN coalesce(h.held, 0) END,
           CASE WHEN t.key_concurrency IS NOT NULL OR t.key_rate IS NOT NULL THEN coalesce(h.keys, 0) END
    FROM {schema}.task_limits AS t
    CROSS JOIN clock AS k
    LEFT JOIN (SELECT queue, task, sum(running) AS running, sum(ready) AS ready,
                      count(*) FILTER (WHERE limit_key IS NOT NULL AND running > 0) AS keys_running
               FROM counts GROUP BY queue, task) AS s ON s.queue = t.queue AND s.task = t.task
    LEFT JOIN (SELECT task, sum(held) AS held, count(*) FILTER (WHERE held > 0) AS keys
               FROM per_key GROUP BY task) AS h ON h.task = t.task
)
SELECT kind, name, queue, concurrency, rate, burst, key_name, key_concurrency, key_rate, key_burst, tokens,
       running::bigint AS running, ready::bigint AS ready,
       CASE WHEN concurrency IS NOT NULL OR rate IS NOT NULL
            THEN greatest(0, ready - least(CASE WHEN concurrency IS NOT NULL THEN greatest(0, concurrency - running) END,
                                           floor(tokens)))::bigint END AS held,
       keys_running::bigint AS keys_running, key_held::bigint AS key_held, keys_held::bigint AS keys_held
FROM scopes
ORDER BY kind, name

-- name: limits_limited_queues
-- Which of %(queues)s are limited (a limit of their own, or a task with one): a worker refreshes
-- this every poll interval and when told, to know whether to run the limited claim at all.
SELECT p.name FROM {schema}.queues AS p
WHERE p.name = ANY(%(queues)s::text[])
  AND (p.concurrency IS NOT NULL OR p.rate IS NOT NULL
       OR EXISTS (SELECT 1 FROM {schema}.task_limits AS t WHERE t.queue = p.name))
ORDER BY p.name
