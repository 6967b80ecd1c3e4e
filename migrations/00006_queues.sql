-- Named queues, a registry of live workers, and job types that are no longer listed in
-- the schema.
--
-- Job types are plug-ins of the code that runs them: the API, the Go client and the
-- worker know them from one registry, so the schema only checks a type's length and a new
-- type needs no migration. A job whose type no live worker handles simply waits. The
-- shapes of type and queue names are checked where jobs are made (queue.enqueue, the Go
-- clients): Postgres evaluates every CHECK on every UPDATE, and two regular expressions
-- there cost 12 us of server CPU per enqueued job and 30 us per drained one (paired
-- bench runs), against nothing measurable for a length.
--
-- Every job belongs to a queue (default 'default'). The claim index leads with the queue,
-- so a worker's claim for one queue walks only that queue's waiting rows, in exactly
-- (priority DESC, run_at, seq) order: a million jobs waiting in another queue cost it
-- nothing.

-- +goose Up
ALTER TABLE queue.jobs
    DROP CONSTRAINT jobs_type_known,
    ADD CONSTRAINT jobs_type_length CHECK (char_length(type) BETWEEN 1 AND 128),
    ADD COLUMN queue text NOT NULL DEFAULT 'default',
    ADD CONSTRAINT jobs_queue_length CHECK (char_length(queue) BETWEEN 1 AND 64);

DROP FUNCTION queue.job_type_known(text);
DROP FUNCTION queue.job_types();

DROP INDEX queue.jobs_claim_idx;
CREATE INDEX jobs_claim_idx ON queue.jobs (queue, priority DESC, run_at, seq) WHERE state = 'waiting';

-- The audit trail says which queue each state was entered in (per-queue throughput
-- from plain SQL, and the dashboard's charts).
ALTER TABLE queue.job_events ADD COLUMN queue text NOT NULL DEFAULT 'default';

-- Per-queue settings. A queue needs no row to exist: a job names its queue and a worker
-- serves it. A row holds what an operator set (today the pause switch).
CREATE TABLE queue.queues (
    name       text        NOT NULL,
    paused     boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT queues_pkey PRIMARY KEY (name),
    CONSTRAINT queues_name_shape CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$')
);

-- Live worker processes, kept by each worker's heartbeat and removed at its graceful
-- stop. A worker that stops heartbeating is gone once expires_at passes (three missed
-- heartbeats); the maintenance leader deletes such rows.
CREATE TABLE queue.workers (
    id           text        NOT NULL,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    -- {"queue name": concurrency}
    queues       jsonb       NOT NULL,
    -- the job types it has handlers for
    types        text[]      NOT NULL,
    running      integer     NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    CONSTRAINT workers_pkey PRIMARY KEY (id),
    CONSTRAINT workers_queues_object CHECK (jsonb_typeof(queues) = 'object')
);

-- Counts gain the queue: deltas per (queue, state, type). Every existing job is in the
-- default queue, so the existing rows are too.
LOCK TABLE queue.jobs IN SHARE ROW EXCLUSIVE MODE;
ALTER TABLE queue.job_counts ADD COLUMN queue text NOT NULL DEFAULT 'default';

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

-- queue.enqueue: any well-formed type; p_options also takes the queue. Workers are woken
-- per queue: the notification's payload is the queue's name.
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

-- +goose Down
-- Jobs of other queues or of types the old list does not name cannot go back: this
-- refuses (the constraint below fails) rather than lose them.
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
    v_seq           bigint;
    v_id            text;
    v_state         text;
BEGIN
    IF p_type IS NULL OR NOT queue.job_type_known(p_type) THEN
        RAISE EXCEPTION 'queue.enqueue: unknown job type %', coalesce(quote_literal(p_type), 'NULL')
            USING ERRCODE = '22023';
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
        ELSE
            RAISE EXCEPTION 'queue.enqueue: unknown option % (p_options takes backoff, timeout, removeOnComplete, removeOnFail)', v_key
                USING ERRCODE = '22023';
        END CASE;
    END LOOP;

    v_seq := nextval('queue.job_seq');
    v_state := CASE WHEN p_delay > interval '0' THEN 'delayed' ELSE 'waiting' END;

    INSERT INTO queue.jobs (seq, id, type, state, priority, data, max_attempts, backoff_type,
                            backoff_delay_ms, timeout_ms, remove_on_complete, remove_on_fail, run_at)
    VALUES (v_seq, coalesce(p_job_id, v_seq::text), p_type, v_state, p_priority, p_data, p_attempts,
            v_backoff_type, v_backoff_delay, v_timeout, v_remove_ok, v_remove_fail, now() + p_delay)
    ON CONFLICT (id) DO NOTHING
    RETURNING id INTO v_id;

    IF v_id IS NULL THEN
        RETURN p_job_id; -- idempotent: the job exists already
    END IF;

    INSERT INTO queue.job_events (job_id, type, state, attempt) VALUES (v_id, p_type, v_state, 0);
    IF v_state = 'waiting' THEN
        PERFORM pg_notify('queue_jobs', '');
    END IF;
    RETURN v_id;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION queue.job_counts_on_insert() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO queue.job_counts (state, type, n)
    SELECT state, type, count(*) FROM new_rows GROUP BY state, type;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION queue.job_counts_on_update() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO queue.job_counts (state, type, n)
    SELECT state, type, sum(d)
    FROM (SELECT state, type, 1 AS d FROM new_rows
          UNION ALL
          SELECT state, type, -1 FROM old_rows) c
    GROUP BY state, type
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
    INSERT INTO queue.job_counts (state, type, n)
    SELECT state, type, -count(*) FROM old_rows GROUP BY state, type;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

ALTER TABLE queue.job_counts DROP COLUMN queue;
DROP TABLE queue.workers;
DROP TABLE queue.queues;
ALTER TABLE queue.job_events DROP COLUMN queue;

DROP INDEX queue.jobs_claim_idx;
CREATE INDEX jobs_claim_idx ON queue.jobs (priority DESC, run_at, seq) WHERE state = 'waiting';

-- +goose StatementBegin
CREATE FUNCTION queue.job_types() RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT ARRAY['EMAIL_SEND', 'USER_NOTIFICATION', 'DATA_EXPORT',
                 'FILE_PROCESS', 'CACHE_WARM', 'CLEANUP']
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION queue.job_type_known(job_type text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT job_type = ANY (queue.job_types())
$$;
-- +goose StatementEnd

ALTER TABLE queue.jobs
    DROP CONSTRAINT jobs_queue_length,
    DROP COLUMN queue,
    DROP CONSTRAINT jobs_type_length,
    ADD CONSTRAINT jobs_type_known CHECK (type = ANY (ARRAY['EMAIL_SEND', 'USER_NOTIFICATION',
        'DATA_EXPORT', 'FILE_PROCESS', 'CACHE_WARM', 'CLEANUP']));
