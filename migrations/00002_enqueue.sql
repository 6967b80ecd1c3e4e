-- queue.enqueue: the SQL way in, for applications that enqueue inside their own
-- transaction. Go code in this repository uses the same checks (internal/queue).

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION queue.option_int(p_name text, p_value jsonb, p_min bigint, p_max bigint)
    RETURNS bigint
    LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF jsonb_typeof(p_value) IS DISTINCT FROM 'number' OR p_value::numeric <> trunc(p_value::numeric) THEN
        RAISE EXCEPTION 'queue.enqueue: % must be an integer', p_name USING ERRCODE = '22023';
    END IF;
    IF p_value::numeric < p_min OR p_value::numeric > p_max THEN
        RAISE EXCEPTION 'queue.enqueue: % must be between % and %', p_name, p_min, p_max USING ERRCODE = '22023';
    END IF;
    RETURN p_value::bigint;
END
$$;
-- +goose StatementEnd

-- Retention options: true = 0 (remove at once), false = -1 (keep), an integer N >= -1.
-- +goose StatementBegin
CREATE FUNCTION queue.option_retention(p_name text, p_value jsonb) RETURNS integer
    LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF jsonb_typeof(p_value) = 'boolean' THEN
        RETURN CASE WHEN p_value::boolean THEN 0 ELSE -1 END;
    END IF;
    RETURN queue.option_int(p_name, p_value, -1, 2147483647);
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION queue.enqueue(
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
        -- Delivered at commit; identical payloads in one transaction merge into one.
        PERFORM pg_notify('queue_jobs', '');
    END IF;
    RETURN v_id;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION queue.enqueue(text, jsonb, integer, interval, integer, text, jsonb);
DROP FUNCTION queue.option_retention(text, jsonb);
DROP FUNCTION queue.option_int(text, jsonb, bigint, bigint);
