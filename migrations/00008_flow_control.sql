-- Flow control: limits per queue and per group that hold across every worker at once,
-- and fair queues.
--
-- A job may name a group (a tenant, a customer, an account): the unit of the per-group
-- limits and of fairness. A queue's settings row may set a concurrency limit (jobs
-- holding a lease at once), a rate limit (starts in any window of a period), the same two
-- per group, and fairness (round-robin between groups at equal priority).
--
-- A queue with none of these is claimed exactly as before: the claim statement reads the
-- settings row it already read for the pause switch, and leaves a limited queue alone. A
-- limited queue is claimed by queue.claim_limited, which takes a lock of its own for
-- that queue (a transaction-level advisory lock, key 1903979892 and the hash of the
-- queue's name), so its claims run one at a time across every worker and each sees what
-- the one before it started.

-- +goose Up
ALTER TABLE queue.jobs ADD COLUMN group_key text NOT NULL DEFAULT '';
-- The shape (1..128 characters, no control characters) is checked where jobs are made;
-- the table only keeps the length, which costs nothing per update.
ALTER TABLE queue.jobs ADD CONSTRAINT jobs_group_length CHECK (octet_length(group_key) <= 512);

-- Leased rows by queue and group: the concurrency limits count them (a handful: the sum
-- of worker concurrency, plus the dead entries claims and finishes leave until a
-- vacuum). Same rows as before, so claims pay nothing more for it.
DROP INDEX queue.jobs_leased_idx;
CREATE INDEX jobs_leased_idx ON queue.jobs (queue, group_key, seq) WHERE lease_owner IS NOT NULL;

-- Runnable rows of jobs that name a group, in claim order within each group: a grouped
-- claim visits each group's first job without walking another group's backlog. Jobs
-- without a group are not in it (they pay nothing for groups): a grouped claim finds
-- theirs on jobs_claim_idx. Claims and finishes never add to it (their rows are not
-- waiting); enqueues of grouped jobs do.
CREATE INDEX jobs_group_claim_idx ON queue.jobs (queue, group_key, priority DESC, run_at, seq)
    WHERE state = 'waiting' AND group_key <> '';

-- Counts tell grouped jobs from the others, so a grouped claim knows whether any job
-- without a group waits (it looks for them only then). All jobs have no group yet.
ALTER TABLE queue.job_counts ADD COLUMN grouped boolean NOT NULL DEFAULT false;
-- That question reads one queue's rows: between the leader's compactions the deltas of
-- every statement pile up, and a grouped claim should not sum every queue's.
CREATE INDEX job_counts_queue_state_idx ON queue.job_counts (queue, state);

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION queue.job_counts_on_insert() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO queue.job_counts (queue, state, type, grouped, n)
    SELECT queue, state, type, group_key <> '', count(*) FROM new_rows GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION queue.job_counts_on_update() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- Heartbeats and progress change no state: their net change is zero and adds nothing.
    INSERT INTO queue.job_counts (queue, state, type, grouped, n)
    SELECT queue, state, type, grouped, sum(d)
    FROM (SELECT queue, state, type, group_key <> '' AS grouped, 1 AS d FROM new_rows
          UNION ALL
          SELECT queue, state, type, group_key <> '', -1 FROM old_rows) c
    GROUP BY queue, state, type, grouped
    HAVING sum(d) <> 0;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION queue.job_counts_on_delete() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO queue.job_counts (queue, state, type, grouped, n)
    SELECT queue, state, type, group_key <> '', -count(*) FROM old_rows GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

ALTER TABLE queue.queues
    ADD COLUMN concurrency          integer,
    ADD COLUMN rate_limit           integer,
    ADD COLUMN rate_period_ms       integer,
    ADD COLUMN group_concurrency    integer,
    ADD COLUMN group_rate_limit     integer,
    ADD COLUMN group_rate_period_ms integer,
    ADD COLUMN fair                 boolean NOT NULL DEFAULT false,
    -- Whether claims of this queue must go through queue.claim_limited.
    ADD COLUMN limited boolean GENERATED ALWAYS AS (
        concurrency IS NOT NULL OR rate_limit IS NOT NULL OR group_concurrency IS NOT NULL
        OR group_rate_limit IS NOT NULL OR fair) STORED,
    -- What the last claim found: the limit that held jobs back (NULL: none), since when
    -- the queue has been held by it, and the earliest time a rate window has room again.
    ADD COLUMN held_by              text,
    ADD COLUMN held_since           timestamptz,
    ADD COLUMN next_start_at        timestamptz,
    ADD CONSTRAINT queues_concurrency_range CHECK (concurrency BETWEEN 1 AND 100000),
    ADD CONSTRAINT queues_group_concurrency_range CHECK (group_concurrency BETWEEN 1 AND 100000),
    ADD CONSTRAINT queues_rate_range CHECK (rate_limit BETWEEN 1 AND 100000
                                            AND rate_period_ms BETWEEN 1 AND 86400000),
    ADD CONSTRAINT queues_rate_pair CHECK ((rate_limit IS NULL) = (rate_period_ms IS NULL)),
    ADD CONSTRAINT queues_group_rate_range CHECK (group_rate_limit BETWEEN 1 AND 100000
                                                  AND group_rate_period_ms BETWEEN 1 AND 86400000),
    ADD CONSTRAINT queues_group_rate_pair CHECK ((group_rate_limit IS NULL) = (group_rate_period_ms IS NULL)),
    ADD CONSTRAINT queues_held_by_known CHECK (held_by IN ('concurrency', 'rate', 'groupConcurrency', 'groupRate'));

-- Starts of rate-limited queues, one row per claim (per group when the group rate is
-- set) with the number of jobs it started. A rate limit counts the rows within its
-- window; each claim deletes its queue's rows older than the longest window, and the
-- maintenance leader deletes what queues no longer claimed leave behind.
CREATE TABLE queue.queue_starts (
    queue     text        NOT NULL,
    group_key text        NOT NULL DEFAULT '',
    at        timestamptz NOT NULL,
    n         integer     NOT NULL,
    CONSTRAINT queue_starts_n_positive CHECK (n > 0)
);
CREATE INDEX queue_starts_queue_at_idx ON queue.queue_starts (queue, at);

-- The last start of each group of a fair queue: the round-robin order. A group with no
-- row has not started lately and goes first; the leader deletes rows a day old.
CREATE TABLE queue.queue_groups (
    queue           text        NOT NULL,
    group_key       text        NOT NULL,
    last_started_at timestamptz NOT NULL,
    CONSTRAINT queue_groups_pkey PRIMARY KEY (queue, group_key)
);

-- +goose StatementBegin
-- Claims up to p_max waiting jobs of a limited queue for a worker: no more than its
-- limits allow at this instant, given every job of the queue that holds a lease and
-- every start within the rate windows. The queue's claim lock makes its claims take
-- turns; every statement after it takes a fresh snapshot, so it counts the jobs the
-- previous claim started. It is an advisory lock rather than a lock of the settings
-- row: a row lock is a write, so a claim that found nothing to start would still write
-- and flush WAL. The start time is taken once the jobs are picked, so
-- the audit trail orders each start after every finish the pick counted on; the jobs of
-- one claim start a microsecond apart, in the order they were picked (round-robin
-- order, in a fair queue), so the audit trail shows that order too.
CREATE FUNCTION queue.claim_limited(
    p_queue    text,
    p_types    text[],
    p_max      integer,
    p_worker   text,
    p_lease_ms bigint
) RETURNS SETOF queue.jobs
    LANGUAGE plpgsql
    -- Plans are made once per connection: re-planning these statements on every claim
    -- cost more than running them (their parameters do not change the best plan). No
    -- JIT: a generic plan's cost estimate can pass jit_above_cost, and compiling it
    -- (on every call: compiled code is not cached) took 140 ms for a 1 ms claim.
    SET plan_cache_mode = force_generic_plan
    SET jit = off
AS $$
DECLARE
    q          queue.queues;
    t          timestamptz;
    v_allowed  integer := p_max;
    v_held     text;
    v_next     timestamptz;
    v_n        bigint;
    v_seqs     bigint[];
    v_gheld    text;
    v_gnext    timestamptz;
    v_period   interval;
    v_gperiod  interval;
    v_start    timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(1903979892, hashtext(p_queue));
    SELECT * INTO q FROM queue.queues WHERE name = p_queue;
    IF (SELECT paused FROM queue.queue_state) OR coalesce(q.paused, false) THEN
        RETURN;
    END IF;
    t := clock_timestamp();
    v_period := q.rate_period_ms * interval '1 millisecond';
    v_gperiod := q.group_rate_period_ms * interval '1 millisecond';

    IF q.concurrency IS NOT NULL THEN
        -- Every job holding a lease: active, or cancelled with its handler still running.
        SELECT count(*) INTO v_n FROM queue.jobs WHERE queue = p_queue AND lease_owner IS NOT NULL;
        IF q.concurrency - v_n < v_allowed THEN
            v_allowed := greatest(q.concurrency - v_n, 0);
            v_held := 'concurrency';
        END IF;
    END IF;
    IF q.rate_limit IS NOT NULL AND v_allowed > 0 THEN
        SELECT coalesce(sum(n), 0) INTO v_n FROM queue.queue_starts
        WHERE queue = p_queue AND at > t - v_period;
        IF q.rate_limit - v_n < v_allowed THEN
            v_allowed := greatest(q.rate_limit - v_n, 0);
            v_held := 'rate';
        END IF;
    END IF;

    IF v_allowed = 0 AND NOT EXISTS (SELECT 1 FROM queue.jobs
                                      WHERE state = 'waiting' AND queue = p_queue AND type = ANY (p_types)) THEN
        v_held := NULL; -- nothing is held back
    END IF;

    IF v_allowed > 0 AND q.group_concurrency IS NULL AND q.group_rate_limit IS NULL AND NOT coalesce(q.fair, false) THEN
        -- Queue limits only: the plain claim order, cut to what the limits allow.
        SELECT array_agg(s.seq ORDER BY s.priority DESC, s.run_at, s.seq) INTO v_seqs FROM (
            SELECT j.seq, j.priority, j.run_at FROM queue.jobs j
            WHERE j.state = 'waiting' AND j.queue = p_queue AND j.type = ANY (p_types)
            ORDER BY j.priority DESC, j.run_at, j.seq
            LIMIT v_allowed
            FOR UPDATE SKIP LOCKED) s;
    ELSIF v_allowed > 0 THEN
        SELECT p.seqs, p.held_by, p.next_start_at INTO v_seqs, v_gheld, v_gnext
        FROM queue.pick_grouped(q, p_types, v_allowed, t) p;
    END IF;

    IF cardinality(v_seqs) > 0 THEN
        v_start := clock_timestamp();
        RETURN QUERY
        WITH claimed AS (
            UPDATE queue.jobs j
            SET state = 'active',
                attempts_made = j.attempts_made + 1,
                progress = 0,
                started_at = v_start + (array_position(v_seqs, j.seq) - 1) * interval '1 microsecond',
                lease_owner = p_worker,
                lease_token = nextval('queue.lease_token_seq'),
                lease_expires_at = v_start + p_lease_ms * interval '1 millisecond'
            WHERE j.seq = ANY (v_seqs) AND j.state = 'waiting'
            RETURNING j.*
        ),
        audit AS (
            INSERT INTO queue.job_events (job_id, type, queue, state, attempt, worker, at)
            SELECT id, type, queue, 'active', attempts_made, p_worker, started_at FROM claimed
        ),
        -- Counted from the claim's last start: a window never lets a start go sooner
        -- than the audit trail's times allow.
        starts AS (
            INSERT INTO queue.queue_starts (queue, group_key, at, n)
            SELECT p_queue, CASE WHEN q.group_rate_limit IS NULL THEN '' ELSE c.group_key END,
                   max(c.started_at), count(*)
            FROM claimed c
            WHERE q.rate_limit IS NOT NULL OR q.group_rate_limit IS NOT NULL
            GROUP BY 2
        ),
        served AS (
            INSERT INTO queue.queue_groups AS g (queue, group_key, last_started_at)
            SELECT p_queue, c.group_key, min(c.started_at) FROM claimed c WHERE q.fair
            GROUP BY c.group_key
            ON CONFLICT (queue, group_key) DO UPDATE SET last_started_at = excluded.last_started_at
        )
        SELECT * FROM claimed ORDER BY priority DESC, run_at, seq;
        GET DIAGNOSTICS v_n = ROW_COUNT;
    ELSE
        v_n := 0;
    END IF;

    IF v_n = p_max THEN
        v_held := NULL; -- the worker got all it asked for
    ELSIF v_n < v_allowed THEN
        -- Out of runnable jobs within the queue's limits, unless a group's own limit
        -- left some behind.
        v_held := v_gheld;
        v_next := v_gnext;
    ELSIF v_held = 'rate' THEN
        -- The window is full: it has room again when its oldest start leaves it.
        SELECT min(at) + v_period INTO v_next
        FROM queue.queue_starts WHERE queue = p_queue AND at > t - v_period;
    END IF;

    IF q.rate_limit IS NOT NULL OR q.group_rate_limit IS NOT NULL THEN
        DELETE FROM queue.queue_starts
        WHERE queue = p_queue
          AND at <= t - greatest(coalesce(v_period, interval '0'), coalesce(v_gperiod, interval '0'));
    END IF;
    IF q.name IS NOT NULL AND (q.held_by, q.next_start_at) IS DISTINCT FROM (v_held, v_next) THEN
        UPDATE queue.queues
        SET held_by = v_held,
            held_since = CASE WHEN v_held IS NULL THEN NULL
                              WHEN held_by IS DISTINCT FROM v_held THEN t
                              ELSE held_since END,
            next_start_at = v_next
        WHERE name = p_queue;
    END IF;
    RETURN;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
-- The jobs a grouped claim (group limits or fairness) starts: up to p_allowed, at most
-- what each group's limits leave it, in the queue's order. It visits each group's first
-- runnable job once (a skip scan over jobs_group_claim_idx), so one group's backlog is
-- never walked to find another's jobs. Fair queues order equal priorities by round
-- (a group's 1st job, then every group's 2nd, ...) and, within a round, by each
-- group's last start, oldest first; others by (priority, run time, submission).
-- held_by names the group limit that left jobs behind, if any; next_start_at is the
-- earliest time a group held by its rate has room again.
CREATE FUNCTION queue.pick_grouped(
    q         queue.queues,
    p_types   text[],
    p_allowed integer,
    t         timestamptz,
    OUT seqs          bigint[],
    OUT held_by       text,
    OUT next_start_at timestamptz
)
    -- plpgsql, not sql, and generic plans: its statement is planned once per connection
    -- instead of on every claim (planning it costs more than running it); no JIT (see
    -- queue.claim_limited).
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan
    SET jit = off
AS $$
DECLARE
    -- Whether jobs without a group wait: only then are they looked for, since in a queue
    -- where every job names a group that walk would cross the whole backlog for nothing.
    -- A variable, not a subquery in the statement: as a parameter it gates the walk
    -- (checked once), where a subquery would be checked row by row along it.
    v_loose boolean;
BEGIN
SELECT coalesce(sum(c.n), 0) > 0 INTO v_loose
FROM queue.job_counts c
WHERE c.queue = q.name AND c.state = 'waiting' AND NOT c.grouped;

WITH RECURSIVE named AS (
    (SELECT j.group_key, j.priority, j.run_at, j.seq
     FROM queue.jobs j
     WHERE j.state = 'waiting' AND j.queue = q.name AND j.group_key <> '' AND j.type = ANY (p_types)
     ORDER BY j.group_key, j.priority DESC, j.run_at, j.seq
     LIMIT 1)
    UNION ALL
    SELECT h.*
    FROM named g
    CROSS JOIN LATERAL (
        SELECT j.group_key, j.priority, j.run_at, j.seq
        FROM queue.jobs j
        WHERE j.state = 'waiting' AND j.queue = q.name AND j.group_key <> '' AND j.type = ANY (p_types)
          AND j.group_key > g.group_key
        ORDER BY j.group_key, j.priority DESC, j.run_at, j.seq
        LIMIT 1) h
),
-- Jobs without a group are one group, found on jobs_claim_idx.
grp AS (
    SELECT * FROM named
    UNION ALL
    (SELECT j.group_key, j.priority, j.run_at, j.seq
     FROM queue.jobs j
     WHERE v_loose AND j.state = 'waiting' AND j.queue = q.name AND j.group_key = '' AND j.type = ANY (p_types)
     ORDER BY j.priority DESC, j.run_at, j.seq
     LIMIT 1)
),
active AS (
    SELECT group_key, count(*) AS n
    FROM queue.jobs
    WHERE queue = q.name AND lease_owner IS NOT NULL AND q.group_concurrency IS NOT NULL
    GROUP BY group_key
),
used AS (
    SELECT group_key, sum(n) AS n, min(at) AS oldest
    FROM queue.queue_starts
    WHERE queue = q.name AND q.group_rate_limit IS NOT NULL
      AND at > t - q.group_rate_period_ms * interval '1 millisecond'
    GROUP BY group_key
),
heads AS (
    SELECT g.group_key, g.priority, g.run_at, g.seq, l.last_started_at AS last,
           -- LEAST ignores NULLs: a limit that is not set does not bound the room.
           least(q.group_concurrency - coalesce(a.n, 0), q.group_rate_limit - coalesce(u.n, 0), p_allowed) AS room,
           q.group_rate_limit - coalesce(u.n, 0) AS rate_left,
           coalesce(u.oldest, t) AS oldest
    FROM grp g
    LEFT JOIN active a ON a.group_key = g.group_key
    LEFT JOIN used u ON u.group_key = g.group_key
    LEFT JOIN queue.queue_groups l ON q.fair AND l.queue = q.name AND l.group_key = g.group_key
),
open AS (
    SELECT * FROM heads WHERE room > 0
),
-- With at least p_allowed open groups, nothing after the p_allowed-th group head can
-- be picked: a group's later jobs are fetched only if they come before it.
cut AS (
    SELECT priority, run_at, seq FROM open
    ORDER BY priority DESC, CASE WHEN q.fair THEN last END ASC NULLS FIRST, run_at, seq
    OFFSET p_allowed - 1 LIMIT 1
),
-- A group's candidates: its head, and the jobs after it that could come before the cut,
-- each set read as a range of jobs_group_claim_idx (a filter that rejects rows would
-- walk the group's whole backlog looking for more).
more AS (
    SELECT o.group_key, c.seq, c.priority, c.run_at
    FROM open o
    LEFT JOIN cut ON true
    CROSS JOIN LATERAL (
        -- No cut: the group's first jobs, as many as its room.
        (SELECT j.seq, j.priority, j.run_at
         FROM queue.jobs j
         WHERE cut.seq IS NULL AND o.room > 1 AND o.group_key <> ''
           AND j.state = 'waiting' AND j.queue = q.name AND j.group_key = o.group_key AND j.group_key <> ''
           AND j.type = ANY (p_types)
         ORDER BY j.priority DESC, j.run_at, j.seq
         LIMIT o.room)
        UNION ALL
        (SELECT j.seq, j.priority, j.run_at
         FROM queue.jobs j
         WHERE cut.seq IS NULL AND o.room > 1 AND o.group_key = ''
           AND j.state = 'waiting' AND j.queue = q.name AND j.group_key = '' AND j.type = ANY (p_types)
         ORDER BY j.priority DESC, j.run_at, j.seq
         LIMIT o.room)
        UNION ALL
        -- Jobs of a higher priority than the cut.
        (SELECT j.seq, j.priority, j.run_at
         FROM queue.jobs j
         WHERE cut.seq IS NOT NULL AND o.room > 1 AND o.priority > cut.priority AND o.group_key <> ''
           AND j.state = 'waiting' AND j.queue = q.name AND j.group_key = o.group_key AND j.group_key <> ''
           AND j.priority > cut.priority AND j.type = ANY (p_types)
         ORDER BY j.priority DESC, j.run_at, j.seq
         LIMIT o.room)
        UNION ALL
        (SELECT j.seq, j.priority, j.run_at
         FROM queue.jobs j
         WHERE cut.seq IS NOT NULL AND o.room > 1 AND o.priority > cut.priority AND o.group_key = ''
           AND j.state = 'waiting' AND j.queue = q.name AND j.group_key = ''
           AND j.priority > cut.priority AND j.type = ANY (p_types)
         ORDER BY j.priority DESC, j.run_at, j.seq
         LIMIT o.room)
        UNION ALL
        -- Not fair: jobs of the cut's priority that come no later than it.
        (SELECT j.seq, j.priority, j.run_at
         FROM queue.jobs j
         WHERE cut.seq IS NOT NULL AND o.room > 1 AND NOT q.fair AND o.group_key <> ''
           AND j.state = 'waiting' AND j.queue = q.name AND j.group_key = o.group_key AND j.group_key <> ''
           AND j.priority = cut.priority AND (j.run_at, j.seq) <= (cut.run_at, cut.seq)
           AND j.type = ANY (p_types)
         ORDER BY j.run_at, j.seq
         LIMIT o.room)
        UNION ALL
        (SELECT j.seq, j.priority, j.run_at
         FROM queue.jobs j
         WHERE cut.seq IS NOT NULL AND o.room > 1 AND NOT q.fair AND o.group_key = ''
           AND j.state = 'waiting' AND j.queue = q.name AND j.group_key = ''
           AND j.priority = cut.priority AND (j.run_at, j.seq) <= (cut.run_at, cut.seq)
           AND j.type = ANY (p_types)
         ORDER BY j.run_at, j.seq
         LIMIT o.room)
    ) c
    -- Only groups that may give more than their head: most claims visit none.
    WHERE o.room > 1
      AND (cut.seq IS NULL OR o.priority > cut.priority OR (NOT q.fair AND o.priority = cut.priority))
),
cand AS (
    SELECT s.group_key, o.last, o.room, s.seq, s.priority, s.run_at,
           row_number() OVER (PARTITION BY s.group_key ORDER BY s.priority DESC, s.run_at, s.seq) AS round
    FROM (SELECT group_key, seq, priority, run_at FROM open
          UNION
          SELECT group_key, seq, priority, run_at FROM more) s
    JOIN open o ON o.group_key = s.group_key
),
picked AS (
    SELECT seq, group_key,
           row_number() OVER (ORDER BY priority DESC,
                                       CASE WHEN q.fair THEN round END,
                                       CASE WHEN q.fair THEN last END ASC NULLS FIRST,
                                       run_at, seq) AS ord
    FROM cand
    WHERE round <= room -- each group within its own limits
    ORDER BY ord
    LIMIT p_allowed
),
-- Groups whose own limit left jobs behind: shut out, or given all their room.
bound AS (
    SELECT h.group_key, h.rate_left <= 0 AS rate_full, h.oldest FROM heads h WHERE h.room <= 0
    UNION ALL
    SELECT o.group_key, o.rate_left <= n.picked, o.oldest
    FROM open o
    CROSS JOIN LATERAL (SELECT count(*) AS picked FROM picked p WHERE p.group_key = o.group_key) n
    WHERE o.room < p_allowed AND o.room = n.picked
)
SELECT (SELECT coalesce(array_agg(p.seq ORDER BY p.ord), '{}') FROM picked p),
       (SELECT CASE WHEN coalesce(bool_or(b.rate_full), false) THEN 'groupRate'
                    WHEN count(*) > 0 THEN 'groupConcurrency' END FROM bound b),
       (SELECT min(b.oldest) + q.group_rate_period_ms * interval '1 millisecond' FROM bound b WHERE b.rate_full)
INTO seqs, held_by, next_start_at;
END
$$;
-- +goose StatementEnd

-- queue.enqueue: p_options also takes the group.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION queue.enqueue(
    p_type     text,
    p_data     jsonb,
    p_priority integer  DEFAULT 5,
    p_delay    interval DEFAULT '0',
    p_attempts integer  DEFAULT 3,
    p_job_id   text     DEFAULT NULL,
    p_options  jsonb    DEFAULT '{}'
) RETURNS text
    LANGUAGE plpgsql
AS $$
DECLARE
    v_key           text;
    v_value         jsonb;
    v_backoff_key   text;
    v_backoff_type  text    := 'exponential';
    v_backoff_delay integer := 1000;
    v_timeout       integer;
    v_remove_ok     integer;
    v_remove_fail   integer;
    v_queue         text    := 'default';
    v_group         text    := '';
    v_seq           bigint;
    v_id            text;
    v_state         text;
BEGIN
    IF p_type IS NULL OR p_type !~ '^[A-Za-z][A-Za-z0-9_.:-]{0,127}$' THEN
        RAISE EXCEPTION 'queue.enqueue: p_type must be 1..128 characters of [A-Za-z0-9_.:-] starting with a letter, got %',
            coalesce(quote_literal(p_type), 'NULL') USING ERRCODE = '22023';
    END IF;
    IF p_data IS NULL OR jsonb_typeof(p_data) <> 'object' THEN
        RAISE EXCEPTION 'queue.enqueue: p_data must be a JSON object' USING ERRCODE = '22023';
    END IF;
    IF octet_length(p_data::text) > 262144 THEN
        RAISE EXCEPTION 'queue.enqueue: p_data must be at most 256 KiB' USING ERRCODE = '22023';
    END IF;
    IF p_priority IS NULL OR p_priority NOT BETWEEN 1 AND 20 THEN
        RAISE EXCEPTION 'queue.enqueue: p_priority must be between 1 and 20' USING ERRCODE = '22023';
    END IF;
    IF p_delay IS NULL OR p_delay < interval '0' OR p_delay > interval '365 days' THEN
        RAISE EXCEPTION 'queue.enqueue: p_delay must be between 0 and 365 days' USING ERRCODE = '22023';
    END IF;
    IF p_attempts IS NULL OR p_attempts NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'queue.enqueue: p_attempts must be between 1 and 100' USING ERRCODE = '22023';
    END IF;
    IF p_job_id IS NOT NULL AND (p_job_id !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}$' OR p_job_id ~ '^[0-9]+$') THEN
        RAISE EXCEPTION 'queue.enqueue: p_job_id must be 1..255 characters of [A-Za-z0-9_.:-], start with a letter or digit, and not be all digits'
            USING ERRCODE = '22023';
    END IF;
    IF p_options IS NULL OR jsonb_typeof(p_options) <> 'object' THEN
        RAISE EXCEPTION 'queue.enqueue: p_options must be a JSON object' USING ERRCODE = '22023';
    END IF;

    FOR v_key, v_value IN SELECT key, value FROM jsonb_each(p_options) LOOP
        CASE v_key
        WHEN 'backoff' THEN
            IF jsonb_typeof(v_value) <> 'object' THEN
                RAISE EXCEPTION 'queue.enqueue: backoff must be an object' USING ERRCODE = '22023';
            END IF;
            FOR v_backoff_key IN SELECT jsonb_object_keys(v_value) LOOP
                IF v_backoff_key NOT IN ('type', 'delay') THEN
                    RAISE EXCEPTION 'queue.enqueue: unknown option backoff.%', v_backoff_key USING ERRCODE = '22023';
                END IF;
            END LOOP;
            IF v_value ? 'type' THEN
                IF v_value->'type' NOT IN ('"fixed"', '"exponential"') THEN
                    RAISE EXCEPTION 'queue.enqueue: backoff.type must be "fixed" or "exponential"' USING ERRCODE = '22023';
                END IF;
                v_backoff_type := v_value->>'type';
            END IF;
            IF v_value ? 'delay' THEN
                v_backoff_delay := queue.option_int('backoff.delay', v_value->'delay', 0, 86400000);
            END IF;
        WHEN 'timeout' THEN
            v_timeout := queue.option_int('timeout', v_value, 1, 86400000);
        WHEN 'removeOnComplete' THEN
            v_remove_ok := queue.option_retention('removeOnComplete', v_value);
        WHEN 'removeOnFail' THEN
            v_remove_fail := queue.option_retention('removeOnFail', v_value);
        WHEN 'queue' THEN
            IF jsonb_typeof(v_value) IS DISTINCT FROM 'string' OR v_value->>0 !~ '^[a-z0-9][a-z0-9_-]{0,63}$' THEN
                RAISE EXCEPTION 'queue.enqueue: queue must be a string matching ^[a-z0-9][a-z0-9_-]{0,63}$' USING ERRCODE = '22023';
            END IF;
            v_queue := v_value->>0;
        WHEN 'group' THEN
            IF jsonb_typeof(v_value) IS DISTINCT FROM 'string' OR char_length(v_value->>0) NOT BETWEEN 1 AND 128
               OR v_value->>0 ~ '[[:cntrl:]]' THEN
                RAISE EXCEPTION 'queue.enqueue: group must be a string of 1..128 characters without control characters'
                    USING ERRCODE = '22023';
            END IF;
            v_group := v_value->>0;
        ELSE
            RAISE EXCEPTION 'queue.enqueue: unknown option % (p_options takes queue, group, backoff, timeout, removeOnComplete, removeOnFail)', v_key
                USING ERRCODE = '22023';
        END CASE;
    END LOOP;

    v_seq := nextval('queue.job_seq');
    v_state := CASE WHEN p_delay > interval '0' THEN 'delayed' ELSE 'waiting' END;

    INSERT INTO queue.jobs (seq, id, type, queue, group_key, state, priority, data, max_attempts, backoff_type,
                            backoff_delay_ms, timeout_ms, remove_on_complete, remove_on_fail, run_at)
    VALUES (v_seq, coalesce(p_job_id, v_seq::text), p_type, v_queue, v_group, v_state, p_priority, p_data, p_attempts,
            v_backoff_type, v_backoff_delay, v_timeout, v_remove_ok, v_remove_fail, now() + p_delay)
    ON CONFLICT (id) DO NOTHING
    RETURNING id INTO v_id;

    IF v_id IS NULL THEN
        RETURN p_job_id; -- idempotent: the job exists already
    END IF;

    INSERT INTO queue.job_events (job_id, type, queue, state, attempt) VALUES (v_id, p_type, v_queue, v_state, 0);
    IF v_state = 'waiting' THEN
        -- Delivered at commit; identical payloads in one transaction merge into one.
        PERFORM pg_notify('queue_jobs', v_queue);
    END IF;
    RETURN v_id;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- Groups cannot go back: the previous queue.enqueue has no group, and jobs lose theirs.
DROP FUNCTION queue.claim_limited(text, text[], integer, text, bigint);
DROP FUNCTION queue.pick_grouped(queue.queues, text[], integer, timestamptz);
DROP TABLE queue.queue_groups;
DROP TABLE queue.queue_starts;
ALTER TABLE queue.queues
    DROP COLUMN limited,
    DROP COLUMN concurrency,
    DROP COLUMN rate_limit,
    DROP COLUMN rate_period_ms,
    DROP COLUMN group_concurrency,
    DROP COLUMN group_rate_limit,
    DROP COLUMN group_rate_period_ms,
    DROP COLUMN fair,
    DROP COLUMN held_by,
    DROP COLUMN held_since,
    DROP COLUMN next_start_at;
DROP INDEX queue.jobs_group_claim_idx;
DROP INDEX queue.jobs_leased_idx;
DROP INDEX queue.job_counts_queue_state_idx;
ALTER TABLE queue.job_counts DROP COLUMN grouped;
CREATE INDEX jobs_leased_idx ON queue.jobs (seq) WHERE lease_owner IS NOT NULL;
ALTER TABLE queue.jobs DROP CONSTRAINT jobs_group_length, DROP COLUMN group_key;

-- queue.enqueue as it was, without the group.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION queue.enqueue(
    p_type     text,
    p_data     jsonb,
    p_priority integer  DEFAULT 5,
    p_delay    interval DEFAULT '0',
    p_attempts integer  DEFAULT 3,
    p_job_id   text     DEFAULT NULL,
    p_options  jsonb    DEFAULT '{}'
) RETURNS text
    LANGUAGE plpgsql
AS $$
DECLARE
    v_key           text;
    v_value         jsonb;
    v_backoff_key   text;
    v_backoff_type  text    := 'exponential';
    v_backoff_delay integer := 1000;
    v_timeout       integer;
    v_remove_ok     integer;
    v_remove_fail   integer;
    v_queue         text    := 'default';
    v_seq           bigint;
    v_id            text;
    v_state         text;
BEGIN
    IF p_type IS NULL OR p_type !~ '^[A-Za-z][A-Za-z0-9_.:-]{0,127}$' THEN
        RAISE EXCEPTION 'queue.enqueue: p_type must be 1..128 characters of [A-Za-z0-9_.:-] starting with a letter, got %',
            coalesce(quote_literal(p_type), 'NULL') USING ERRCODE = '22023';
    END IF;
    IF p_data IS NULL OR jsonb_typeof(p_data) <> 'object' THEN
        RAISE EXCEPTION 'queue.enqueue: p_data must be a JSON object' USING ERRCODE = '22023';
    END IF;
    IF octet_length(p_data::text) > 262144 THEN
        RAISE EXCEPTION 'queue.enqueue: p_data must be at most 256 KiB' USING ERRCODE = '22023';
    END IF;
    IF p_priority IS NULL OR p_priority NOT BETWEEN 1 AND 20 THEN
        RAISE EXCEPTION 'queue.enqueue: p_priority must be between 1 and 20' USING ERRCODE = '22023';
    END IF;
    IF p_delay IS NULL OR p_delay < interval '0' OR p_delay > interval '365 days' THEN
        RAISE EXCEPTION 'queue.enqueue: p_delay must be between 0 and 365 days' USING ERRCODE = '22023';
    END IF;
    IF p_attempts IS NULL OR p_attempts NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'queue.enqueue: p_attempts must be between 1 and 100' USING ERRCODE = '22023';
    END IF;
    IF p_job_id IS NOT NULL AND (p_job_id !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}$' OR p_job_id ~ '^[0-9]+$') THEN
        RAISE EXCEPTION 'queue.enqueue: p_job_id must be 1..255 characters of [A-Za-z0-9_.:-], start with a letter or digit, and not be all digits'
            USING ERRCODE = '22023';
    END IF;
    IF p_options IS NULL OR jsonb_typeof(p_options) <> 'object' THEN
        RAISE EXCEPTION 'queue.enqueue: p_options must be a JSON object' USING ERRCODE = '22023';
    END IF;

    FOR v_key, v_value IN SELECT key, value FROM jsonb_each(p_options) LOOP
        CASE v_key
        WHEN 'backoff' THEN
            IF jsonb_typeof(v_value) <> 'object' THEN
                RAISE EXCEPTION 'queue.enqueue: backoff must be an object' USING ERRCODE = '22023';
            END IF;
            FOR v_backoff_key IN SELECT jsonb_object_keys(v_value) LOOP
                IF v_backoff_key NOT IN ('type', 'delay') THEN
                    RAISE EXCEPTION 'queue.enqueue: unknown option backoff.%', v_backoff_key USING ERRCODE = '22023';
                END IF;
            END LOOP;
            IF v_value ? 'type' THEN
                IF v_value->'type' NOT IN ('"fixed"', '"exponential"') THEN
                    RAISE EXCEPTION 'queue.enqueue: backoff.type must be "fixed" or "exponential"' USING ERRCODE = '22023';
                END IF;
                v_backoff_type := v_value->>'type';
            END IF;
            IF v_value ? 'delay' THEN
                v_backoff_delay := queue.option_int('backoff.delay', v_value->'delay', 0, 86400000);
            END IF;
        WHEN 'timeout' THEN
            v_timeout := queue.option_int('timeout', v_value, 1, 86400000);
        WHEN 'removeOnComplete' THEN
            v_remove_ok := queue.option_retention('removeOnComplete', v_value);
        WHEN 'removeOnFail' THEN
            v_remove_fail := queue.option_retention('removeOnFail', v_value);
        WHEN 'queue' THEN
            IF jsonb_typeof(v_value) IS DISTINCT FROM 'string' OR v_value->>0 !~ '^[a-z0-9][a-z0-9_-]{0,63}$' THEN
                RAISE EXCEPTION 'queue.enqueue: queue must be a string matching ^[a-z0-9][a-z0-9_-]{0,63}$' USING ERRCODE = '22023';
            END IF;
            v_queue := v_value->>0;
        ELSE
            RAISE EXCEPTION 'queue.enqueue: unknown option % (p_options takes queue, backoff, timeout, removeOnComplete, removeOnFail)', v_key
                USING ERRCODE = '22023';
        END CASE;
    END LOOP;

    v_seq := nextval('queue.job_seq');
    v_state := CASE WHEN p_delay > interval '0' THEN 'delayed' ELSE 'waiting' END;

    INSERT INTO queue.jobs (seq, id, type, queue, state, priority, data, max_attempts, backoff_type,
                            backoff_delay_ms, timeout_ms, remove_on_complete, remove_on_fail, run_at)
    VALUES (v_seq, coalesce(p_job_id, v_seq::text), p_type, v_queue, v_state, p_priority, p_data, p_attempts,
            v_backoff_type, v_backoff_delay, v_timeout, v_remove_ok, v_remove_fail, now() + p_delay)
    ON CONFLICT (id) DO NOTHING
    RETURNING id INTO v_id;

    IF v_id IS NULL THEN
        RETURN p_job_id; -- idempotent: the job exists already
    END IF;

    INSERT INTO queue.job_events (job_id, type, queue, state, attempt) VALUES (v_id, p_type, v_queue, v_state, 0);
    IF v_state = 'waiting' THEN
        -- Delivered at commit; identical payloads in one transaction merge into one.
        PERFORM pg_notify('queue_jobs', v_queue);
    END IF;
    RETURN v_id;
END
$$;
-- +goose StatementEnd

-- The counts as they were, without the grouped dimension.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION queue.job_counts_on_insert() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO queue.job_counts (queue, state, type, n)
    SELECT queue, state, type, count(*) FROM new_rows GROUP BY queue, state, type;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION queue.job_counts_on_update() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- Heartbeats and progress change no state: their net change is zero and adds nothing.
    INSERT INTO queue.job_counts (queue, state, type, n)
    SELECT queue, state, type, sum(d)
    FROM (SELECT queue, state, type, 1 AS d FROM new_rows
          UNION ALL
          SELECT queue, state, type, -1 FROM old_rows) c
    GROUP BY queue, state, type
    HAVING sum(d) <> 0;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION queue.job_counts_on_delete() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO queue.job_counts (queue, state, type, n)
    SELECT queue, state, type, -count(*) FROM old_rows GROUP BY queue, state, type;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
