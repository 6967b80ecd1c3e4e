-- Operations of the API on one job, on one queue or on everything.

-- name: QueueSetPaused :one
-- Pausing stops every claim of every queue at once (the claim reads this row); resuming
-- wakes the workers.
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

-- name: QueueSetPausedOne :one
-- Pauses or resumes one queue (its settings row is created on first use); resuming wakes
-- that queue's workers.
WITH changed AS (
    INSERT INTO queue.queues AS q (name, paused) VALUES (sqlc.arg(name)::text, sqlc.arg(paused)::boolean)
    ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = now()
    RETURNING q.name, q.paused
),
wake AS (
    SELECT pg_notify('queue_jobs', name) FROM changed WHERE NOT paused
)
SELECT name, paused FROM changed
WHERE (SELECT count(*) FROM wake) >= 0;

-- name: QueueSetLimits :one
-- Changes the limits of one queue (its settings row is created on first use). A field
-- whose set_ flag is false keeps its value; NULL clears a limit. What held the queue
-- back is forgotten (its next claim decides again), and every worker hears of the
-- change at once on queue_settings (else within its poll interval) and claims.
WITH changed AS (
    INSERT INTO queue.queues AS q (name, concurrency, rate_limit, rate_period_ms, group_concurrency,
                                   group_rate_limit, group_rate_period_ms, fair)
    VALUES (sqlc.arg(name)::text, sqlc.narg(concurrency)::integer, sqlc.narg(rate_limit)::integer,
            sqlc.narg(rate_period_ms)::integer, sqlc.narg(group_concurrency)::integer,
            sqlc.narg(group_rate_limit)::integer, sqlc.narg(group_rate_period_ms)::integer,
            coalesce(sqlc.narg(fair)::boolean, false))
    ON CONFLICT (name) DO UPDATE SET
        concurrency = CASE WHEN sqlc.arg(set_concurrency)::boolean THEN excluded.concurrency ELSE q.concurrency END,
        rate_limit = CASE WHEN sqlc.arg(set_rate)::boolean THEN excluded.rate_limit ELSE q.rate_limit END,
        rate_period_ms = CASE WHEN sqlc.arg(set_rate)::boolean THEN excluded.rate_period_ms ELSE q.rate_period_ms END,
        group_concurrency = CASE WHEN sqlc.arg(set_group_concurrency)::boolean
                                 THEN excluded.group_concurrency ELSE q.group_concurrency END,
        group_rate_limit = CASE WHEN sqlc.arg(set_group_rate)::boolean
                                THEN excluded.group_rate_limit ELSE q.group_rate_limit END,
        group_rate_period_ms = CASE WHEN sqlc.arg(set_group_rate)::boolean
                                    THEN excluded.group_rate_period_ms ELSE q.group_rate_period_ms END,
        fair = CASE WHEN sqlc.narg(fair)::boolean IS NOT NULL THEN excluded.fair ELSE q.fair END,
        held_by = NULL,
        held_since = NULL,
        next_start_at = NULL,
        updated_at = now()
    RETURNING q.*
),
wake AS (
    SELECT pg_notify('queue_settings', name) FROM changed
)
SELECT * FROM changed
WHERE (SELECT count(*) FROM wake) >= 0;

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
    INSERT INTO queue.job_events (job_id, type, queue, state, attempt, message)
    SELECT id, type, queue, 'cancelled', attempts_made, 'cancelled by request' FROM cancelled
),
signal AS (
    SELECT pg_notify('queue_cancel', seq::text) FROM cancelled WHERE lease_owner IS NOT NULL
)
SELECT * FROM cancelled
WHERE (SELECT count(*) FROM signal) >= 0;
