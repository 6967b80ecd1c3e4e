-- name: JobCountByStateAndType :many
SELECT state, type, count(*)::bigint AS jobs
FROM queue.jobs
GROUP BY state, type;
