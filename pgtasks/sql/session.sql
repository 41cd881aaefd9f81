-- Queries about the connection itself: which backend serves it and LISTEN/NOTIFY. Pool-mode
-- detection (pgtasks.poolmode), the prepared-statements check (pgtasks.storage.prepared) and the
-- listener's canary (pgtasks.worker.notifier) use them.

-- name: backend_pid_get
-- The PID of the server process that runs this statement. Behind a transaction pooler it can
-- change from one transaction to the next, which is how transaction pooling is detected.
SELECT pg_backend_pid()

-- name: channel_listen
-- Start listening on a channel. {identifier} is filled in by the store with a quoted identifier
-- (LISTEN takes no bound parameters).
LISTEN {identifier}

-- name: channel_unlisten
-- Stop listening on a channel ({identifier} as for channel_listen).
UNLISTEN {identifier}

-- name: channel_notify
-- Send one notification; pg_notify() takes the channel as a value, so no identifier quoting.
SELECT pg_notify(%(channel)s, %(payload)s)
