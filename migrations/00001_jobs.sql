-- The queue schema: jobs, their audit trail, and the queue-wide pause switch.

-- +goose Up
CREATE SCHEMA queue;

-- The known job types live in one immutable function rather than in a table with a
-- foreign key: a foreign key takes a KEY SHARE lock on the parent row for every insert,
-- which turns one hot type row into a multixact bottleneck under concurrent enqueues.
-- Adding a type is a migration that replaces queue.job_types() (existing rows stay valid)
-- and, since 00005, the literal list of the jobs_type_known CHECK.
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

CREATE SEQUENCE queue.job_seq AS bigint;

CREATE TABLE queue.jobs (
    -- Order of submission; generated ids are this number as text.
    seq                bigint      NOT NULL DEFAULT nextval('queue.job_seq'),
    id                 text        NOT NULL,
    type               text        NOT NULL,
    state              text        NOT NULL,
    priority           integer     NOT NULL DEFAULT 5,
    data               jsonb       NOT NULL DEFAULT '{}',
    result             jsonb,
    progress           integer     NOT NULL DEFAULT 0,
    attempts_made      integer     NOT NULL DEFAULT 0,
    max_attempts       integer     NOT NULL DEFAULT 3,
    backoff_type       text        NOT NULL DEFAULT 'exponential',
    backoff_delay_ms   integer     NOT NULL DEFAULT 1000,
    -- NULL: the worker's QUEUE_JOB_TIMEOUT.
    timeout_ms         integer,
    -- -1 keep (false), 0 remove at once (true), N keep the N most recent; NULL: the
    -- finishing worker's default, written into the row when the job finishes.
    remove_on_complete integer,
    remove_on_fail     integer,
    run_at             timestamptz NOT NULL DEFAULT now(),
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz,
    error              text,
    errors             jsonb       NOT NULL DEFAULT '[]',
    -- Set while a handler runs (also for a cancelled job whose handler has not returned).
    lease_owner        text,
    lease_expires_at   timestamptz,

    CONSTRAINT jobs_pkey PRIMARY KEY (seq),
    CONSTRAINT jobs_id_key UNIQUE (id),
    -- Generated ids are the seq; only custom ids pay for the pattern.
    CONSTRAINT jobs_id_format CHECK (id = seq::text OR id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}$'),
    CONSTRAINT jobs_type_known CHECK (queue.job_type_known(type)),
    CONSTRAINT jobs_state_known CHECK (state IN ('waiting', 'delayed', 'active', 'completed', 'failed', 'cancelled')),
    CONSTRAINT jobs_priority_range CHECK (priority BETWEEN 1 AND 20),
    CONSTRAINT jobs_data_object CHECK (jsonb_typeof(data) = 'object'),
    CONSTRAINT jobs_progress_range CHECK (progress BETWEEN 0 AND 100),
    CONSTRAINT jobs_attempts_made_range CHECK (attempts_made >= 0),
    CONSTRAINT jobs_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 100),
    CONSTRAINT jobs_backoff_type_known CHECK (backoff_type IN ('fixed', 'exponential')),
    CONSTRAINT jobs_backoff_delay_range CHECK (backoff_delay_ms BETWEEN 0 AND 86400000),
    CONSTRAINT jobs_timeout_range CHECK (timeout_ms BETWEEN 1 AND 86400000),
    CONSTRAINT jobs_remove_on_complete_range CHECK (remove_on_complete >= -1),
    CONSTRAINT jobs_remove_on_fail_range CHECK (remove_on_fail >= -1),
    CONSTRAINT jobs_errors_array CHECK (jsonb_typeof(errors) = 'array'),
    CONSTRAINT jobs_lease_pair CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL)),
    CONSTRAINT jobs_active_leased CHECK (state <> 'active' OR lease_owner IS NOT NULL),
    CONSTRAINT jobs_finished_at CHECK ((state IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);

-- Every claim and completion leaves a dead tuple: vacuum this table after a fixed number
-- of changes instead of a fraction of its size, and without cost-based sleeping.
ALTER TABLE queue.jobs SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

-- The claim walks this index in exactly its order, over runnable rows only.
CREATE INDEX jobs_claim_idx ON queue.jobs (priority DESC, run_at, seq) WHERE state = 'waiting';
-- Promotion of due delayed jobs (retries and future jobs); outside the claim index so a
-- million future jobs never slow the claim.
CREATE INDEX jobs_delayed_idx ON queue.jobs (run_at) WHERE state = 'delayed';
-- Leased rows (few: the sum of worker concurrency) for heartbeat-expiry rescue. The lease
-- expiry is not indexed so that heartbeats and progress can be HOT updates.
CREATE INDEX jobs_leased_idx ON queue.jobs (seq) WHERE lease_owner IS NOT NULL;
-- Retention (keep last N, clean) walks finished rows by state and age.
CREATE INDEX jobs_finished_idx ON queue.jobs (state, finished_at, seq)
    WHERE state IN ('completed', 'failed', 'cancelled');

-- Append-only audit trail: one row per state a job enters. It has no foreign key to jobs
-- because it outlives them.
CREATE TABLE queue.job_events (
    id      bigint      NOT NULL GENERATED ALWAYS AS IDENTITY,
    job_id  text        NOT NULL,
    type    text        NOT NULL,
    state   text        NOT NULL,
    at      timestamptz NOT NULL DEFAULT now(),
    attempt integer     NOT NULL DEFAULT 0,
    message text,
    worker  text,
    CONSTRAINT job_events_state_known CHECK (state IN ('waiting', 'delayed', 'active', 'completed', 'failed', 'cancelled'))
);
-- "What happened to job X", in order.
CREATE INDEX job_events_job_idx ON queue.job_events (job_id, id);
-- Time ranges and retention: rows arrive in time order, so a BRIN index is tiny and
-- nearly free to maintain.
CREATE INDEX job_events_at_idx ON queue.job_events USING brin (at);

-- +goose StatementBegin
CREATE FUNCTION queue.job_events_refuse_update() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'queue.job_events is append-only';
END
$$;
-- +goose StatementEnd

CREATE TRIGGER job_events_append_only BEFORE UPDATE ON queue.job_events
    FOR EACH ROW EXECUTE FUNCTION queue.job_events_refuse_update();

-- Queue-wide switches, one row.
CREATE TABLE queue.queue_state (
    singleton  boolean     NOT NULL DEFAULT true,
    paused     boolean     NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT queue_state_pkey PRIMARY KEY (singleton),
    CONSTRAINT queue_state_one_row CHECK (singleton)
);
INSERT INTO queue.queue_state DEFAULT VALUES;

-- +goose Down
DROP SCHEMA queue CASCADE;
