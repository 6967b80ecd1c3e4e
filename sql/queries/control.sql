-- Operations of the API on one job or on the whole queue.

-- name: QueueSetPaused :one
-- Pausing stops every claim at once (the claim reads this row); resuming wakes workers.
WITH changed AS (
    UPDATE queue.queue_state
    SET paused = sqlc.arg(paused)::boolean, updated_at = now()
    RETURNING paused
),
wake AS (
    SELECT pg_notify('queue_jobs', '') FROM changed WHERE NOT paused
)
SELECT paused FROM changed
WHERE (SELECT count(*) FROM wake) >= 0;

-- name: QueuePaused :one
SELECT paused FROM queue.queue_state;

-- name: JobCancel :one
-- Cancels a waiting, delayed or active job. An active job keeps its lease until its
-- handler returns; its worker learns of the cancel through queue_cancel (and, should the
-- notification be lost, through its next heartbeat).
WITH cancelled AS (
    UPDATE queue.jobs
    SET state = 'cancelled', finished_at = now()
    WHERE id = sqlc.arg(id)::text AND state IN ('waiting', 'delayed', 'active')
    RETURNING *
),
audit AS (
    INSERT INTO queue.job_events (job_id, type, state, attempt, message)
    SELECT id, type, 'cancelled', attempts_made, 'cancelled by request' FROM cancelled
),
signal AS (
    SELECT pg_notify('queue_cancel', seq::text) FROM cancelled WHERE lease_owner IS NOT NULL
)
SELECT * FROM cancelled
WHERE (SELECT count(*) FROM signal) >= 0;
