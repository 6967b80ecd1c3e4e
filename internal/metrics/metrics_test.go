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

	"github.com/pgqueue/queue/internal/kinds"
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
	client, err := queue.NewClient(pool, queue.ClientConfig{Kinds: testutil.Kinds(nil), OnEnqueued: m.Enqueued})
	require.NoError(t, err)
	t.Cleanup(client.Close)
	metrics.RegisterDepth(reg, client.Stats)
	metrics.RegisterHeld(reg, client.Queues)
	metrics.RegisterRedis(reg, func() uint64 { return 0 }, func() uint64 { return 0 })

	// A job claimed by a worker that vanished, for the rescue counter.
	_, err = client.Enqueue(ctx, pool, queue.NewJob{Type: testutil.KindName, Data: json.RawMessage(`{}`)})
	require.NoError(t, err)
	claimed, err := queue.NewRunner(pool, "vanished").Claim(ctx, queue.DefaultQueue, []string{testutil.KindName}, 1, time.Millisecond)
	require.NoError(t, err)
	require.Len(t, claimed, 1)

	// A queue that starts one job a day: the second waits, held by the rate.
	_, err = client.SetQueueLimits(ctx, "limited", queue.QueueLimits{Rate: queue.To(queue.Rate{Limit: 1, Period: queue.MaxRatePeriodMs})})
	require.NoError(t, err)
	limited := queue.NewJob{Type: testutil.AnyName, Data: json.RawMessage(`{}`), Options: queue.Options{Queue: ptr("limited")}}
	_, err = client.EnqueueMany(ctx, pool, []queue.NewJob{limited, limited})
	require.NoError(t, err)

	reg2 := testutil.Kinds(func(ctx context.Context, j *kinds.Job, d *testutil.Data) (any, error) {
		if d.Fail != "" {
			return nil, errors.New(d.Fail)
		}
		return nil, nil
	})
	w, err := worker.New(pool, reg2, worker.Config{
		Queues:       []worker.QueueConfig{{Name: queue.DefaultQueue, Concurrency: 5}, {Name: "limited", Concurrency: 2}},
		PollInterval: 20 * time.Millisecond, RemoveOnComplete: -1, RemoveOnFail: -1, Observer: m,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() { stop(); <-done })

	_, err = client.EnqueueMany(ctx, pool, []queue.NewJob{
		{Type: testutil.KindName, Data: json.RawMessage(`{}`)},
		{Type: testutil.KindName, Data: json.RawMessage(`{"fail":"failing on purpose"}`), Options: queue.Options{Attempts: ptr(2), Backoff: &queue.BackoffOption{Type: "fixed", Delay: ptr(int64(0))}}},
	})
	require.NoError(t, err)

	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	names := []string{metrics.JobsEnqueued, metrics.JobsCompleted, metrics.JobsFailed, metrics.JobsRetried,
		metrics.JobsRescued, metrics.JobDuration, metrics.JobsByState, metrics.RedisErrors, metrics.EventsDropped,
		metrics.ClaimsHeld, metrics.HeldJobs}
	// Every name appears, with the values of what happened (the rescued job completes
	// after its rescue, so wait for all of it).
	want := []string{
		`queue_jobs_completed_total{type="TEST_JOB"} 2`, // the plain job and the rescued one
		`queue_jobs_failed_total{type="TEST_JOB"} 1`,
		`queue_jobs_retried_total{type="TEST_JOB"} 1`,
		`queue_jobs_rescued_total{type="TEST_JOB"} 1`,
		`queue_jobs_enqueued_total{type="TEST_JOB"} 3`,
		`queue_jobs_completed_total{type="TEST_ANY"} 1`, // the limited queue's one start
		`queue_jobs{state="completed"} 3`,
		`queue_claims_held_total{limit="rate",queue="limited"} `,
		`queue_held_jobs{limit="rate",queue="limited"} 1`,
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

// Observe counts outcomes by the state the finish left the job in, and rescues; starts,
// progress and states entered outside a run are not counted.
func TestObserveCountsOutcomesAndRescues(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := metrics.NewJobs(reg)
	job := &queue.Job{ID: "1", Type: "T", Queue: queue.DefaultQueue}
	for _, e := range []queue.Event{
		{Kind: queue.EventStarted, Job: job, State: queue.StateActive},
		{Kind: queue.EventProgress, Job: job, Progress: 10},
		{Kind: queue.EventEntered, Job: job, State: queue.StateWaiting},
		{Kind: queue.EventFinished, Job: job, State: queue.StateCompleted, Took: 2 * time.Millisecond},
		{Kind: queue.EventFinished, Job: job, State: queue.StateCompleted, Took: time.Millisecond},
		{Kind: queue.EventFinished, Job: job, State: queue.StateFailed, Took: time.Millisecond},
		{Kind: queue.EventFinished, Job: job, State: queue.StateWaiting, Took: time.Millisecond},
		{Kind: queue.EventFinished, Job: job, State: queue.StateDelayed, Took: time.Millisecond},
		{Kind: queue.EventFinished, Job: job, State: queue.StateCancelled, Took: time.Millisecond},
		{Kind: queue.EventRescued, Job: &queue.Job{ID: "2", Type: "R", State: queue.StateWaiting}},
		{Kind: queue.EventHeld, Queue: "mail", Limit: queue.LimitRate},
		{Kind: queue.EventHeld, Queue: "mail", Limit: queue.LimitRate},
		{Kind: queue.EventHeld, Queue: "mail", Limit: queue.LimitGroupConcurrency},
	} {
		m.Observe(e)
	}
	m.Enqueued("T", 4)

	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	body := string(b)
	for _, want := range []string{
		`queue_jobs_completed_total{type="T"} 2`,
		`queue_jobs_failed_total{type="T"} 1`,
		`queue_jobs_retried_total{type="T"} 2`,
		`queue_jobs_rescued_total{type="R"} 1`,
		`queue_jobs_enqueued_total{type="T"} 4`,
		`queue_job_duration_seconds_count{outcome="completed",type="T"} 2`,
		`queue_job_duration_seconds_count{outcome="failed",type="T"} 1`,
		`queue_job_duration_seconds_count{outcome="retried",type="T"} 2`,
		`queue_job_duration_seconds_count{outcome="cancelled",type="T"} 1`,
		`queue_claims_held_total{limit="rate",queue="mail"} 2`,
		`queue_claims_held_total{limit="groupConcurrency",queue="mail"} 1`,
	} {
		require.Contains(t, body, "\n"+want+"\n", body)
	}
	require.NotContains(t, body, `queue_jobs_rescued_total{type="T"}`, "only the rescue counts as one")
	require.NotContains(t, body, `outcome="active"`)
	require.NotContains(t, body, `outcome="waiting"`)
}
