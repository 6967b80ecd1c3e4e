package testutil_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/testutil"
)

func TestPrivatePostgresRestarts(t *testing.T) {
	t.Parallel()
	s := testutil.StartPostgres(t)
	ctx := context.Background()
	count := func() int {
		conn, err := pgx.Connect(ctx, s.URL("queue"))
		require.NoError(t, err)
		defer conn.Close(ctx)
		var n int
		require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM queue.jobs").Scan(&n))
		return n
	}
	require.Zero(t, count())
	s.Restart(10 * time.Millisecond)
	require.Zero(t, count())
	s.Crash()
	_, err := pgx.Connect(ctx, s.URL("queue"))
	require.Error(t, err)
	s.Start()
	require.Zero(t, count())
}
