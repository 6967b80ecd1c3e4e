-- In-app notifications written by USER_NOTIFICATION jobs and read over the API.

-- +goose Up
CREATE TABLE queue.notifications (
    id         bigint      NOT NULL GENERATED ALWAYS AS IDENTITY,
    user_id    text        NOT NULL,
    title      text        NOT NULL,
    body       text        NOT NULL,
    type       text        NOT NULL DEFAULT 'info',
    metadata   jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    read_at    timestamptz,
    -- The job that wrote the row, for tracing; no foreign key, since jobs are removed.
    job_id     text,

    CONSTRAINT notifications_pkey PRIMARY KEY (id),
    CONSTRAINT notifications_user_id_length CHECK (char_length(user_id) BETWEEN 1 AND 128),
    CONSTRAINT notifications_title_length CHECK (char_length(title) BETWEEN 1 AND 200),
    CONSTRAINT notifications_body_length CHECK (char_length(body) BETWEEN 1 AND 5000),
    CONSTRAINT notifications_type_known CHECK (type IN ('info', 'warning', 'error', 'success')),
    CONSTRAINT notifications_metadata_object CHECK (jsonb_typeof(metadata) = 'object')
);

-- A user's notifications newest first, in the exact order (and keyset) of the listing.
CREATE INDEX notifications_user_idx ON queue.notifications (user_id, created_at DESC, id DESC);

-- +goose Down
DROP TABLE queue.notifications;
