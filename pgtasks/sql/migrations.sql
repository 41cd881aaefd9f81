-- name: migration_lock
-- Serialise concurrent `pgtasks migrate` runs; transaction-scoped so it is safe behind PgBouncer.
SELECT pg_advisory_xact_lock(hashtext('pgtasks.migrate:' || %(schema)s))

-- name: migration_ensure_schema
CREATE SCHEMA IF NOT EXISTS {schema}

-- name: migration_ensure_table
CREATE TABLE IF NOT EXISTS {schema}.migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: migration_list_applied
-- Applied versions, or nothing when the schema has never been migrated.
SELECT version, name, applied_at FROM {schema}.migrations ORDER BY version

-- name: migration_record
INSERT INTO {schema}.migrations (version, name) VALUES (%(version)s, %(name)s)

-- name: migration_current_version
-- The newest applied version; errors with undefined_table when the schema was never migrated.
SELECT coalesce(max(version), 0) AS version FROM {schema}.migrations
