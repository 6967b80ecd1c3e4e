-- Operations of the API's admin routes: listing, retry, removal, clean, and the audit
-- trail's last word on a job that no longer exists.

-- name: JobList :many
-- Newest first by seq. The cursor is the seq of the last job of the previous page, so a
-- job inserted meanwhile (a higher seq) never shifts the pages that follow.
SELECT *
FROM queue.jobs
WHERE (sqlc.narg(state)::text IS NULL OR state = sqlc.narg(state)::text)
  AND (sqlc.narg(type)::text IS NULL OR type = sqlc.narg(type)::text)
  AND (sqlc.narg(queue)::text IS NULL OR queue = sqlc.narg(queue)::text)
  AND (sqlc.narg(group_key)::text IS NULL OR group_key = sqlc.narg(group_key)::text)
  AND (sqlc.narg(before_seq)::bigint IS NULL OR seq < sqlc.narg(before_seq)::bigint)
ORDER BY seq DESC
LIMIT sqlc.arg(max)::integer;

-- name: JobRetry :one
-- A failed job, or a cancelled one whose handler has returned (no lease), goes back to
-- waiting with a fresh set of attempts; the errors of earlier attempts are kept.
WITH retried AS (
    UPDATE queue.jobs
    SET state = 'waiting', attempts_made = 0, error = NULL, result = NULL, progress = 0,
        run_at = now(), started_at = NULL, finished_at = NULL
    WHERE id = sqlc.arg(id)::text
      AND state IN ('failed', 'cancelled')
      AND lease_owner IS NULL
    RETURNING *
),
audit AS (
    INSERT INTO queue.job_events (job_id, type, queue, state, attempt, message)
    SELECT id, type, queue, 'waiting', 0, 'retried by request' FROM retried
),
wake AS (
    SELECT pg_notify('queue_jobs', queue) FROM retried
)
SELECT * FROM retried
WHERE (SELECT count(*) FROM wake) >= 0;

-- name: JobRemove :one
-- Deletes a job unless a handler may still run it: active, or cancelled with its lease
-- held. A claim that locked the row first makes this statement re-check the new state.
-- The audit trail keeps the job's history (removal is not a state).
DELETE FROM queue.jobs
WHERE id = sqlc.arg(id)::text
  AND state <> 'active'
  AND NOT (state = 'cancelled' AND lease_owner IS NOT NULL)
RETURNING id;

-- name: JobCleanFinished :many
-- One bounded batch of clean: finished jobs of the given states that finished before
-- now - older_than, oldest first, skipping rows a worker holds and cancelled jobs whose
-- handler still runs. Returns the removed ids so cached results can be dropped.
WITH doomed AS MATERIALIZED (
    SELECT seq
    FROM queue.jobs
    WHERE state = ANY (sqlc.arg(states)::text[])
      -- Spelled out so that a generic plan still proves jobs_finished_idx's predicate.
      AND state IN ('completed', 'failed', 'cancelled')
      AND finished_at < coalesce(sqlc.narg(now)::timestamptz, now())
                        - sqlc.arg(older_than_ms)::bigint * interval '1 millisecond'
      AND lease_owner IS NULL
    ORDER BY state, finished_at, seq
    LIMIT sqlc.arg(max)::integer
    FOR UPDATE SKIP LOCKED
)
DELETE FROM queue.jobs j
USING doomed d
WHERE j.seq = d.seq
RETURNING j.id;

-- name: JobLastEvent :one
-- The newest audit row of a job id: how a job that retention removed ended.
SELECT state, at, attempt, message
FROM queue.job_events
WHERE job_id = sqlc.arg(job_id)::text
ORDER BY id DESC
LIMIT 1;
