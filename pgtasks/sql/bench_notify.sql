-- name: bench_notify_final_disable
-- Turn the completion NOTIFY trigger off in a throwaway benchmark schema (benchmarks/completion_notify.py).
ALTER TABLE {schema}.jobs DISABLE TRIGGER jobs_notify_final

-- name: bench_notify_final_enable
-- Turn it back on.
ALTER TABLE {schema}.jobs ENABLE TRIGGER jobs_notify_final

-- name: bench_workflow_triggers_disable
-- Turn the two workflow triggers (migration 0005) off, to measure what their WHEN checks cost a
-- plain job's claim and outcome write (benchmarks/completion_notify.py --trigger workflow).
ALTER TABLE {schema}.jobs DISABLE TRIGGER jobs_workflow_advance, DISABLE TRIGGER jobs_workflow_fail

-- name: bench_workflow_triggers_enable
ALTER TABLE {schema}.jobs ENABLE TRIGGER jobs_workflow_advance, ENABLE TRIGGER jobs_workflow_fail
