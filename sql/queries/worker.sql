-- name: JobClaim :many
-- Claims up to max runnable jobs for a worker, in the exact order of jobs_claim_idx,
-- unless the queue is paused. The CTE is a fence: the UPDATE touches only the rows the
-- LIMIT picked. The claim commits without waiting for its WAL flush: a claim lost in a
-- crash only leaves the job waiting, to be claimed again (DESIGN.md).
WITH async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true)
),
picked AS MATERIALIZED (
    SELECT seq
    FROM queue.jobs
    WHERE state = 'waiting'
      AND type = ANY (sqlc.arg(types)::text[])
      AND NOT (SELECT paused FROM queue.queue_state)
    ORDER BY priority DESC, run_at, seq
    LIMIT sqlc.arg(max)::integer
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE queue.jobs j
    SET state = 'active',
        attempts_made = j.attempts_made + 1,
        progress = 0,
        started_at = now(),
        lease_owner = sqlc.arg(worker)::text,
        lease_expires_at = now() + sqlc.arg(lease_ms)::bigint * interval '1 millisecond'
    FROM picked
    WHERE j.seq = picked.seq
    RETURNING j.*
),
audit AS (
    INSERT INTO queue.job_events (job_id, type, state, attempt, worker)
    SELECT id, type, 'active', attempts_made, sqlc.arg(worker)::text FROM claimed
)
SELECT * FROM claimed
WHERE (SELECT count(*) FROM async_commit) >= 0
ORDER BY priority DESC, run_at, seq;

-- name: JobFinishMany :many
-- Records the outcome of many attempts in one statement: completion (ok), retry
-- (retry_ms >= 0: delayed, or waiting when 0) or final failure (retry_ms < 0). Each row
-- is guarded by the state, owner and attempt it expects, so a job that was rescued,
-- cancelled or handed back meanwhile is left alone. A job whose retention is "remove at
-- once" is deleted here instead of updated; a cancelled job whose handler returned only
-- gives up its lease. Returns the jobs that changed, with their new state.
WITH input AS MATERIALIZED (
    -- unnest walks each array once; subscripting varlena arrays row by row is quadratic.
    SELECT unnest(sqlc.arg(seqs)::bigint[]) AS seq,
           unnest(sqlc.arg(attempts)::integer[]) AS attempt,
           unnest(sqlc.arg(ok)::boolean[]) AS ok,
           unnest(sqlc.arg(results)::jsonb[]) AS result,
           unnest(sqlc.arg(messages)::text[]) AS message,
           unnest(sqlc.arg(retry_ms)::bigint[]) AS retry_ms
),
removed AS (
    DELETE FROM queue.jobs j
    USING input d
    WHERE j.seq = d.seq AND j.state = 'active' AND j.lease_owner = sqlc.arg(worker)::text
      AND j.attempts_made = d.attempt
      AND ((d.ok AND coalesce(j.remove_on_complete, sqlc.arg(default_remove_on_complete)::integer) = 0)
        OR (NOT d.ok AND d.retry_ms < 0 AND coalesce(j.remove_on_fail, sqlc.arg(default_remove_on_fail)::integer) = 0))
    RETURNING j.seq, j.id, j.type, j.attempts_made,
              CASE WHEN d.ok THEN 'completed' ELSE 'failed' END AS state,
              CASE WHEN d.ok THEN NULL ELSE d.message END AS message
),
updated AS (
    UPDATE queue.jobs j
    SET state = CASE WHEN d.ok THEN 'completed'
                     WHEN d.retry_ms < 0 THEN 'failed'
                     WHEN d.retry_ms = 0 THEN 'waiting'
                     ELSE 'delayed' END,
        result = CASE WHEN d.ok THEN d.result ELSE j.result END,
        progress = CASE WHEN d.ok THEN 100 ELSE j.progress END,
        finished_at = CASE WHEN d.ok OR d.retry_ms < 0 THEN now() END,
        run_at = CASE WHEN NOT d.ok AND d.retry_ms >= 0
                      THEN now() + d.retry_ms * interval '1 millisecond' ELSE j.run_at END,
        error = CASE WHEN d.ok THEN j.error ELSE d.message END,
        errors = CASE WHEN d.ok THEN j.errors
                      ELSE j.errors || jsonb_build_array(jsonb_build_object(
                          'attempt', j.attempts_made, 'message', d.message,
                          'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))) END,
        remove_on_complete = CASE WHEN d.ok
                                  THEN coalesce(j.remove_on_complete, sqlc.arg(default_remove_on_complete)::integer)
                                  ELSE j.remove_on_complete END,
        remove_on_fail = CASE WHEN NOT d.ok AND d.retry_ms < 0
                              THEN coalesce(j.remove_on_fail, sqlc.arg(default_remove_on_fail)::integer)
                              ELSE j.remove_on_fail END,
        lease_owner = NULL,
        lease_expires_at = NULL
    FROM input d
    WHERE j.seq = d.seq AND j.state = 'active' AND j.lease_owner = sqlc.arg(worker)::text
      AND j.attempts_made = d.attempt
      AND NOT ((d.ok AND coalesce(j.remove_on_complete, sqlc.arg(default_remove_on_complete)::integer) = 0)
            OR (NOT d.ok AND d.retry_ms < 0 AND coalesce(j.remove_on_fail, sqlc.arg(default_remove_on_fail)::integer) = 0))
    RETURNING j.seq, j.id, j.type, j.attempts_made, j.state,
              CASE WHEN d.ok THEN NULL ELSE d.message END AS message
),
released AS (
    -- Only the rows neither branch above took, by key: usually none, so no probe at all
    -- (a join on state = 'cancelled' would walk every retained cancelled job).
    UPDATE queue.jobs j
    SET lease_owner = NULL, lease_expires_at = NULL
    WHERE j.seq = ANY (ARRAY(SELECT seq FROM input
                             EXCEPT ALL SELECT seq FROM removed
                             EXCEPT ALL SELECT seq FROM updated))
      AND j.state = 'cancelled' AND j.lease_owner = sqlc.arg(worker)::text
    RETURNING j.seq, j.state
),
audit AS (
    INSERT INTO queue.job_events (job_id, type, state, attempt, message, worker)
    SELECT id, type, state, attempts_made, message, sqlc.arg(worker)::text FROM removed
    UNION ALL
    SELECT id, type, state, attempts_made, message, sqlc.arg(worker)::text FROM updated
),
wake AS (
    SELECT pg_notify('queue_jobs', '') WHERE EXISTS (SELECT 1 FROM updated WHERE state = 'waiting')
)
SELECT seq, state::text AS state FROM removed
UNION ALL
SELECT seq, state FROM updated
UNION ALL
SELECT seq, state FROM released
WHERE (SELECT count(*) FROM wake) >= 0;

-- name: JobHeartbeat :many
-- Extends the lease of the jobs a worker runs. Returns those it still owns with their
-- state: a job missing was rescued away; a cancelled one must stop. A heartbeat lost in a
-- crash costs nothing, so it does not wait for its WAL flush.
WITH async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true)
),
beat AS (
    -- SKIP LOCKED: a row being finished (or cancelled) right now is not waited for, so a
    -- heartbeat never deadlocks with a finish; the worker looks such rows up afterwards.
    UPDATE queue.jobs j
    SET lease_expires_at = now() + sqlc.arg(lease_ms)::bigint * interval '1 millisecond'
    FROM (SELECT seq FROM queue.jobs
          WHERE seq = ANY (sqlc.arg(seqs)::bigint[]) AND lease_owner = sqlc.arg(worker)::text
          ORDER BY seq
          FOR UPDATE SKIP LOCKED) mine
    WHERE j.seq = mine.seq
    RETURNING j.seq, j.state
)
SELECT seq, state FROM beat
WHERE (SELECT count(*) FROM async_commit) >= 0;

-- name: JobSetProgress :exec
-- Writes the latest progress of running jobs (coalesced by the worker); like a
-- heartbeat, it need not wait for its WAL flush.
WITH async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true)
)
UPDATE queue.jobs j
SET progress = p.progress
FROM (SELECT unnest(sqlc.arg(seqs)::bigint[]) AS seq, unnest(sqlc.arg(progress)::integer[]) AS progress) p
WHERE j.seq = p.seq
  -- a row being finished is skipped (its progress no longer matters), never waited for
  AND j.seq IN (SELECT seq FROM queue.jobs
                WHERE seq = ANY (sqlc.arg(seqs)::bigint[]) AND state = 'active'
                  AND lease_owner = sqlc.arg(worker)::text
                FOR UPDATE SKIP LOCKED)
  AND (SELECT count(*) FROM async_commit) >= 0;

-- name: JobHandBack :many
-- At shutdown: jobs whose handlers did not finish in time go back to waiting and get
-- their attempt back; cancelled ones just give up the lease.
WITH back AS (
    UPDATE queue.jobs
    SET state = 'waiting', attempts_made = attempts_made - 1, lease_owner = NULL, lease_expires_at = NULL
    WHERE seq = ANY (sqlc.arg(seqs)::bigint[]) AND lease_owner = sqlc.arg(worker)::text AND state = 'active'
    RETURNING seq, id, type, attempts_made
),
released AS (
    UPDATE queue.jobs
    SET lease_owner = NULL, lease_expires_at = NULL
    WHERE seq = ANY (sqlc.arg(seqs)::bigint[]) AND lease_owner = sqlc.arg(worker)::text AND state = 'cancelled'
    RETURNING id, type
),
audit AS (
    INSERT INTO queue.job_events (job_id, type, state, attempt, message, worker)
    SELECT id, type, 'waiting', attempts_made, 'handed back at worker shutdown', sqlc.arg(worker)::text FROM back
),
wake AS (
    SELECT pg_notify('queue_jobs', '') WHERE EXISTS (SELECT 1 FROM back)
)
SELECT id, type, 'waiting'::text AS state FROM back
UNION ALL
SELECT id, type, 'cancelled'::text FROM released
WHERE (SELECT count(*) FROM wake) >= 0;

-- name: JobLeaseState :many
-- Who holds the given jobs now, without locking: for rows a heartbeat skipped.
SELECT seq, state, lease_owner FROM queue.jobs WHERE seq = ANY (sqlc.arg(seqs)::bigint[]);
