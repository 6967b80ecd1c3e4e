package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/worker"
)

func inQueue(name string, data string) queue.NewJob {
	return job(data, queue.Options{Queue: &name})
}

// startDelays reads, from the audit trail, how long each job waited between its
// submission (waiting) and its first start (active).
func (b *bundle) startDelays(t *testing.T, ids []string) []time.Duration {
	t.Helper()
	var out []time.Duration
	for _, id := range ids {
		var d time.Duration
		require.NoError(t, b.pool.QueryRow(context.Background(), `
			SELECT (SELECT min(at) FROM queue.job_events WHERE job_id = $1 AND state = 'active')
			     - (SELECT min(at) FROM queue.job_events WHERE job_id = $1 AND state = 'waiting')`, id).Scan(&d))
		out = append(out, d)
	}
	return out
}

// A saturated queue keeps its slots to itself: with every slot of "emails" held by a
// slow handler, jobs of "default" in the same process still start and complete.
func TestBusyQueueDoesNotStarveAnother(t *testing.T) {
	t.Parallel()
	b := setup(t)
	release := make(chan struct{})
	var slowRunning atomic.Int32
	reg := registry(func(ctx context.Context, j *kinds.Job, d *testData) (any, error) {
		if d.Mode == "slow" {
			slowRunning.Add(1)
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return j.Queue, nil
	})
	cfg := testConfig()
	cfg.Queues = []worker.QueueConfig{{Name: "emails", Concurrency: 1}, {Name: queue.DefaultQueue, Concurrency: 2}}
	b.startWorker(t, reg, cfg)
	defer close(release)

	var slow []string
	for range 3 {
		slow = append(slow, b.enqueue(t, inQueue("emails", `{"mode":"slow"}`)).ID)
	}
	require.Eventually(t, func() bool { return slowRunning.Load() == 1 }, 10*time.Second, 5*time.Millisecond)

	var fast []string
	for range 10 {
		id := b.enqueue(t, job(`{}`, queue.Options{})).ID
		fast = append(fast, id)
		done := b.waitState(t, id, queue.StateCompleted)
		require.JSONEq(t, `"default"`, string(done.Result))
	}
	require.Equal(t, int32(1), slowRunning.Load(), "emails has one slot, still held")
	for _, id := range slow[1:] {
		j, err := b.client.Get(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, queue.StateWaiting, j.State, "the other emails jobs wait for emails' own slot")
	}
	delays := b.startDelays(t, fast)
	t.Logf("default jobs started after submission (emails saturated): %v", delays)
}

// Pausing one queue stops its claims everywhere; the other queues of the same worker go
// on; resuming starts the held jobs.
func TestPauseOneQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	reg := registry(func(ctx context.Context, j *kinds.Job, d *testData) (any, error) { return nil, nil })
	cfg := testConfig()
	cfg.Queues = []worker.QueueConfig{{Name: "emails", Concurrency: 2}, {Name: queue.DefaultQueue, Concurrency: 2}}
	b.startWorker(t, reg, cfg)

	require.NoError(t, b.client.SetQueuePaused(ctx, "emails", true))
	held := b.enqueue(t, inQueue("emails", `{}`))
	// Jobs of the other queue, submitted after, run to completion meanwhile.
	for range 3 {
		b.waitState(t, b.enqueue(t, job(`{}`, queue.Options{})).ID, queue.StateCompleted)
	}
	time.Sleep(5 * testConfig().PollInterval) // several polls of the paused queue
	j, err := b.client.Get(ctx, held.ID)
	require.NoError(t, err)
	require.Equal(t, queue.StateWaiting, j.State)
	q, err := b.client.Queue(ctx, "emails")
	require.NoError(t, err)
	require.True(t, q.Paused)
	require.EqualValues(t, 1, q.Counts.Waiting)

	require.NoError(t, b.client.SetQueuePaused(ctx, "emails", false))
	b.waitState(t, held.ID, queue.StateCompleted)
}

// Two worker processes serving different queues share one database: each claims only
// the jobs of its own queue.
func TestProcessesServeOnlyTheirQueues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	for _, p := range []struct{ id, queues string }{{"alpha-proc", "alpha:2"}, {"beta-proc", "beta:3"}} {
		helperProcessWith(t, b.url, p.id, 5*time.Second, "WORKER_HELPER_QUEUES="+p.queues)
	}
	var alpha, beta []string
	for i := range 20 {
		if i%2 == 0 {
			alpha = append(alpha, b.enqueue(t, inQueue("alpha", `{}`)).ID)
		} else {
			beta = append(beta, b.enqueue(t, inQueue("beta", `{}`)).ID)
		}
	}
	for _, id := range append(alpha, beta...) {
		b.waitState(t, id, queue.StateCompleted)
	}
	ranBy := func(ids []string) []string {
		rows, err := b.pool.Query(ctx, `SELECT DISTINCT worker FROM queue.job_events WHERE job_id = ANY($1) AND state = 'active'`, ids)
		require.NoError(t, err)
		var out []string
		for rows.Next() {
			var w string
			require.NoError(t, rows.Scan(&w))
			out = append(out, w)
		}
		require.NoError(t, rows.Err())
		return out
	}
	require.Equal(t, []string{"alpha-proc"}, ranBy(alpha))
	require.Equal(t, []string{"beta-proc"}, ranBy(beta))

	workers, err := b.client.Workers(ctx)
	require.NoError(t, err)
	byID := map[string]queue.Worker{}
	for _, w := range workers {
		byID[w.ID] = w
	}
	require.Equal(t, map[string]int{"alpha": 2}, byID["alpha-proc"].Queues)
	require.Equal(t, map[string]int{"beta": 3}, byID["beta-proc"].Queues)
}

// The registry of live workers: a row from start, kept by the heartbeat with the number
// of running jobs, removed at a graceful stop, and gone once a killed worker misses
// three heartbeats.
func TestRegistryOfLiveWorkers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	release := make(chan struct{})
	reg := registry(func(ctx context.Context, j *kinds.Job, d *testData) (any, error) {
		<-release
		return nil, nil
	})
	cfg := testConfig()
	cfg.ID = "registered"
	cfg.Lease = 600 * time.Millisecond // heartbeats every 200 ms
	cfg.Queues = []worker.QueueConfig{{Name: queue.DefaultQueue, Concurrency: 3}, {Name: "emails", Concurrency: 1}}
	stop := b.startWorker(t, reg, cfg)
	running := b.enqueue(t, job(`{}`, queue.Options{}))
	b.waitState(t, running.ID, queue.StateActive)

	find := func(id string) (queue.Worker, bool) {
		ws, err := b.client.Workers(ctx)
		require.NoError(t, err)
		for _, w := range ws {
			if w.ID == id {
				return w, true
			}
		}
		return queue.Worker{}, false
	}
	var w queue.Worker
	require.Eventually(t, func() bool {
		var ok bool
		w, ok = find("registered")
		return ok && w.Running == 1
	}, 10*time.Second, 20*time.Millisecond, "the heartbeat reports the running job")
	require.Equal(t, map[string]int{"default": 3, "emails": 1}, w.Queues)
	require.Equal(t, []string{testType}, w.Types)
	require.NotZero(t, w.PID)
	require.NotEmpty(t, w.Host)
	q, err := b.client.Queue(ctx, "emails")
	require.NoError(t, err, "a queue with a live worker exists even without jobs")
	require.Equal(t, 1, q.Workers)

	close(release)
	require.NoError(t, stop())
	_, ok := find("registered")
	require.False(t, ok, "a graceful stop removes the worker at once")

	killed := helperProcessWith(t, b.url, "killed", 600*time.Millisecond)
	require.Eventually(t, func() bool { _, ok := find("killed"); return ok }, 10*time.Second, 20*time.Millisecond)
	require.NoError(t, killed.Process.Signal(syscall.SIGKILL))
	_ = killed.Wait()
	require.Eventually(t, func() bool { _, ok := find("killed"); return !ok }, 10*time.Second, 50*time.Millisecond,
		"three missed heartbeats and it is no longer live")
	// The leader deletes the expired row.
	cfg = testConfig()
	cfg.ID = "leader"
	b.startWorker(t, registry(func(context.Context, *kinds.Job, *testData) (any, error) { return nil, nil }), cfg)
	require.Eventually(t, func() bool {
		return b.count(t, "SELECT count(*) FROM queue.workers WHERE id = 'killed'") == 0
	}, 10*time.Second, 50*time.Millisecond)
}

// A job whose type no live worker handles waits, and its queue says so.
func TestJobOfAnUnhandledTypeWaits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	b.startWorker(t, registry(func(context.Context, *kinds.Job, *testData) (any, error) { return nil, nil }), testConfig())
	var orphan string
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT queue.enqueue('NOBODY_HANDLES', '{}')`).Scan(&orphan))
	handled := b.enqueue(t, job(`{}`, queue.Options{}))
	b.waitState(t, handled.ID, queue.StateCompleted)
	j, err := b.client.Get(ctx, orphan)
	require.NoError(t, err)
	require.Equal(t, queue.StateWaiting, j.State, "the worker claims only the types it handles")
	require.Eventually(t, func() bool {
		q, err := b.client.Queue(ctx, queue.DefaultQueue)
		return err == nil && q.Workers == 1 && len(q.UnhandledTypes) == 1
	}, 10*time.Second, 20*time.Millisecond)
	q, err := b.client.Queue(ctx, queue.DefaultQueue)
	require.NoError(t, err)
	require.Equal(t, []string{"NOBODY_HANDLES"}, q.UnhandledTypes)
	raw, err := json.Marshal(q)
	require.NoError(t, err)
	require.Contains(t, string(raw), `"unhandledTypes":["NOBODY_HANDLES"]`)
}

func helperProcessWith(t *testing.T, u, id string, lease time.Duration, env ...string) *exec.Cmd {
	t.Helper()
	cmd := helperCommand(u, id, lease, env...)
	require.NoError(t, cmd.Start(), fmt.Sprintf("start helper %s", id))
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		}
	})
	return cmd
}

// The leader runs the periodic tasks that come with kinds (expired outputs, for the
// built-in ones); the other workers do not.
func TestLeaderRunsTheKindsTasks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var runs [2]atomic.Int32
	for i := range runs {
		reg := registry(func(context.Context, *kinds.Job, *testData) (any, error) { return nil, nil })
		reg.AddTask(kinds.Task{Name: "tick", Every: 20 * time.Millisecond, Run: func(context.Context) error {
			runs[i].Add(1)
			return nil
		}})
		cfg := testConfig()
		cfg.ID = fmt.Sprintf("tasks-%d", i)
		b.startWorker(t, reg, cfg)
	}
	require.Eventually(t, func() bool { return runs[0].Load()+runs[1].Load() >= 5 }, 10*time.Second, 10*time.Millisecond)
	leader := 0
	require.NoError(t, b.pool.QueryRow(context.Background(), `SELECT CASE holder WHEN 'tasks-1' THEN 1 ELSE 0 END FROM queue.leaders`).Scan(&leader))
	require.Zero(t, runs[1-leader].Load(), "only the leader runs them")
}
