-- name: JobClaim :many
-- Claims up to max runnable jobs of one queue for a worker, in the exact order of
-- jobs_claim_idx (queue, priority DESC, run_at, seq), unless the queue or everything is
-- paused, or the queue has limits (JobClaimLimited claims those). The CTE is a fence: the UPDATE touches only the rows the LIMIT picked. Each
-- claim gets a token of its own that the run's later statements must present. The claim
-- commits durably: a handler must never start on a claim that a crash could undo, or a
-- second worker could claim and run the job at the same time.
WITH picked AS MATERIALIZED (
    SELECT seq
    FROM queue.jobs
    WHERE state = 'waiting'
      AND queue = sqlc.arg(queue)::text
      AND type = ANY (sqlc.arg(types)::text[])
      AND NOT (SELECT paused FROM queue.queue_state)
      AND NOT EXISTS (SELECT 1 FROM queue.queues q WHERE q.name = sqlc.arg(queue)::text AND (q.paused OR q.limited))
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
        lease_token = nextval('queue.lease_token_seq'),
        lease_expires_at = now() + sqlc.arg(lease_ms)::bigint * interval '1 millisecond'
    FROM picked
    WHERE j.seq = picked.seq
    RETURNING j.*
),
audit AS (
    INSERT INTO queue.job_events (job_id, type, queue, state, attempt, worker)
    SELECT id, type, queue, 'active', attempts_made, sqlc.arg(worker)::text FROM claimed
)
SELECT * FROM claimed
ORDER BY priority DESC, run_at, seq;

-- name: JobClaimLimited :many
-- Claims up to max runnable jobs of a queue with limits: as many as its concurrency and
-- rate limits, and its groups' limits, allow at this instant across every worker (see
-- queue.claim_limited). A claim cut short records why in the queue's settings row.
SELECT * FROM queue.claim_limited(sqlc.arg(queue)::text, sqlc.arg(types)::text[], sqlc.arg(max)::integer,
                                  sqlc.arg(worker)::text, sqlc.arg(lease_ms)::bigint);

-- name: QueueHold :one
-- What held the last claim of a queue back, and in how many milliseconds a rate window
-- has room again (by the database's clock, so the worker's own clock does not matter).
SELECT held_by,
       coalesce(ceil(extract(epoch FROM next_start_at - clock_timestamp()) * 1000), 0)::bigint AS next_start_in_ms
FROM queue.queues WHERE name = sqlc.arg(name)::text;

-- name: QueueLimits :many
-- Which of the given queues have limits (claimed through JobClaimLimited), and which
-- limit how many jobs run at once (their finishes wake the other workers).
SELECT name, coalesce(limited, false)::boolean AS limited,
       (concurrency IS NOT NULL OR group_concurrency IS NOT NULL)::boolean AS slot_limited
FROM queue.queues WHERE name = ANY (sqlc.arg(names)::text[]);

-- name: JobFinishMany :many
-- Records the outcome of many attempts in one statement: completion (ok), retry
-- (retry_ms >= 0: delayed, or waiting when 0) or final failure (retry_ms < 0). Each row
-- is guarded by its claim's token, so a job that was rescued, cancelled, handed back or
-- claimed again meanwhile is left alone. A row marked remove (its retention is "remove at
-- once" and its snapshot is stored) is deleted here instead of updated; a cancelled job
-- whose handler returned only gives up its lease. Returns the jobs that changed, with
-- their new state.
WITH input AS MATERIALIZED (
    -- unnest walks each array once; subscripting varlena arrays row by row is quadratic.
    SELECT unnest(sqlc.arg(seqs)::bigint[]) AS seq,
           unnest(sqlc.arg(tokens)::bigint[]) AS token,
           unnest(sqlc.arg(ok)::boolean[]) AS ok,
           unnest(sqlc.arg(remove)::boolean[]) AS remove,
           unnest(sqlc.arg(results)::jsonb[]) AS result,
           unnest(sqlc.arg(messages)::text[]) AS message,
           unnest(sqlc.arg(retry_ms)::bigint[]) AS retry_ms
),
removed AS (
    DELETE FROM queue.jobs j
    USING input d
    WHERE j.seq = d.seq AND j.lease_token = d.token AND j.state = 'active'
      AND d.remove AND (d.ok OR d.retry_ms < 0)
    RETURNING j.seq, j.id, j.type, j.queue, j.attempts_made,
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
        lease_token = NULL,
        lease_expires_at = NULL
    FROM input d
    WHERE j.seq = d.seq AND j.lease_token = d.token AND j.state = 'active'
      AND NOT (d.remove AND (d.ok OR d.retry_ms < 0))
    RETURNING j.seq, j.id, j.type, j.queue, j.attempts_made, j.state,
              CASE WHEN d.ok THEN NULL ELSE d.message END AS message
),
released AS (
    -- Only the rows neither branch above took, by key: usually none, so no probe at all
    -- (a join on state = 'cancelled' would walk every retained cancelled job).
    UPDATE queue.jobs j
    SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
    WHERE j.seq = ANY (ARRAY(SELECT seq FROM input
                             EXCEPT ALL SELECT seq FROM removed
                             EXCEPT ALL SELECT seq FROM updated))
      AND j.state = 'cancelled'
      AND j.lease_token = (SELECT d.token FROM input d WHERE d.seq = j.seq LIMIT 1)
    RETURNING j.seq, j.state
),
audit AS (
    INSERT INTO queue.job_events (job_id, type, queue, state, attempt, message, worker)
    SELECT id, type, queue, state, attempts_made, message, sqlc.arg(worker)::text FROM removed
    UNION ALL
    SELECT id, type, queue, state, attempts_made, message, sqlc.arg(worker)::text FROM updated
),
wake AS (
    -- Queues that gained a runnable job, and queues whose concurrency limits now have
    -- room (slot_queues: named by the worker, empty unless it serves such a queue).
    SELECT pg_notify('queue_jobs', w.queue)
    FROM (SELECT queue FROM updated WHERE state = 'waiting'
          UNION
          SELECT q FROM unnest(sqlc.arg(slot_queues)::text[]) q
          WHERE cardinality(sqlc.arg(slot_queues)::text[]) > 0
            AND (EXISTS (SELECT 1 FROM removed) OR EXISTS (SELECT 1 FROM updated) OR EXISTS (SELECT 1 FROM released))) w
)
SELECT seq, state::text AS state FROM removed
UNION ALL
SELECT seq, state FROM updated
UNION ALL
SELECT seq, state FROM released
WHERE (SELECT count(*) FROM wake) >= 0;

-- name: JobHeartbeat :many
-- Extends the leases of the runs a worker holds (each job with its claim's token) and
-- returns those it still holds with their state: a job missing was rescued away or
-- claimed again; a cancelled one must stop. A lease that has expired is never extended:
-- from its expiry the job belongs to the rescuer. A heartbeat lost in a crash costs
-- nothing, so it does not wait for its WAL flush.
WITH async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true)
),
input AS (
    SELECT unnest(sqlc.arg(seqs)::bigint[]) AS seq, unnest(sqlc.arg(tokens)::bigint[]) AS token
),
beat AS (
    -- SKIP LOCKED: a row being finished (or cancelled) right now is not waited for, so a
    -- heartbeat never deadlocks with a finish; the worker looks such rows up afterwards.
    UPDATE queue.jobs j
    SET lease_expires_at = now() + sqlc.arg(lease_ms)::bigint * interval '1 millisecond'
    FROM (SELECT m.seq FROM queue.jobs m JOIN input i ON m.seq = i.seq AND m.lease_token = i.token
          WHERE m.lease_expires_at > now()
          ORDER BY m.seq
          FOR UPDATE OF m SKIP LOCKED) mine
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
),
input AS (
    SELECT unnest(sqlc.arg(seqs)::bigint[]) AS seq, unnest(sqlc.arg(tokens)::bigint[]) AS token,
           unnest(sqlc.arg(progress)::integer[]) AS progress
)
UPDATE queue.jobs j
SET progress = p.progress
FROM input p
WHERE j.seq = p.seq
  -- a row being finished is skipped (its progress no longer matters), never waited for
  AND j.seq IN (SELECT m.seq FROM queue.jobs m JOIN input i ON m.seq = i.seq AND m.lease_token = i.token
                WHERE m.state = 'active'
                FOR UPDATE OF m SKIP LOCKED)
  AND (SELECT count(*) FROM async_commit) >= 0;

-- name: JobHandBack :many
-- At shutdown: jobs whose handlers did not finish in time go back to waiting and get
-- their attempt back; cancelled ones just give up the lease.
WITH input AS (
    SELECT unnest(sqlc.arg(seqs)::bigint[]) AS seq, unnest(sqlc.arg(tokens)::bigint[]) AS token
),
back AS (
    UPDATE queue.jobs j
    SET state = 'waiting', attempts_made = j.attempts_made - 1,
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
    FROM input i
    WHERE j.seq = i.seq AND j.lease_token = i.token AND j.state = 'active'
    RETURNING j.seq, j.id, j.type, j.queue, j.attempts_made
),
released AS (
    UPDATE queue.jobs j
    SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
    FROM input i
    WHERE j.seq = i.seq AND j.lease_token = i.token AND j.state = 'cancelled'
    RETURNING j.id, j.type, j.queue
),
audit AS (
    INSERT INTO queue.job_events (job_id, type, queue, state, attempt, message, worker)
    SELECT id, type, queue, 'waiting', attempts_made, 'handed back at worker shutdown', sqlc.arg(worker)::text FROM back
),
wake AS (
    SELECT pg_notify('queue_jobs', w.queue) FROM (SELECT DISTINCT queue FROM back) w
)
SELECT id, type, queue, 'waiting'::text AS state FROM back
UNION ALL
SELECT id, type, queue, 'cancelled'::text FROM released
WHERE (SELECT count(*) FROM wake) >= 0;

-- name: JobLeaseState :many
-- Who holds the given jobs now, without locking: for rows a heartbeat skipped.
SELECT seq, state, lease_token, coalesce(lease_expires_at > now(), false)::boolean AS unexpired
FROM queue.jobs WHERE seq = ANY (sqlc.arg(seqs)::bigint[]);
