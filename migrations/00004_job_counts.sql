-- Exact job counts by state and type without counting the table: every statement that
-- changes queue.jobs appends its net change per (state, type) to queue.job_counts, and
-- the maintenance leader folds those rows together. Stats then sum a few rows instead of
-- scanning millions (count(*) GROUP BY state is what makes queue dashboards hurt production).
-- Statement-level triggers with transition tables cost one small INSERT per statement,
-- not per row, and nothing contends: deltas are appended, never updated in place.

-- +goose Up
-- No write may slip between the initial count and the triggers (goose runs this file in
-- one transaction; the lock holds until its end).
LOCK TABLE queue.jobs IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE queue.job_counts (
    state text   NOT NULL,
    type  text   NOT NULL,
    n     bigint NOT NULL
);

INSERT INTO queue.job_counts (state, type, n)
SELECT state, type, count(*) FROM queue.jobs GROUP BY state, type;

-- +goose StatementBegin
CREATE FUNCTION queue.job_counts_on_insert() RETURNS trigger
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
CREATE FUNCTION queue.job_counts_on_update() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- Heartbeats and progress change no state: their net change is zero and adds nothing.
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
CREATE FUNCTION queue.job_counts_on_delete() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO queue.job_counts (state, type, n)
    SELECT state, type, -count(*) FROM old_rows GROUP BY state, type;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION queue.job_counts_on_truncate() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    DELETE FROM queue.job_counts;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER jobs_count_insert AFTER INSERT ON queue.jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION queue.job_counts_on_insert();
CREATE TRIGGER jobs_count_update AFTER UPDATE ON queue.jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION queue.job_counts_on_update();
CREATE TRIGGER jobs_count_delete AFTER DELETE ON queue.jobs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION queue.job_counts_on_delete();
CREATE TRIGGER jobs_count_truncate AFTER TRUNCATE ON queue.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION queue.job_counts_on_truncate();

-- +goose Down
DROP TRIGGER jobs_count_truncate ON queue.jobs;
DROP TRIGGER jobs_count_delete ON queue.jobs;
DROP TRIGGER jobs_count_update ON queue.jobs;
DROP TRIGGER jobs_count_insert ON queue.jobs;
DROP FUNCTION queue.job_counts_on_truncate();
DROP FUNCTION queue.job_counts_on_delete();
DROP FUNCTION queue.job_counts_on_update();
DROP FUNCTION queue.job_counts_on_insert();
DROP TABLE queue.job_counts;
