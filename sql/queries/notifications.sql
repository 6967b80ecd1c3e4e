-- name: NotificationInsert :one
INSERT INTO queue.notifications (user_id, title, body, type, metadata, job_id)
VALUES (sqlc.arg(user_id), sqlc.arg(title), sqlc.arg(body), sqlc.arg(type), sqlc.arg(metadata), sqlc.narg(job_id))
RETURNING *;

-- name: NotificationList :many
-- A user's notifications newest first, from after the keyset cursor (created_at, id) when
-- one is given.
SELECT *
FROM queue.notifications
WHERE user_id = sqlc.arg(user_id)
  AND (NOT sqlc.arg(unread_only)::boolean OR read_at IS NULL)
  AND (sqlc.narg(after_created_at)::timestamptz IS NULL
       OR (created_at, id) < (sqlc.narg(after_created_at)::timestamptz, sqlc.narg(after_id)::bigint))
ORDER BY created_at DESC, id DESC
LIMIT sqlc.arg(max_rows);

-- name: NotificationMarkRead :one
-- Idempotent: a notification read twice keeps its first read time.
UPDATE queue.notifications
SET read_at = coalesce(read_at, now())
WHERE id = sqlc.arg(id)
RETURNING *;
