-- name: JobInsertMany :many
-- Inserts many jobs in one statement with their first audit rows. A job whose id exists
-- already is skipped (the caller reads it back). Sequence numbers are drawn in input
-- order, so the rows come back in input order (skipped ones missing). Sentinels stand for "not given", since
-- array elements cannot be NULL here: '' job id, 0 timeout, -2 retention.
WITH input AS MATERIALIZED (
    SELECT nextval('queue.job_seq') AS seq, g.ord,
           (sqlc.arg(types)::text[])[g.ord] AS type,
           (sqlc.arg(data)::jsonb[])[g.ord] AS data,
           (sqlc.arg(priorities)::integer[])[g.ord] AS priority,
           (sqlc.arg(delays_ms)::bigint[])[g.ord] AS delay_ms,
           (sqlc.arg(max_attempts)::integer[])[g.ord] AS max_attempts,
           (sqlc.arg(job_ids)::text[])[g.ord] AS job_id,
           (sqlc.arg(backoff_types)::text[])[g.ord] AS backoff_type,
           (sqlc.arg(backoff_delays_ms)::integer[])[g.ord] AS backoff_delay_ms,
           (sqlc.arg(timeouts_ms)::integer[])[g.ord] AS timeout_ms,
           (sqlc.arg(remove_on_completes)::integer[])[g.ord] AS remove_on_complete,
           (sqlc.arg(remove_on_fails)::integer[])[g.ord] AS remove_on_fail
    FROM generate_series(1, cardinality(sqlc.arg(types)::text[])) AS g(ord)
),
inserted AS (
    INSERT INTO queue.jobs (seq, id, type, state, priority, data, max_attempts, backoff_type,
                            backoff_delay_ms, timeout_ms, remove_on_complete, remove_on_fail, run_at)
    SELECT i.seq, coalesce(nullif(i.job_id, ''), i.seq::text), i.type,
           CASE WHEN i.delay_ms > 0 THEN 'delayed' ELSE 'waiting' END,
           i.priority, i.data, i.max_attempts, i.backoff_type, i.backoff_delay_ms,
           nullif(i.timeout_ms, 0), nullif(i.remove_on_complete, -2), nullif(i.remove_on_fail, -2),
           now() + i.delay_ms * interval '1 millisecond'
    FROM input i
    ORDER BY i.ord
    ON CONFLICT (id) DO NOTHING
    RETURNING *
),
audit AS (
    INSERT INTO queue.job_events (job_id, type, state, attempt)
    SELECT id, type, state, 0 FROM inserted
),
wake AS (
    -- Only inside a caller's transaction; otherwise the client notifies after commit.
    SELECT pg_notify('queue_jobs', '')
    WHERE sqlc.arg(notify)::boolean AND EXISTS (SELECT 1 FROM inserted WHERE state = 'waiting')
)
SELECT * FROM inserted
WHERE (SELECT count(*) FROM wake) >= 0
ORDER BY seq;

-- name: JobGetManyByID :many
SELECT * FROM queue.jobs WHERE id = ANY(sqlc.arg(ids)::text[]);

-- name: JobGetByID :one
SELECT * FROM queue.jobs WHERE id = $1;

-- name: Enqueue :one
-- queue.enqueue from Go, for applications that use this package with their own pgx.Tx.
SELECT queue.enqueue(
    sqlc.arg(type)::text, sqlc.arg(data)::jsonb, sqlc.arg(priority)::integer,
    sqlc.arg(delay)::interval, sqlc.arg(attempts)::integer, sqlc.narg(job_id)::text,
    sqlc.arg(options)::jsonb
)::text AS id;

-- name: QueueNotify :exec
SELECT pg_notify('queue_jobs', '');

-- name: JobTypes :one
SELECT queue.job_types()::text[] AS types;
