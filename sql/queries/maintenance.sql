-- Background passes, run by one leader worker at a time, each in bounded batches.

-- name: MaintenanceTryLead :one
SELECT pg_try_advisory_lock(sqlc.arg(key)::bigint) AS leader;

-- name: MaintenanceUnlock :exec
SELECT pg_advisory_unlock(sqlc.arg(key)::bigint);

-- name: JobRescueExpired :many
-- Jobs whose lease expired (their worker stopped heartbeating) go back to waiting, or
-- fail when no attempt is left; a cancelled one just loses the lease.
WITH expired AS MATERIALIZED (
    SELECT seq
    FROM queue.jobs
    WHERE lease_owner IS NOT NULL
      AND lease_expires_at < coalesce(sqlc.narg(now)::timestamptz, now())
    ORDER BY seq
    LIMIT sqlc.arg(max)::integer
    FOR UPDATE SKIP LOCKED
),
rescued AS (
    UPDATE queue.jobs j
    SET state = CASE WHEN j.state = 'cancelled' THEN 'cancelled'
                     WHEN j.attempts_made >= j.max_attempts THEN 'failed'
                     ELSE 'waiting' END,
        error = CASE WHEN j.state = 'cancelled' THEN j.error
                     ELSE 'lease expired: worker ' || j.lease_owner || ' stopped heartbeating' END,
        errors = CASE WHEN j.state = 'cancelled' THEN j.errors
                      ELSE j.errors || jsonb_build_array(jsonb_build_object(
                          'attempt', j.attempts_made,
                          'message', 'lease expired: worker ' || j.lease_owner || ' stopped heartbeating',
                          'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))) END,
        finished_at = CASE WHEN j.state = 'active' AND j.attempts_made >= j.max_attempts THEN now()
                           ELSE j.finished_at END,
        remove_on_fail = CASE WHEN j.state = 'active' AND j.attempts_made >= j.max_attempts
                              THEN coalesce(j.remove_on_fail, sqlc.arg(default_remove_on_fail)::integer)
                              ELSE j.remove_on_fail END,
        lease_owner = NULL,
        lease_expires_at = NULL
    FROM expired e
    WHERE j.seq = e.seq
    RETURNING j.*
),
audit AS (
    INSERT INTO queue.job_events (job_id, type, state, attempt, message, worker)
    SELECT id, type, state, attempts_made, error, sqlc.arg(worker)::text FROM rescued WHERE state <> 'cancelled'
),
wake AS (
    SELECT pg_notify('queue_jobs', '') WHERE EXISTS (SELECT 1 FROM rescued WHERE state = 'waiting')
)
SELECT * FROM rescued
WHERE (SELECT count(*) FROM wake) >= 0;

-- name: JobPromoteDue :many
-- Delayed jobs (future run time or retry backoff) whose time has come become waiting.
WITH due AS MATERIALIZED (
    SELECT seq
    FROM queue.jobs
    WHERE state = 'delayed' AND run_at <= coalesce(sqlc.narg(now)::timestamptz, now())
    ORDER BY run_at
    LIMIT sqlc.arg(max)::integer
    FOR UPDATE SKIP LOCKED
),
promoted AS (
    UPDATE queue.jobs j
    SET state = 'waiting'
    FROM due
    WHERE j.seq = due.seq
    RETURNING j.seq, j.id, j.type, j.attempts_made
),
audit AS (
    INSERT INTO queue.job_events (job_id, type, state, attempt, worker)
    SELECT id, type, 'waiting', attempts_made, sqlc.arg(worker)::text FROM promoted
),
wake AS (
    SELECT pg_notify('queue_jobs', '') WHERE EXISTS (SELECT 1 FROM promoted)
)
SELECT id, type FROM promoted
WHERE (SELECT count(*) FROM wake) >= 0;

-- name: JobTrimFinished :one
-- Retention of finished jobs of one state, oldest first from a cursor the leader keeps:
-- removes those whose retention is 0 (remove at once: cancelled jobs, jobs finished by a
-- rescue) and those with N newer finished jobs of the same state (keep the N most
-- recent). A NULL retention takes the defaults; a cancelled job whose handler still runs
-- waits. It returns where this batch ended, the oldest row it kept that may go later
-- (the next pass starts there), and the database clock.
WITH candidates AS MATERIALIZED (
    SELECT j.seq, j.finished_at, r.keep, j.lease_owner IS NULL AS idle
    FROM queue.jobs j
    CROSS JOIN LATERAL (
        SELECT CASE WHEN j.state = 'completed'
                    THEN coalesce(j.remove_on_complete, sqlc.arg(default_remove_on_complete)::integer)
                    ELSE coalesce(j.remove_on_fail, sqlc.arg(default_remove_on_fail)::integer) END AS keep
    ) r
    WHERE j.state = sqlc.arg(state)::text
      -- Spelled out so that a generic plan (state is a parameter) still proves
      -- jobs_finished_idx's predicate and walks it.
      AND j.state IN ('completed', 'failed', 'cancelled')
      AND (j.finished_at, j.seq) > (sqlc.arg(after_finished_at)::timestamptz, sqlc.arg(after_seq)::bigint)
    ORDER BY j.finished_at, j.seq
    LIMIT sqlc.arg(max)::integer
),
bounds AS MATERIALIZED (
    -- For each keep value N in the batch, the N-th most recent finished row of the state:
    -- a row with that value goes when it is older. One short index walk per value.
    SELECT k.keep, b.finished_at, b.seq
    FROM (SELECT DISTINCT keep FROM candidates WHERE keep > 0) k
    CROSS JOIN LATERAL (
        SELECT n.finished_at, n.seq
        FROM queue.jobs n
        WHERE n.state = sqlc.arg(state)::text AND n.state IN ('completed', 'failed', 'cancelled')
        ORDER BY n.finished_at DESC, n.seq DESC
        OFFSET k.keep - 1 LIMIT 1
    ) b
),
judged AS MATERIALIZED (
    SELECT c.seq, c.finished_at, c.keep,
           c.idle AND (c.keep = 0 OR EXISTS (
               SELECT 1 FROM bounds b
               WHERE b.keep = c.keep AND (c.finished_at, c.seq) < (b.finished_at, b.seq))) AS doomed
    FROM candidates c
),
removed AS (
    -- Candidates are not locked (most are kept, and locking writes every one of them);
    -- the delete checks again that the row is still finished and idle.
    -- = ANY(array) walks the primary key; a join here tends to hash the whole table.
    DELETE FROM queue.jobs j
    WHERE j.seq = ANY (ARRAY(SELECT seq FROM judged WHERE doomed))
      AND j.state = sqlc.arg(state)::text AND j.lease_owner IS NULL
    RETURNING j.seq
),
last AS (
    SELECT finished_at, seq FROM candidates ORDER BY finished_at DESC, seq DESC LIMIT 1
),
kept AS (
    -- keep = -1 rows never go; every other kept row may, once newer ones arrive
    SELECT finished_at, seq FROM judged WHERE NOT doomed AND keep <> -1 ORDER BY finished_at, seq LIMIT 1
)
-- The epoch and seq 0 stand for "none".
SELECT (SELECT count(*) FROM removed)::bigint AS removed,
       (SELECT count(*) FROM candidates)::bigint AS examined,
       coalesce((SELECT finished_at FROM last), 'epoch')::timestamptz AS last_finished_at,
       coalesce((SELECT seq FROM last), 0)::bigint AS last_seq,
       coalesce((SELECT finished_at FROM kept), 'epoch')::timestamptz AS kept_finished_at,
       coalesce((SELECT seq FROM kept), 0)::bigint AS kept_seq,
       now()::timestamptz AS db_now;

-- name: JobEventsTrim :execrows
-- Audit rows older than the retention, oldest first, in bounded batches.
DELETE FROM queue.job_events
WHERE id IN (
    SELECT id FROM queue.job_events
    WHERE at < now() - sqlc.arg(retention_ms)::bigint * interval '1 millisecond'
    LIMIT sqlc.arg(max)::integer
);
