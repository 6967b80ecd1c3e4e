-- A cheaper jobs_type_known. Postgres prepares each CHECK expression once per statement,
-- and a SQL function in one is inlined, that is parsed again from its text, every time:
-- queue.job_type_known cost about 80 µs per statement, a fifth of a single-row enqueue
-- and a quarter of a one-job claim (pgbench, see docs/BENCHMARKS.md). A literal list
-- costs nothing to prepare. It must equal queue.job_types() (which queue.enqueue and the
-- clients read): TestTypeCheckMatchesJobTypes holds the two together, and adding a type
-- replaces both in one migration. Re-adding the constraint scans queue.jobs once.

-- +goose Up
ALTER TABLE queue.jobs
    DROP CONSTRAINT jobs_type_known,
    ADD CONSTRAINT jobs_type_known CHECK (type = ANY (ARRAY['EMAIL_SEND', 'USER_NOTIFICATION',
        'DATA_EXPORT', 'FILE_PROCESS', 'CACHE_WARM', 'CLEANUP']));

-- +goose Down
ALTER TABLE queue.jobs
    DROP CONSTRAINT jobs_type_known,
    ADD CONSTRAINT jobs_type_known CHECK (queue.job_type_known(type));
