-- Background passes, run by the one maintenance leader at a time, each in bounded
-- batches. Every statement that changes jobs checks, in itself, that its caller still
-- holds an unexpired leader lease: a leader that froze and woke up after losing the lease
-- changes nothing.

-- name: LeaderElect :one
-- Takes the lease when it is free or expired, renews it when the caller holds it and it
-- has not expired, and otherwise changes nothing. Returns the holder and the expiry as
-- they are now (the caller leads when the holder is itself), and the database clock.
WITH elected AS (
    INSERT INTO queue.leaders AS l (name, holder, elected_at, expires_at)
    VALUES (sqlc.arg(name)::text, sqlc.arg(holder)::text, now(),
            now() + sqlc.arg(ttl_ms)::bigint * interval '1 millisecond')
    ON CONFLICT (name) DO UPDATE
    SET holder = excluded.holder,
        elected_at = CASE WHEN l.holder = excluded.holder AND l.expires_at > now()
                          THEN l.elected_at ELSE now() END,
        expires_at = excluded.expires_at
    WHERE l.expires_at <= now() OR l.holder = excluded.holder
    RETURNING holder, expires_at
)
SELECT holder, expires_at, now()::timestamptz AS db_now FROM elected
UNION ALL
SELECT holder, expires_at, now()::timestamptz FROM queue.leaders
WHERE name = sqlc.arg(name)::text AND NOT EXISTS (SELECT 1 FROM elected);

-- name: LeaderResign :exec
-- Gives the lease up at once (graceful stop), so another worker need not wait it out.
DELETE FROM queue.leaders WHERE name = sqlc.arg(name)::text AND holder = sqlc.arg(holder)::text;

-- name: JobRescueExpired :many
-- Jobs whose lease expired (their worker stopped heartbeating) go back to waiting, or
-- fail when no attempt is left; a cancelled one just loses the lease.
WITH lead AS (
    SELECT 1 FROM queue.leaders
    WHERE name = 'maintenance' AND holder = sqlc.arg(worker)::text AND expires_at > now()
),
expired AS MATERIALIZED (
    SELECT seq
    FROM queue.jobs
    WHERE lease_owner IS NOT NULL
      AND lease_expires_at < coalesce(sqlc.narg(now)::timestamptz, now())
      AND EXISTS (SELECT 1 FROM lead)
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
        lease_token = NULL,
        lease_expires_at = NULL
    FROM expired e
    WHERE j.seq = e.seq
    RETURNING j.*
),
audit AS (
    INSERT INTO queue.job_events (job_id, type, queue, state, attempt, message, worker)
    SELECT id, type, queue, state, attempts_made, error, sqlc.arg(worker)::text FROM rescued WHERE state <> 'cancelled'
),
wake AS (
    SELECT pg_notify('queue_jobs', w.queue) FROM (SELECT DISTINCT queue FROM rescued WHERE state = 'waiting') w
)
SELECT * FROM rescued
WHERE (SELECT count(*) FROM wake) >= 0;

-- name: JobPromoteDue :many
-- Delayed jobs (future run time or retry backoff) whose time has come become waiting.
WITH lead AS (
    SELECT 1 FROM queue.leaders
    WHERE name = 'maintenance' AND holder = sqlc.arg(worker)::text AND expires_at > now()
),
due AS MATERIALIZED (
    SELECT seq
    FROM queue.jobs
    WHERE state = 'delayed' AND run_at <= coalesce(sqlc.narg(now)::timestamptz, now())
      AND EXISTS (SELECT 1 FROM lead)
    ORDER BY run_at
    LIMIT sqlc.arg(max)::integer
    FOR UPDATE SKIP LOCKED
),
promoted AS (
    UPDATE queue.jobs j
    SET state = 'waiting'
    FROM due
    WHERE j.seq = due.seq
    RETURNING j.seq, j.id, j.type, j.queue, j.attempts_made
),
audit AS (
    INSERT INTO queue.job_events (job_id, type, queue, state, attempt, worker)
    SELECT id, type, queue, 'waiting', attempts_made, sqlc.arg(worker)::text FROM promoted
),
wake AS (
    SELECT pg_notify('queue_jobs', w.queue) FROM (SELECT DISTINCT queue FROM promoted) w
)
SELECT id, type, queue FROM promoted
WHERE (SELECT count(*) FROM wake) >= 0;

-- name: JobTrimCandidates :many
-- Retention of finished jobs of one state, oldest first from a cursor the leader keeps:
-- judges up to max rows. A row is doomed when its retention is 0 (remove at once:
-- cancelled jobs, jobs finished by a rescue, jobs whose snapshot could not be stored
-- when they finished) or when N newer finished jobs of the same state exist (keep the N
-- most recent). A NULL retention takes the defaults; a cancelled job whose handler still
-- runs is never doomed. Nothing is deleted here: the leader first makes sure each doomed
-- job's snapshot is stored (JobTrimDelete).
WITH candidates AS MATERIALIZED (
    SELECT j.seq, j.id, j.finished_at, r.keep, j.lease_owner IS NULL AS idle
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
          -- jobs due for removal at once are not among the N kept
          AND CASE WHEN n.state = 'completed'
                   THEN coalesce(n.remove_on_complete, sqlc.arg(default_remove_on_complete)::integer)
                   ELSE coalesce(n.remove_on_fail, sqlc.arg(default_remove_on_fail)::integer) END <> 0
        ORDER BY n.finished_at DESC, n.seq DESC
        OFFSET k.keep - 1 LIMIT 1
    ) b
)
SELECT c.seq, c.id, c.finished_at::timestamptz AS finished_at, c.keep::integer AS keep,
       (c.idle AND (c.keep = 0 OR EXISTS (
           SELECT 1 FROM bounds b
           WHERE b.keep = c.keep AND (c.finished_at, c.seq) < (b.finished_at, b.seq))))::boolean AS doomed,
       now()::timestamptz AS db_now
FROM candidates c
ORDER BY c.finished_at, c.seq;

-- name: JobTrimDelete :many
-- Deletes doomed finished jobs of one state, checking again that each is still in that
-- state and idle, and that the caller still leads.
-- = ANY(array) walks the primary key; a join here tends to hash the whole table.
DELETE FROM queue.jobs j
WHERE j.seq = ANY (sqlc.arg(seqs)::bigint[])
  AND j.state = sqlc.arg(state)::text AND j.lease_owner IS NULL
  AND EXISTS (SELECT 1 FROM queue.leaders
              WHERE name = 'maintenance' AND holder = sqlc.arg(worker)::text AND expires_at > now())
RETURNING j.seq;

-- name: JobEventsTrim :execrows
-- Audit rows older than the retention, oldest first, in bounded batches.
DELETE FROM queue.job_events
WHERE id IN (
    SELECT id FROM queue.job_events
    WHERE at < now() - sqlc.arg(retention_ms)::bigint * interval '1 millisecond'
    LIMIT sqlc.arg(max)::integer
);

-- name: WorkerSeen :exec
-- A worker's heartbeat in the registry of live workers: inserted at start, refreshed on
-- every tick. It counts as gone once expires_at passes.
INSERT INTO queue.workers (id, host, pid, queues, types, running, started_at, last_seen_at, expires_at)
VALUES (sqlc.arg(id)::text, sqlc.arg(host)::text, sqlc.arg(pid)::integer, sqlc.arg(queues)::jsonb,
        sqlc.arg(types)::text[], sqlc.arg(running)::integer, now(), now(),
        now() + sqlc.arg(ttl_ms)::bigint * interval '1 millisecond')
ON CONFLICT (id) DO UPDATE
SET running = excluded.running, last_seen_at = now(), expires_at = excluded.expires_at,
    queues = excluded.queues, types = excluded.types;

-- name: WorkerGone :exec
-- A worker's graceful stop.
DELETE FROM queue.workers WHERE id = sqlc.arg(id)::text;

-- name: WorkersExpire :execrows
-- The leader forgets workers that stopped heartbeating.
DELETE FROM queue.workers WHERE expires_at < now();

-- name: QueueStartsTrim :execrows
-- Starts that no rate window of their queue still counts. Each claim of a rate-limited
-- queue deletes its own; this catches queues no longer claimed, or no longer limited.
DELETE FROM queue.queue_starts s
WHERE s.at < now() - (SELECT greatest(coalesce(max(q.rate_period_ms), 0), coalesce(max(q.group_rate_period_ms), 0))
                      FROM queue.queues q WHERE q.name = s.queue) * interval '1 millisecond';

-- name: QueueGroupsTrim :execrows
-- Round-robin positions of groups that have not started for a day: a group without one
-- counts as not started lately, so forgetting them changes nothing that matters.
DELETE FROM queue.queue_groups WHERE last_started_at < now() - interval '1 day';
