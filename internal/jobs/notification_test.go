package jobs

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/notifications"
	"github.com/pgqueue/queue/internal/testutil"
	"github.com/pgqueue/queue/migrations"
)

func TestNotificationStoredPublishedListedMarkedRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, setupOpts{db: true})
	h := notificationKind(b.deps)

	channel := notifications.Channel(b.cfg.RedisPrefix, "user-1")
	sub := b.redis.Subscribe(ctx, channel)
	t.Cleanup(func() { _ = sub.Close() })
	_, err := sub.Receive(ctx) // the subscription is in place before anything is published
	require.NoError(t, err)

	res, err := run(t, h, obj{
		"userId": "user-1", "title": "Build finished", "body": "Your build <b>42</b> passed.",
		"type": "success", "metadata": obj{"build": 42, "big": json.Number("12345678901234567890")},
	})
	require.NoError(t, err)
	r := res.(NotificationResult)
	require.True(t, r.Published)
	require.Equal(t, channel, r.Channel)

	msg, err := sub.ReceiveMessage(ctx)
	require.NoError(t, err)
	var published map[string]any
	require.NoError(t, json.Unmarshal([]byte(msg.Payload), &published))
	require.Equal(t, r.NotificationID, published["id"])
	require.Equal(t, "Build finished", published["title"])

	list, next, err := notifications.List(ctx, b.pool, "user-1", false, 0, "")
	require.NoError(t, err)
	require.Empty(t, next)
	require.Len(t, list, 1)
	n := list[0]
	require.Equal(t, r.NotificationID, n.ID)
	require.Equal(t, "success", n.Type)
	require.JSONEq(t, `{"build": 42, "big": 12345678901234567890}`, string(n.Metadata))
	require.Contains(t, string(n.Metadata), "12345678901234567890", "metadata keeps its numbers exactly")
	require.Nil(t, n.ReadAt)

	// The JSON is exactly the API's notification object.
	b1, err := json.Marshal(n)
	require.NoError(t, err)
	var shape map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b1, &shape))
	keys := make([]string, 0, len(shape))
	for k := range shape {
		keys = append(keys, k)
	}
	require.ElementsMatch(t, []string{"id", "userId", "title", "body", "type", "metadata", "createdAt", "readAt"}, keys)
	require.Regexp(t, regexp.MustCompile(`^"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"$`), string(shape["createdAt"]))
	require.Equal(t, "null", string(shape["readAt"]))

	read, err := notifications.MarkRead(ctx, b.pool, n.ID)
	require.NoError(t, err)
	require.NotNil(t, read.ReadAt)
	again, err := notifications.MarkRead(ctx, b.pool, n.ID)
	require.NoError(t, err)
	require.Equal(t, read.ReadAt.Time, again.ReadAt.Time, "reading again keeps the first read time")
	unread, _, err := notifications.List(ctx, b.pool, "user-1", true, 0, "")
	require.NoError(t, err)
	require.Empty(t, unread)

	for _, id := range []string{"999999", "abc", "-1", ""} {
		_, err = notifications.MarkRead(ctx, b.pool, id)
		require.ErrorIs(t, err, notifications.ErrNotFound, id)
	}
}

func TestNotificationListPagesNewestFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, setupOpts{db: true})
	h := notificationKind(b.deps)
	for i := range 7 {
		_, err := run(t, h, obj{"userId": "u", "title": fmt.Sprint("n", i), "body": "b"})
		require.NoError(t, err)
	}
	_, err := run(t, h, obj{"userId": "someone-else", "title": "x", "body": "b"})
	require.NoError(t, err)
	// Same created_at for several rows: the id breaks the tie, so pages neither skip
	// nor repeat.
	_, err = b.pool.Exec(ctx, `UPDATE queue.notifications SET created_at = '2000-01-01T00:00:00Z' WHERE title IN ('n2', 'n3', 'n4')`)
	require.NoError(t, err)
	first, err := notifications.MarkRead(ctx, b.pool, mustNotificationID(t, b, "n5"))
	require.NoError(t, err)
	require.NotNil(t, first.ReadAt)

	var titles []string
	cursor := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 10)
		page, next, err := notifications.List(ctx, b.pool, "u", false, 3, cursor)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page), 3)
		for _, n := range page {
			titles = append(titles, n.Title)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	require.Equal(t, []string{"n6", "n5", "n1", "n0", "n4", "n3", "n2"}, titles)

	unread, _, err := notifications.List(ctx, b.pool, "u", true, 100, "")
	require.NoError(t, err)
	require.Len(t, unread, 6)

	_, _, err = notifications.List(ctx, b.pool, "u", false, 3, "not-a-cursor")
	require.ErrorIs(t, err, notifications.ErrInvalidCursor)
}

func mustNotificationID(t *testing.T, b *bundle, title string) string {
	t.Helper()
	var id int64
	require.NoError(t, b.pool.QueryRow(context.Background(), `SELECT id FROM queue.notifications WHERE title = $1`, title).Scan(&id))
	return fmt.Sprint(id)
}

func TestNotificationRedisDownStillStores(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, setupOpts{db: true})
	deadRedis := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = deadRedis.Close() })
	b.deps.Redis = deadRedis
	h := notificationKind(b.deps)

	res, err := run(t, h, obj{"userId": "u", "title": "t", "body": "b"})
	require.NoError(t, err, "a Redis failure does not fail the job")
	require.False(t, res.(NotificationResult).Published)
	list, _, err := notifications.List(ctx, b.pool, "u", false, 10, "")
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "info", list[0].Type, "type defaults to info")
	require.JSONEq(t, `{}`, string(list[0].Metadata))
}

func TestNotificationsMigrationDownUndoes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u := testutil.NewMigratedDatabase(t)
	pool := testutil.Pool(t, u)
	sqlDB, err := sql.Open("pgx", u)
	require.NoError(t, err)
	defer sqlDB.Close()
	p, err := migrations.NewProvider(sqlDB)
	require.NoError(t, err)

	exists := func() bool {
		var ok bool
		require.NoError(t, pool.QueryRow(ctx, `SELECT to_regclass('queue.notifications') IS NOT NULL`).Scan(&ok))
		return ok
	}
	require.True(t, exists())
	_, err = p.DownTo(ctx, 2)
	require.NoError(t, err)
	require.False(t, exists())
	var indexes int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE schemaname = 'queue' AND indexname LIKE 'notifications%'`).Scan(&indexes))
	require.Zero(t, indexes)
	_, err = p.Up(ctx)
	require.NoError(t, err)
	require.True(t, exists())
}
