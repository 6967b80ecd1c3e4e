package queue_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/testutil"
)

// The round trips on the latency path of one job, each alone on an idle database:
// go test ./internal/queue -run '^$' -bench . -benchtime 2000x
func benchSetup(b *testing.B) (*queue.Client, *pgxpool.Pool, queue.NewJob) {
	u := testutil.NewMigratedDatabase(b)
	pool := testutil.Pool(b, u)
	c, err := queue.NewClient(pool, queue.ClientConfig{Kinds: testutil.Kinds(testutil.Noop)})
	require.NoError(b, err)
	b.Cleanup(c.Close)
	return c, pool, queue.NewJob{Type: testutil.AnyName, Data: json.RawMessage(`{}`)}
}

func BenchmarkEnqueueOne(b *testing.B) {
	ctx := context.Background()
	c, pool, job := benchSetup(b)
	for b.Loop() {
		if _, err := c.Enqueue(ctx, pool, job); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkClaimOne(b *testing.B) {
	ctx := context.Background()
	c, pool, job := benchSetup(b)
	runner := queue.NewRunner(pool, "w")
	for b.Loop() {
		b.StopTimer()
		if _, err := c.Enqueue(ctx, pool, job); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		got, err := runner.Claim(ctx, queue.DefaultQueue, []string{testutil.AnyName}, 100, time.Minute)
		if err != nil || len(got) != 1 {
			b.Fatal(len(got), err)
		}
	}
}
