-- name: JobInsertMany :many
-- Inserts many jobs in one statement with their first audit rows. A job whose id exists
-- already is skipped (the caller reads it back). Sequence numbers are drawn in input
-- order, so the rows come back in input order (skipped ones missing). Sentinels stand for
-- "not given", since array elements cannot be NULL here: an empty job id, 0 timeout, -2 retention.
WITH input AS MATERIALIZED (
    -- unnest walks each array once; subscripting text arrays row by row is quadratic.
    SELECT nextval('queue.job_seq') AS seq, u.*
    FROM (
        SELECT unnest(sqlc.arg(types)::text[]) AS type,
               unnest(sqlc.arg(queues)::text[]) AS queue,
               unnest(sqlc.arg(groups)::text[]) AS group_key,
               unnest(sqlc.arg(data)::jsonb[]) AS data,
               unnest(sqlc.arg(priorities)::integer[]) AS priority,
               unnest(sqlc.arg(delays_ms)::bigint[]) AS delay_ms,
               unnest(sqlc.arg(max_attempts)::integer[]) AS max_attempts,
               unnest(sqlc.arg(job_ids)::text[]) AS job_id,
               unnest(sqlc.arg(backoff_types)::text[]) AS backoff_type,
               unnest(sqlc.arg(backoff_delays_ms)::integer[]) AS backoff_delay_ms,
               unnest(sqlc.arg(timeouts_ms)::integer[]) AS timeout_ms,
               unnest(sqlc.arg(remove_on_completes)::integer[]) AS remove_on_complete,
               unnest(sqlc.arg(remove_on_fails)::integer[]) AS remove_on_fail
    ) u
),
inserted AS (
    INSERT INTO queue.jobs (seq, id, type, queue, group_key, state, priority, data, max_attempts, backoff_type,
                            backoff_delay_ms, timeout_ms, remove_on_complete, remove_on_fail, run_at)
    SELECT i.seq, coalesce(nullif(i.job_id, ''), i.seq::text), i.type, i.queue, i.group_key,
           CASE WHEN i.delay_ms > 0 THEN 'delayed' ELSE 'waiting' END,
           i.priority, i.data, i.max_attempts, i.backoff_type, i.backoff_delay_ms,
           nullif(i.timeout_ms, 0), nullif(i.remove_on_complete, -2), nullif(i.remove_on_fail, -2),
           now() + i.delay_ms * interval '1 millisecond'
    FROM input i
    ORDER BY i.seq
    ON CONFLICT (id) DO NOTHING
    -- Only what the client cannot know; it fills in the rest from its own arrays (a
    -- thousand full rows cost a tenth of the statement to build, send and decode).
    RETURNING seq, id, type, queue, state, data, created_at, run_at
),
audit AS (
    INSERT INTO queue.job_events (job_id, type, queue, state, attempt)
    SELECT id, type, queue, state, 0 FROM inserted
),
wake AS (
    -- Only inside a caller's transaction; otherwise the client notifies after commit.
    -- One notification per queue that gained a runnable job.
    SELECT pg_notify('queue_jobs', w.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'waiting') w
    WHERE sqlc.arg(notify)::boolean
)
SELECT seq, id, state, data, created_at, run_at FROM inserted
WHERE (SELECT count(*) FROM wake) >= 0
ORDER BY seq;

-- name: JobInsertOne :many
-- JobInsertMany for one job, with scalar parameters: no arrays to build, unnest and
-- materialize. A single enqueue is the common call (API submit, single-job clients), and
-- this form costs the server about a tenth less per commit. Same semantics: an existing
-- job id inserts nothing and returns no row.
WITH inserted AS (
    INSERT INTO queue.jobs (seq, id, type, queue, group_key, state, priority, data, max_attempts, backoff_type,
                            backoff_delay_ms, timeout_ms, remove_on_complete, remove_on_fail, run_at)
    SELECT s.seq, coalesce(sqlc.narg(job_id)::text, s.seq::text), sqlc.arg(type)::text,
           sqlc.arg(queue)::text, sqlc.arg(group_key)::text,
           CASE WHEN sqlc.arg(delay_ms)::bigint > 0 THEN 'delayed' ELSE 'waiting' END,
           sqlc.arg(priority)::integer, sqlc.arg(data)::jsonb, sqlc.arg(max_attempts)::integer,
           sqlc.arg(backoff_type)::text, sqlc.arg(backoff_delay_ms)::integer,
           sqlc.narg(timeout_ms)::integer, sqlc.narg(remove_on_complete)::integer,
           sqlc.narg(remove_on_fail)::integer,
           now() + sqlc.arg(delay_ms)::bigint * interval '1 millisecond'
    FROM (SELECT nextval('queue.job_seq') AS seq) s
    ON CONFLICT (id) DO NOTHING
    RETURNING *
),
audit AS (
    INSERT INTO queue.job_events (job_id, type, queue, state, attempt)
    SELECT id, type, queue, state, 0 FROM inserted
),
wake AS (
    SELECT pg_notify('queue_jobs', queue) FROM inserted
    WHERE sqlc.arg(notify)::boolean AND state = 'waiting'
)
SELECT * FROM inserted
WHERE (SELECT count(*) FROM wake) >= 0;

-- name: JobGetManyByID :many
SELECT * FROM queue.jobs WHERE id = ANY(sqlc.arg(ids)::text[]);

-- name: JobGetByID :one
SELECT * FROM queue.jobs WHERE id = $1;

-- name: JobGetManyBySeq :many
SELECT * FROM queue.jobs WHERE seq = ANY(sqlc.arg(seqs)::bigint[]);

-- name: QueueNotify :exec
-- Wakes the workers of one queue (an empty name wakes every queue).
SELECT pg_notify('queue_jobs', sqlc.arg(queue)::text);
