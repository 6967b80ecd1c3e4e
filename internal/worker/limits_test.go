package worker_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/worker"
)

// runningGauge counts handlers running now and the most seen at once.
type runningGauge struct{ now, most atomic.Int32 }

func (g *runningGauge) enter() {
	n := g.now.Add(1)
	for {
		m := g.most.Load()
		if n <= m || g.most.CompareAndSwap(m, n) {
			return
		}
	}
}

func (g *runningGauge) leave() { g.now.Add(-1) }

// slowRegistry runs each job for its sleepMs, counted in g.
func slowRegistry(g *runningGauge) *kinds.Registry {
	return registry(func(ctx context.Context, j *kinds.Job, d *testData) (any, error) {
		g.enter()
		defer g.leave()
		select {
		case <-time.After(time.Duration(d.SleepMs) * time.Millisecond):
		case <-ctx.Done():
		}
		return nil, nil
	})
}

func (b *bundle) enqueueSlow(t *testing.T, q string, n, sleepMs int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = b.enqueue(t, inQueue(q, fmt.Sprintf(`{"sleepMs":%d}`, sleepMs))).ID
	}
	return ids
}

// A limit changed while workers run applies without a restart: lowered, it holds at
// once for jobs not yet started; raised, the workers use it without waiting for a poll
// (the change is announced through Postgres).
func TestLimitChangesApplyWhileRunning(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	var g runningGauge
	cfg := testConfig()
	cfg.PollInterval = time.Minute // only notifications can make this test pass in time
	cfg.Queues = []worker.QueueConfig{{Name: "exports", Concurrency: 10}}
	b.startWorker(t, slowRegistry(&g), cfg)
	_, err := b.client.SetQueueLimits(ctx, "exports", queue.QueueLimits{Concurrency: queue.To(2)})
	require.NoError(t, err)
	// The worker reads the new settings on the notification; until then the plain
	// claim leaves the limited queue alone, so nothing can exceed the limit.
	ids := b.enqueueSlow(t, "exports", 20, 100)
	require.Eventually(t, func() bool { return g.now.Load() == 2 }, 10*time.Second, 5*time.Millisecond)
	time.Sleep(150 * time.Millisecond)
	require.Equal(t, int32(2), g.most.Load(), "never more than 2 at once")

	_, err = b.client.SetQueueLimits(ctx, "exports", queue.QueueLimits{Concurrency: queue.To(5)})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return g.most.Load() == 5 }, 10*time.Second, 5*time.Millisecond,
		"the raised limit is used long before the next poll")
	for _, id := range ids {
		b.waitState(t, id, queue.StateCompleted)
	}
}

// A finish that frees a slot of a limited queue wakes the other workers: two worker
// processes share a queue limited to one job at a time, with a poll interval far longer
// than the whole run, and take turns without waiting for it.
func TestFreedSlotWakesAnotherWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	var g runningGauge
	_, err := b.client.SetQueueLimits(ctx, "smtp", queue.QueueLimits{Concurrency: queue.To(1)})
	require.NoError(t, err)
	for i := range 2 {
		cfg := testConfig()
		cfg.ID = fmt.Sprintf("smtp-%d", i)
		cfg.PollInterval = time.Minute
		cfg.Queues = []worker.QueueConfig{{Name: "smtp", Concurrency: 4}}
		b.startWorker(t, slowRegistry(&g), cfg)
	}
	ids := b.enqueueSlow(t, "smtp", 6, 30)
	for _, id := range ids {
		b.waitState(t, id, queue.StateCompleted)
	}
	require.Equal(t, int32(1), g.most.Load())
	workers := b.count(t, `SELECT count(DISTINCT worker) FROM queue.job_events WHERE state = 'active' AND queue = 'smtp'`)
	t.Logf("6 jobs of one slot ran on %d workers", workers)
}

// A rate limit's window reopens on a timer the worker sets from the claim: starts come
// as fast as the limit allows, not at the poll interval.
func TestRateLimitedQueueStartsWhenTheWindowReopens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	var g runningGauge
	_, err := b.client.SetQueueLimits(ctx, "api", queue.QueueLimits{Rate: queue.To(queue.Rate{Limit: 3, Period: 200})})
	require.NoError(t, err)
	cfg := testConfig()
	cfg.PollInterval = time.Minute
	cfg.Queues = []worker.QueueConfig{{Name: "api", Concurrency: 10}}
	b.startWorker(t, slowRegistry(&g), cfg)
	ids := b.enqueueSlow(t, "api", 9, 0)
	for _, id := range ids {
		b.waitState(t, id, queue.StateCompleted)
	}
	var first, last time.Time
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT min(at), max(at) FROM queue.job_events WHERE state = 'active' AND queue = 'api'`).
		Scan(&first, &last))
	require.GreaterOrEqual(t, last.Sub(first), 400*time.Millisecond, "9 starts at 3 per 200 ms span two reopened windows")
	q, err := b.client.Queue(ctx, "api")
	require.NoError(t, err)
	require.EqualValues(t, 9, q.Counts.Completed)
}
