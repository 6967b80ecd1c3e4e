package queue_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/testutil"
)

// The round trips on the latency path of one job, each alone on an idle database:
// go test ./internal/queue -run '^$' -bench . -benchtime 2000x
func BenchmarkEnqueueOne(b *testing.B) {
	ctx := context.Background()
	u := testutil.NewMigratedDatabase(b)
	pool := testutil.Pool(b, u)
	c, err := queue.NewClient(ctx, pool, queue.ClientConfig{})
	require.NoError(b, err)
	b.Cleanup(c.Close)
	job := queue.NewJob{Type: "CLEANUP", Data: json.RawMessage(`{}`)}
	for b.Loop() {
		if _, err := c.Enqueue(ctx, pool, job); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkClaimOne(b *testing.B) {
	ctx := context.Background()
	u := testutil.NewMigratedDatabase(b)
	pool := testutil.Pool(b, u)
	c, err := queue.NewClient(ctx, pool, queue.ClientConfig{})
	require.NoError(b, err)
	b.Cleanup(c.Close)
	job := queue.NewJob{Type: "CLEANUP", Data: json.RawMessage(`{}`)}
	for b.Loop() {
		b.StopTimer()
		if _, err := c.Enqueue(ctx, pool, job); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		got, err := c.Claim(ctx, "w", []string{"CLEANUP"}, 100, time.Minute)
		if err != nil || len(got) != 1 {
			b.Fatal(len(got), err)
		}
	}
}
