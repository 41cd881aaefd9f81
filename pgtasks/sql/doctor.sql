-- name: doctor_server
-- Server version and connection use, for `pgtasks doctor`.
SELECT current_setting('server_version_num')::int AS version_num,
       current_setting('server_version') AS version,
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS reserved,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS used,
       pg_backend_pid() AS backend_pid

-- name: doctor_table_health
-- Live and dead tuples, the last (auto)vacuum and the per-table autovacuum settings of the jobs
-- table: a queue table churns rows, and vacuum falling behind slows every fetch.
SELECT s.n_live_tup AS live, s.n_dead_tup AS dead, s.last_autovacuum, s.last_vacuum,
       s.autovacuum_count, c.reloptions, current_setting('autovacuum') = 'on' AS autovacuum_on,
       current_setting('autovacuum_vacuum_scale_factor')::float8 AS scale_factor,
       current_setting('autovacuum_vacuum_threshold')::int AS threshold
FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid
WHERE s.schemaname = %(schema)s AND s.relname = 'jobs'

-- name: doctor_long_transactions
-- Transactions open longer than %(seconds)s seconds: they hold back vacuum on every table,
-- the jobs table included, so its dead rows pile up.
SELECT pid, application_name, state, extract(epoch FROM now() - xact_start)::float8 AS age_seconds,
       left(query, 120) AS query
FROM pg_stat_activity
WHERE xact_start < now() - make_interval(secs => %(seconds)s::float8)
  AND pid <> pg_backend_pid() AND backend_type = 'client backend'
ORDER BY xact_start

-- name: doctor_replication_slots
-- Replication slots, with how far back their xmin holds vacuum (in transactions).
SELECT slot_name, slot_type, active, age(xmin) AS xmin_age, age(catalog_xmin) AS catalog_xmin_age
FROM pg_replication_slots ORDER BY slot_name
