-- name: bench_notify_final_disable
-- Turn the completion NOTIFY trigger off in a throwaway benchmark schema (benchmarks/completion_notify.py).
ALTER TABLE {schema}.jobs DISABLE TRIGGER jobs_notify_final

-- name: bench_notify_final_enable
-- Turn it back on.
ALTER TABLE {schema}.jobs ENABLE TRIGGER jobs_notify_final
