-- name: worker_heartbeat
-- Record that this worker process is alive and which jobs it holds; the row is created by the
-- first heartbeat. The rescuer reads last_seen_at and running. `supervisor` ("host:pid" of a
-- `--processes N` supervisor, or NULL) does not change over a worker's life: written once; nor
-- do `tasks`, the tasks it registered (it claims only their jobs; `pgtasks doctor` reads them).
INSERT INTO {schema}.workers AS w (worker_id, hostname, pid, queues, concurrency, running, started_at, last_seen_at,
                                   supervisor, tasks)
VALUES (%(worker_id)s, %(hostname)s, %(pid)s, %(queues)s::text[], %(concurrency)s, %(running)s::bigint[],
        coalesce(%(now)s::timestamptz, now()), coalesce(%(now)s::timestamptz, now()), %(supervisor)s,
        %(tasks)s::text[])
ON CONFLICT (worker_id) DO UPDATE
SET running = excluded.running, queues = excluded.queues, concurrency = excluded.concurrency,
    last_seen_at = excluded.last_seen_at

-- name: worker_delete
-- A graceful stop: the worker is gone on purpose, so it is not waited for as a silent one.
DELETE FROM {schema}.workers WHERE worker_id = %(worker_id)s

-- name: worker_list
-- Every worker row, newest first, with how long ago it was seen (for status commands and tests).
SELECT worker_id, hostname, pid, queues, concurrency, running, started_at, last_seen_at,
       extract(epoch FROM coalesce(%(now)s::timestamptz, now()) - last_seen_at)::float8 AS seen_ago_s, supervisor
FROM {schema}.workers
ORDER BY started_at DESC, worker_id

-- name: worker_status
-- `pgtasks workers`: each worker seen within %(silent_after)s seconds (every row with %(all)s), the
-- jobs it holds now with their task, and whether it holds the leader lease. The jobs come from the
-- jobs table (jobs_running_by_idx), not from the heartbeat's `running` list, which is up to one
-- heartbeat interval old and would still show a job that finished since. The children of one
-- supervisor come out next to each other, in start order.
WITH now AS (SELECT coalesce(%(now)s::timestamptz, now()) AS t)
SELECT w.worker_id, w.hostname, w.pid, w.supervisor, w.queues, w.concurrency, w.started_at, w.last_seen_at,
       extract(epoch FROM now.t - w.started_at)::float8 AS uptime_s,
       extract(epoch FROM now.t - w.last_seen_at)::float8 AS seen_ago_s,
       coalesce(l.leader_id = w.worker_id AND l.expires_at > now.t, false) AS leader,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                            'id', j.id, 'task', j.task, 'queue', j.queue, 'attempt', j.attempt,
                            'running_s', extract(epoch FROM now.t - j.attempted_at)::float8) ORDER BY j.id)
                 FROM {schema}.jobs j WHERE j.state = 'running' AND j.attempted_by = w.worker_id),
                '[]'::jsonb) AS running
FROM {schema}.workers w CROSS JOIN now LEFT JOIN {schema}.leader l ON true
WHERE %(all)s OR w.last_seen_at > now.t - make_interval(secs => %(silent_after)s)
ORDER BY w.hostname, w.supervisor NULLS FIRST, w.started_at, w.worker_id
