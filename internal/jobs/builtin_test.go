package jobs_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/config"
	"github.com/pgqueue/queue/internal/jobs"
	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/testutil"
	"github.com/pgqueue/queue/internal/worker"
)

// TestSeedExampleCompletesOnFreshInstall runs the README's example (EMAIL_SEND with the
// template "test", priority 10) through a real worker with the built-in registry on a
// fresh data folder, as cmd/worker builds it.
func TestSeedExampleCompletesOnFreshInstall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dataDir := t.TempDir()
	env := map[string]string{"DATA_DIR": dataDir, "REDIS_PREFIX": testutil.RedisPrefix(t)}
	cfg, err := config.LoadFrom(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	require.NoError(t, err)
	require.NoError(t, cfg.EnsureDirs())
	pool := testutil.NewPool(t)
	opts, err := redis.ParseURL(testutil.RedisURL(t))
	require.NoError(t, err)
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	client, err := queue.NewClient(ctx, pool, queue.ClientConfig{})
	require.NoError(t, err)
	t.Cleanup(client.Close)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	reg, err := jobs.Builtin(jobs.Deps{Config: cfg, Pool: pool, Redis: rdb, Logger: quiet,
		Stats: func(ctx context.Context) (any, error) { return client.Stats(ctx) }})
	require.NoError(t, err)
	w, err := worker.New(pool, client, reg, worker.Config{
		Concurrency: 2, PollInterval: 50 * time.Millisecond, Lease: 5 * time.Second,
		ShutdownTimeout: 5 * time.Second, RemoveOnComplete: -1, RemoveOnFail: -1, Logger: quiet,
	})
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })

	priority := 10
	email, err := client.Enqueue(ctx, pool, queue.NewJob{Type: "EMAIL_SEND",
		Data:    json.RawMessage(`{"to":"user@example.com","subject":"Test","template":"test"}`),
		Options: queue.Options{Priority: &priority}})
	require.NoError(t, err)
	// Data that skipped the API's check (a SQL enqueue) fails at once, without retries.
	var badID string
	require.NoError(t, pool.QueryRow(ctx, `SELECT queue.enqueue('USER_NOTIFICATION', '{"title":"no user"}')`).Scan(&badID))

	job := waitFinished(t, client, email.Job.ID)
	require.Equal(t, queue.StateCompleted, job.State, "error: %v", job.Error)
	var res jobs.EmailResult
	require.NoError(t, json.Unmarshal(job.Result, &res))
	require.Equal(t, "file", res.Transport)
	require.NotEmpty(t, res.MessageID)
	require.Equal(t, filepath.Join(cfg.MailDir, filepath.Base(res.Path)), res.Path)
	eml, err := os.ReadFile(res.Path)
	require.NoError(t, err)
	require.Contains(t, string(eml), "Subject: Test")

	bad := waitFinished(t, client, badID)
	require.Equal(t, queue.StateFailed, bad.State)
	require.Equal(t, 1, bad.AttemptsMade)
}

func waitFinished(t *testing.T, client *queue.Client, id string) queue.Job {
	t.Helper()
	var job queue.Job
	require.Eventually(t, func() bool {
		var err error
		job, err = client.Get(context.Background(), id)
		return err == nil && queue.Finished(job.State)
	}, 30*time.Second, 10*time.Millisecond)
	return job
}
