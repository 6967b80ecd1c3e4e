-- name: JobCountByStateAndType :many
-- Exact counts from the deltas that triggers append (migration 00004), not a table scan.
SELECT state, type, sum(n)::bigint AS jobs
FROM queue.job_counts
GROUP BY state, type
HAVING sum(n) <> 0;

-- name: JobCountsCompact :exec
-- Folds the appended deltas into one row per (state, type), so stats stay a tiny sum.
WITH folded AS (
    DELETE FROM queue.job_counts RETURNING state, type, n
)
INSERT INTO queue.job_counts (state, type, n)
SELECT state, type, sum(n) FROM folded GROUP BY state, type HAVING sum(n) <> 0;
