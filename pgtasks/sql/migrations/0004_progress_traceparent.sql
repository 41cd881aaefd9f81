-- Progress reported from inside a task, and the W3C trace context of the enqueue that created a job.
-- Placeholders: the schema name is substituted by pgtasks.queries.render().

-- The latest current_job().set_progress() of the job's latest attempt that reported any, as
-- {"done", "total", "message", "meta", "attempt", "at"}; NULL until a task reports. Kept when the
-- job ends, so `pgtasks jobs show` says how far a failed or finished attempt got. Written by the
-- worker at most a few times a second (pgtasks/worker/progress.py), never by the fetch or the
-- outcome statements, and not part of any index or of the final-state trigger's column list.
ALTER TABLE {schema}.jobs ADD COLUMN progress jsonb;

-- A W3C traceparent ("00-<trace id>-<span id>-<flags>") of the producer span that enqueued the
-- job, written by pgtasks.otel at enqueue; the worker's consumer span links to it. NULL when
-- tracing is off.
ALTER TABLE {schema}.jobs ADD COLUMN traceparent text;
