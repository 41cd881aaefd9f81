-- name: worker_heartbeat
-- Record that this worker process is alive and which jobs it holds; the row is created by the
-- first heartbeat. The rescuer reads last_seen_at and running.
INSERT INTO {schema}.workers AS w (worker_id, hostname, pid, queues, concurrency, running, started_at, last_seen_at)
VALUES (%(worker_id)s, %(hostname)s, %(pid)s, %(queues)s::text[], %(concurrency)s, %(running)s::bigint[],
        coalesce(%(now)s::timestamptz, now()), coalesce(%(now)s::timestamptz, now()))
ON CONFLICT (worker_id) DO UPDATE
SET running = excluded.running, queues = excluded.queues, concurrency = excluded.concurrency,
    last_seen_at = excluded.last_seen_at

-- name: worker_delete
-- A graceful stop: the worker is gone on purpose, so it is not waited for as a silent one.
DELETE FROM {schema}.workers WHERE worker_id = %(worker_id)s

-- name: worker_list
-- Every worker row, newest first, with how long ago it was seen (for status commands and tests).
SELECT worker_id, hostname, pid, queues, concurrency, running, started_at, last_seen_at,
       extract(epoch FROM coalesce(%(now)s::timestamptz, now()) - last_seen_at)::float8 AS seen_ago_s
FROM {schema}.workers
ORDER BY started_at DESC, worker_id
