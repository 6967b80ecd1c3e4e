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
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	// As cmd/worker: CACHE_WARM's stats come from the client built on the registry.
	var client *queue.Client
	reg := jobs.Builtin(jobs.Deps{Settings: cfg.JobSettings(), Pool: pool, Redis: rdb, Logger: quiet,
		Stats: func(ctx context.Context) (jobs.Stats, error) {
			s, err := client.Stats(ctx)
			if err != nil {
				return jobs.Stats{}, err
			}
			out := jobs.Stats{Object: s, Paused: s.Paused, ByState: s.NonZero(), ByType: s.TypesByState()}
			return out, nil
		}})
	client, err = queue.NewClient(pool, queue.ClientConfig{Kinds: reg})
	require.NoError(t, err)
	t.Cleanup(client.Close)
	w, err := worker.New(pool, reg, worker.Config{
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
	require.NotNil(t, bad.Error)
	require.Contains(t, *bad.Error, "userId")
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

// TestBuiltinValidatesCacheWarmHostsWithConfig: with CACHE_WARM_ALLOWED_HOSTS set, a
// URL's host is checked at submission too (the API builds its registry this way).
func TestBuiltinValidatesCacheWarmHostsWithConfig(t *testing.T) {
	t.Parallel()
	cfg, err := config.LoadFrom(func(k string) (string, bool) {
		if k == "CACHE_WARM_ALLOWED_HOSTS" {
			return "api.example.com", true
		}
		return "", false
	})
	require.NoError(t, err)
	reg := jobs.Builtin(jobs.Deps{Settings: cfg.JobSettings()})
	kind, ok := reg.Kind(jobs.TypeCacheWarm)
	require.True(t, ok)
	require.Empty(t, kind.Check(json.RawMessage(`{"cacheKey":"k","dataSource":"https://API.example.com:443/x"}`)))
	require.Empty(t, kind.Check(json.RawMessage(`{"cacheKey":"k","dataSource":"stats"}`)))
	problems := kind.Check(json.RawMessage(`{"cacheKey":"k","dataSource":"http://169.254.169.254/latest"}`))
	require.Len(t, problems, 1, "%+v", problems)
	require.Equal(t, "dataSource", problems[0].Field)
	require.Equal(t, "the host 169.254.169.254 is not in CACHE_WARM_ALLOWED_HOSTS", problems[0].Message)
}
