-- name: leader_attempt_elect
-- Become leader if nobody holds an unexpired lease. Taking over bumps `term`, so everything a
-- previous leader does later (renew, resign) is scoped to a term that is no longer current.
-- ON CONFLICT re-checks the WHERE against the latest row version after locking it, so two
-- followers racing for an expired lease cannot both win.
INSERT INTO {schema}.leader AS l (singleton, leader_id, term, elected_at, expires_at)
VALUES (true, %(leader_id)s, 1, coalesce(%(now)s::timestamptz, now()),
        coalesce(%(now)s::timestamptz, now()) + make_interval(secs => %(ttl)s::float8))
ON CONFLICT (singleton) DO UPDATE
SET leader_id = excluded.leader_id, term = l.term + 1, elected_at = excluded.elected_at,
    expires_at = excluded.expires_at
WHERE l.expires_at <= excluded.elected_at
RETURNING l.leader_id, l.term, l.elected_at, l.expires_at

-- name: leader_attempt_reelect
-- Renew our own lease. Scoped to (leader_id, term): once another process has been elected the
-- term has moved on, and a stale leader's renewal changes nothing.
UPDATE {schema}.leader
SET expires_at = coalesce(%(now)s::timestamptz, now()) + make_interval(secs => %(ttl)s::float8)
WHERE leader_id = %(leader_id)s AND term = %(term)s
RETURNING leader_id, term, elected_at, expires_at

-- name: leader_resign
-- Give the lease up (graceful shutdown) and tell followers on the leader channel, in the same
-- statement, so one of them is elected at once instead of after the TTL. Scoped to the term; with
-- a NULL term, to any unexpired lease of this leader_id: an election whose reply was lost (its
-- task cancelled by the shutdown, or its connection cut) may have made this process leader
-- without its knowing. leader_id is unique per process, so no other process's lease matches.
WITH resigned AS (
    UPDATE {schema}.leader
    SET expires_at = coalesce(%(now)s::timestamptz, now())
    WHERE leader_id = %(leader_id)s
      AND (term = %(term)s::bigint
           OR (%(term)s::bigint IS NULL AND expires_at > coalesce(%(now)s::timestamptz, now())))
    RETURNING term
)
SELECT term, pg_notify(%(channel)s, 'resigned ' || term::text) FROM resigned

-- name: leader_get
-- The lease row as the database sees it now (for `pgtasks leader` and tests).
SELECT leader_id, term, elected_at, expires_at,
       expires_at > coalesce(%(now)s::timestamptz, now()) AS active,
       coalesce(%(now)s::timestamptz, now()) AS db_now
FROM {schema}.leader
