package metrics_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/jobs"
	"github.com/pgqueue/queue/internal/metrics"
	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/testutil"
	"github.com/pgqueue/queue/internal/worker"
)

func ptr[T any](v T) *T { return &v }

// After a few jobs, every metric the README lists is on /metrics.
func TestEveryDocumentedMetricAppears(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	reg := prometheus.NewRegistry()
	m := metrics.NewJobs(reg)
	client, err := queue.NewClient(ctx, pool, queue.ClientConfig{OnEnqueued: m.Enqueued})
	require.NoError(t, err)
	t.Cleanup(client.Close)
	metrics.RegisterDepth(reg, client.Stats)
	metrics.RegisterRedis(reg, func() uint64 { return 0 }, func() uint64 { return 0 })

	// A job claimed by a worker that vanished, for the rescue counter.
	_, err = client.Enqueue(ctx, pool, queue.NewJob{Type: "CLEANUP", Data: json.RawMessage(`{}`)})
	require.NoError(t, err)
	_, err = client.Claim(ctx, "vanished", []string{"CLEANUP"}, 1, time.Millisecond)
	require.NoError(t, err)

	reg2 := jobs.NewRegistry()
	reg2.Register("CLEANUP", jobs.HandlerFunc(func(ctx context.Context, j *jobs.Job) (any, error) {
		var d struct{ Fail bool }
		_ = json.Unmarshal(j.Data, &d)
		if d.Fail {
			return nil, errors.New("failing on purpose")
		}
		return nil, nil
	}), nil)
	w, err := worker.New(pool, client, reg2, worker.Config{
		PollInterval: 20 * time.Millisecond, RemoveOnComplete: -1, RemoveOnFail: -1, Observer: m,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() { stop(); <-done })

	_, err = client.EnqueueMany(ctx, pool, []queue.NewJob{
		{Type: "CLEANUP", Data: json.RawMessage(`{}`)},
		{Type: "CLEANUP", Data: json.RawMessage(`{"fail":true}`), Options: queue.Options{Attempts: ptr(2), Backoff: &queue.BackoffOption{Type: "fixed", Delay: ptr(int64(0))}}},
	})
	require.NoError(t, err)

	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	names := []string{metrics.JobsEnqueued, metrics.JobsCompleted, metrics.JobsFailed, metrics.JobsRetried,
		metrics.JobsRescued, metrics.JobDuration, metrics.JobsByState, metrics.RedisErrors, metrics.EventsDropped}
	// Every name appears, with the values of what happened (the rescued job completes
	// after its rescue, so wait for all of it).
	want := []string{
		`queue_jobs_completed_total{type="CLEANUP"} 2`, // the plain job and the rescued one
		`queue_jobs_failed_total{type="CLEANUP"} 1`,
		`queue_jobs_retried_total{type="CLEANUP"} 1`,
		`queue_jobs_rescued_total{type="CLEANUP"} 1`,
		`queue_jobs_enqueued_total{type="CLEANUP"} 3`,
		`queue_jobs{state="completed"} 2`,
	}
	var body string
	require.Eventually(t, func() bool {
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		for _, n := range names {
			if !strings.Contains(body, "\n"+n+"{") && !strings.Contains(body, "\n"+n+" ") && !strings.Contains(body, "\n"+n+"_bucket{") {
				return false
			}
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				return false
			}
		}
		return true
	}, 20*time.Second, 50*time.Millisecond, "missing metrics or values in:\n%s", body)
}
