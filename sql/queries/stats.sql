-- name: JobCounts :many
-- Exact counts by queue, state and type from the deltas that triggers append to
-- queue.job_counts, not a table scan.
SELECT queue, state, type, sum(n)::bigint AS jobs
FROM queue.job_counts
GROUP BY queue, state, type
HAVING sum(n) <> 0;

-- name: JobCountsCompact :exec
-- Folds the appended deltas into one row per (queue, state, type, grouped), so stats
-- stay a tiny sum.
WITH folded AS (
    DELETE FROM queue.job_counts RETURNING queue, state, type, grouped, n
)
INSERT INTO queue.job_counts (queue, state, type, grouped, n)
SELECT queue, state, type, grouped, sum(n) FROM folded GROUP BY queue, state, type, grouped HAVING sum(n) <> 0;

-- name: QueueSettings :many
-- Every queue that has a settings row.
SELECT * FROM queue.queues ORDER BY name;

-- name: WorkerList :many
-- Live workers (seen within their last three heartbeats), oldest first.
SELECT id, host, pid, queues, types, running, started_at, last_seen_at
FROM queue.workers
WHERE expires_at > now()
ORDER BY started_at, id;
