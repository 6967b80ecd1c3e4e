package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/testutil"
	"github.com/pgqueue/queue/internal/worker"
)

// TestMain lets a test run this binary as a separate worker process (to SIGKILL or
// SIGTERM it): with WORKER_HELPER_DB set, it runs helperWorker instead of the tests.
func TestMain(m *testing.M) {
	if u := os.Getenv("WORKER_HELPER_DB"); u != "" {
		os.Exit(helperWorker(u))
	}
	os.Exit(m.Run())
}

// helperWorker is a worker process whose test-kind handler sleeps for data.sleepMs,
// stopping early only if its context ends; it stops gracefully on SIGTERM. It serves
// WORKER_HELPER_QUEUES (name:concurrency, comma-separated; default "default:2").
func helperWorker(u string) int {
	ctx, stop := signalContext()
	defer stop()
	pool, err := pgxpool.New(ctx, u)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer pool.Close()
	reg := registry(func(ctx context.Context, j *kinds.Job, d *testData) (any, error) {
		select {
		case <-time.After(time.Duration(d.SleepMs) * time.Millisecond):
			return map[string]string{"by": os.Getenv("WORKER_HELPER_ID")}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	lease, _ := time.ParseDuration(os.Getenv("WORKER_HELPER_LEASE"))
	queues := []worker.QueueConfig{{Name: queue.DefaultQueue, Concurrency: 2}}
	if spec := os.Getenv("WORKER_HELPER_QUEUES"); spec != "" {
		queues = nil
		for _, entry := range strings.Split(spec, ",") {
			name, n, _ := strings.Cut(entry, ":")
			c, _ := strconv.Atoi(n)
			queues = append(queues, worker.QueueConfig{Name: name, Concurrency: c})
		}
	}
	w, err := worker.New(pool, reg, worker.Config{
		ID: os.Getenv("WORKER_HELPER_ID"), Queues: queues, PollInterval: 50 * time.Millisecond,
		Lease: lease, ShutdownTimeout: 10 * time.Second, RemoveOnComplete: -1, RemoveOnFail: -1,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := w.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signalNotify(ch)
	go func() {
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

type bundle struct {
	url    string
	pool   *pgxpool.Pool
	client *queue.Client
}

func setup(t *testing.T) *bundle {
	t.Helper()
	u := testutil.NewMigratedDatabase(t)
	pool := testutil.Pool(t, u)
	c, err := queue.NewClient(pool, queue.ClientConfig{Kinds: registry(nil)})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return &bundle{url: u, pool: pool, client: c}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testConfig() worker.Config {
	return worker.Config{
		Concurrency: 4, PollInterval: 50 * time.Millisecond, Lease: 5 * time.Second,
		ShutdownTimeout: 5 * time.Second, RemoveOnComplete: -1, RemoveOnFail: -1, Logger: quietLogger(),
	}
}

// startWorker runs a worker until the test ends (or until the returned stop is called,
// which waits for a graceful shutdown and returns Run's error).
func (b *bundle) startWorker(t *testing.T, reg *kinds.Registry, cfg worker.Config) (stop func() error) {
	t.Helper()
	w, err := worker.New(b.pool, reg, cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func (b *bundle) enqueue(t *testing.T, j queue.NewJob) queue.Job {
	t.Helper()
	r, err := b.client.Enqueue(context.Background(), b.pool, j)
	require.NoError(t, err)
	return r.Job
}

func (b *bundle) waitState(t *testing.T, id, state string) queue.Job {
	t.Helper()
	var job queue.Job
	require.Eventually(t, func() bool {
		var err error
		job, err = b.client.Get(context.Background(), id)
		return err == nil && job.State == state
	}, 30*time.Second, 10*time.Millisecond, "job %s never reached %s (last: %+v)", id, state, job.State)
	return job
}

func (b *bundle) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

func (b *bundle) auditStates(t *testing.T, id string) []string {
	t.Helper()
	rows, err := b.pool.Query(context.Background(), "SELECT state FROM queue.job_events WHERE job_id = $1 ORDER BY id", id)
	require.NoError(t, err)
	var states []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		states = append(states, s)
	}
	require.NoError(t, rows.Err())
	return states
}

func ptr[T any](v T) *T { return &v }

// testType is the kind these tests run; its data says what the handler should do.
const testType = "WORKER_TEST"

type testData struct {
	N       int    `json:"n"`
	SleepMs int    `json:"sleepMs"`
	Mode    string `json:"mode"`
	Fail    bool   `json:"fail"`
}

func job(data string, opts queue.Options) queue.NewJob {
	return queue.NewJob{Type: testType, Data: json.RawMessage(data), Options: opts}
}

// registry holds the test kind with handler h (nil: a client's registry).
func registry(h kinds.Handler[testData]) *kinds.Registry {
	return kinds.NewRegistry(kinds.Define(testType, h))
}

func TestPriorityOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	_, err := b.client.SetPaused(ctx, true)
	require.NoError(t, err)

	priorities := []int{1, 20, 5, 10, 1, 20}
	for i, p := range priorities {
		b.enqueue(t, job(fmt.Sprintf(`{"n":%d}`, i), queue.Options{Priority: ptr(p)}))
	}
	var mu sync.Mutex
	var order []int
	reg := registry(func(ctx context.Context, j *kinds.Job, d *testData) (any, error) {
		mu.Lock()
		order = append(order, d.N)
		mu.Unlock()
		return nil, nil
	})
	cfg := testConfig()
	cfg.Concurrency = 1
	b.startWorker(t, reg, cfg)

	_, err = b.client.SetPaused(ctx, false)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return b.count(t, "SELECT count(*) FROM queue.jobs WHERE state = 'completed'") == len(priorities)
	}, 30*time.Second, 10*time.Millisecond)

	mu.Lock()
	defer mu.Unlock()
	// priorities by index: 0:1 1:20 2:5 3:10 4:1 5:20
	require.Equal(t, []int{1, 5, 3, 2, 0, 4}, order, "20,20,10,5,1,1 with earlier submission first among equals")
}

func TestContentionEveryJobRunsOnce(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("10,000 jobs")
	}
	ctx := context.Background()
	b := setup(t)
	const total = 10_000
	for batch := 0; batch < total/1000; batch++ {
		var js []queue.NewJob
		for i := range 1000 {
			js = append(js, job(fmt.Sprintf(`{"n":%d}`, batch*1000+i), queue.Options{}))
		}
		_, err := b.client.EnqueueMany(ctx, b.pool, js)
		require.NoError(t, err)
	}

	var runs [total]atomic.Int32
	reg := registry(func(ctx context.Context, j *kinds.Job, d *testData) (any, error) {
		runs[d.N].Add(1)
		return nil, nil
	})
	for i := range 4 {
		cfg := testConfig()
		cfg.Concurrency = 8
		cfg.ID = fmt.Sprintf("contender-%d", i)
		b.startWorker(t, reg, cfg)
	}
	require.Eventually(t, func() bool {
		return b.count(t, "SELECT count(*) FROM queue.jobs WHERE state = 'completed'") == total
	}, 2*time.Minute, 50*time.Millisecond)

	for i := range runs {
		require.Equal(t, int32(1), runs[i].Load(), "job %d ran %d times", i, runs[i].Load())
	}
	require.Equal(t, total, b.count(t, "SELECT count(*) FROM queue.jobs"))
	require.Equal(t, total, b.count(t, "SELECT count(*) FROM queue.job_events WHERE state = 'completed'"))
	require.Equal(t, total, b.count(t, "SELECT count(*) FROM queue.job_events WHERE state = 'active'"))
	require.Equal(t, 4, b.count(t, "SELECT count(DISTINCT worker) FROM queue.job_events WHERE state = 'active'"), "all four workers took part")
}

// helperCommand runs this test binary as a worker process (helperWorker); env adds
// variables (WORKER_HELPER_QUEUES).
func helperCommand(u, id string, lease time.Duration, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "WORKER_HELPER_DB="+u, "WORKER_HELPER_ID="+id, "WORKER_HELPER_LEASE="+lease.String()), env...)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	return cmd
}

func helperProcess(t *testing.T, u, id string, lease time.Duration) *exec.Cmd {
	t.Helper()
	cmd := helperCommand(u, id, lease)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

func TestCrashedWorkerJobIsRescuedAndCompleted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	j := b.enqueue(t, job(`{"sleepMs": 60000}`, queue.Options{}))

	crashed := helperProcess(t, b.url, "doomed", time.Second)
	b.waitState(t, j.ID, queue.StateActive)
	require.NoError(t, crashed.Process.Signal(syscall.SIGKILL))
	_ = crashed.Wait()

	reg := registry(func(ctx context.Context, j *kinds.Job, d *testData) (any, error) { return "rescued", nil })
	cfg := testConfig()
	cfg.ID = "survivor"
	b.startWorker(t, reg, cfg)

	done := b.waitState(t, j.ID, queue.StateCompleted)
	require.Equal(t, 2, done.AttemptsMade)
	require.JSONEq(t, `"rescued"`, string(done.Result))
	require.Len(t, done.Errors, 1)
	require.Contains(t, done.Errors[0].Message, "lease expired: worker doomed")

	rows, err := b.pool.Query(ctx, "SELECT state, attempt, coalesce(worker, ''), coalesce(message, '') FROM queue.job_events WHERE job_id = $1 ORDER BY id", j.ID)
	require.NoError(t, err)
	type ev struct {
		state   string
		attempt int
		worker  string
		message string
	}
	var evs []ev
	for rows.Next() {
		var e ev
		require.NoError(t, rows.Scan(&e.state, &e.attempt, &e.worker, &e.message))
		evs = append(evs, e)
	}
	require.Len(t, evs, 5, "%+v", evs)
	require.Equal(t, ev{"waiting", 0, "", ""}, evs[0])
	require.Equal(t, ev{"active", 1, "doomed", ""}, evs[1])
	require.Equal(t, "waiting", evs[2].state)
	require.Contains(t, evs[2].message, "lease expired")
	require.Equal(t, ev{"active", 2, "survivor", ""}, evs[3])
	require.Equal(t, ev{"completed", 2, "survivor", ""}, evs[4])
}

func TestRetriesWithGrowingBackoff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	var calls atomic.Int32
	reg := registry(func(ctx context.Context, j *kinds.Job, d *testData) (any, error) {
		calls.Add(1)
		switch d.Mode {
		case "permanent":
			return nil, kinds.Permanentf("no such file")
		case "slow":
			<-ctx.Done()
			return nil, ctx.Err()
		case "panic":
			panic("boom")
		}
		return nil, fmt.Errorf("attempt %d failed", j.Attempt)
	})
	b.startWorker(t, reg, testConfig())

	flaky := b.enqueue(t, job(`{}`, queue.Options{Attempts: ptr(3), Backoff: &queue.BackoffOption{Type: "exponential", Delay: ptr(int64(300))}}))
	permanent := b.enqueue(t, job(`{"mode":"permanent"}`, queue.Options{Attempts: ptr(5)}))
	slow := b.enqueue(t, job(`{"mode":"slow"}`, queue.Options{Attempts: ptr(1), Timeout: ptr(int64(100))}))
	panicky := b.enqueue(t, job(`{"mode":"panic"}`, queue.Options{Attempts: ptr(1)}))

	f := b.waitState(t, flaky.ID, queue.StateFailed)
	require.Equal(t, 3, f.AttemptsMade)
	require.Len(t, f.Errors, 3)
	for i, e := range f.Errors {
		require.Equal(t, i+1, e.Attempt)
		require.Equal(t, fmt.Sprintf("attempt %d failed", i+1), e.Message)
	}
	require.Equal(t, "attempt 3 failed", *f.Error)
	require.NotNil(t, f.FinishedAt)
	require.Equal(t, []string{"waiting", "active", "delayed", "waiting", "active", "delayed", "waiting", "active", "failed"}, b.auditStates(t, flaky.ID))
	// Gaps between the starts of attempts grow: 300·U(.8,1) ms, then 600·U(.8,1) ms.
	var starts []time.Time
	rows, err := b.pool.Query(ctx, "SELECT at FROM queue.job_events WHERE job_id = $1 AND state = 'active' ORDER BY id", flaky.ID)
	require.NoError(t, err)
	for rows.Next() {
		var at time.Time
		require.NoError(t, rows.Scan(&at))
		starts = append(starts, at)
	}
	gap1, gap2 := starts[1].Sub(starts[0]), starts[2].Sub(starts[1])
	require.GreaterOrEqual(t, gap1, 240*time.Millisecond)
	require.GreaterOrEqual(t, gap2, 480*time.Millisecond)
	require.Greater(t, gap2, gap1)

	p := b.waitState(t, permanent.ID, queue.StateFailed)
	require.Equal(t, 1, p.AttemptsMade, "a permanent error uses one attempt")
	require.Equal(t, "no such file", *p.Error)

	s := b.waitState(t, slow.ID, queue.StateFailed)
	require.Contains(t, *s.Error, "timeout")

	pn := b.waitState(t, panicky.ID, queue.StateFailed)
	require.Contains(t, *pn.Error, "panic: boom")
}

func TestTimeoutIsRetried(t *testing.T) {
	t.Parallel()
	b := setup(t)
	reg := registry(func(ctx context.Context, j *kinds.Job, d *testData) (any, error) {
		if j.Attempt == 1 {
			<-ctx.Done() // overrun the timeout
			return nil, ctx.Err()
		}
		return "second time lucky", nil
	})
	b.startWorker(t, reg, testConfig())
	j := b.enqueue(t, job(`{}`, queue.Options{Timeout: ptr(int64(50)), Backoff: &queue.BackoffOption{Type: "fixed", Delay: ptr(int64(0))}}))
	done := b.waitState(t, j.ID, queue.StateCompleted)
	require.Equal(t, 2, done.AttemptsMade)
	require.Contains(t, done.Errors[0].Message, "timeout")
}

func TestPauseStopsClaimsAndResumeRestarts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	var ran atomic.Int32
	reg := registry(func(ctx context.Context, j *kinds.Job, d *testData) (any, error) { ran.Add(1); return nil, nil })
	b.startWorker(t, reg, testConfig())

	first := b.enqueue(t, job(`{}`, queue.Options{}))
	b.waitState(t, first.ID, queue.StateCompleted)

	paused, err := b.client.SetPaused(ctx, true)
	require.NoError(t, err)
	require.True(t, paused)
	held := b.enqueue(t, job(`{}`, queue.Options{}))
	// Ten poll intervals and a notification: still not claimed.
	time.Sleep(500 * time.Millisecond)
	j, err := b.client.Get(ctx, held.ID)
	require.NoError(t, err)
	require.Equal(t, queue.StateWaiting, j.State)
	require.Equal(t, int32(1), ran.Load())

	paused, err = b.client.SetPaused(ctx, false)
	require.NoError(t, err)
	require.False(t, paused)
	b.waitState(t, held.ID, queue.StateCompleted)
}

func TestGracefulShutdownFinishesInFlightJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	j := b.enqueue(t, job(`{"sleepMs": 700}`, queue.Options{}))
	proc := helperProcess(t, b.url, "graceful", 5*time.Second)
	b.waitState(t, j.ID, queue.StateActive)
	require.NoError(t, proc.Process.Signal(syscall.SIGTERM))
	require.NoError(t, proc.Wait(), "the worker exits 0")
	require.Equal(t, 0, proc.ProcessState.ExitCode())
	done, err := b.client.Get(context.Background(), j.ID)
	require.NoError(t, err)
	require.Equal(t, queue.StateCompleted, done.State, "the in-flight job finished before exit")
	require.JSONEq(t, `{"by":"graceful"}`, string(done.Result))
}

func TestShutdownHandsBackLongJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	started := make(chan struct{}, 1)
	var cause atomic.Value
	long := registry(func(ctx context.Context, j *kinds.Job, d *testData) (any, error) {
		started <- struct{}{}
		<-ctx.Done()
		cause.Store(context.Cause(ctx))
		return nil, ctx.Err()
	})
	cfg := testConfig()
	cfg.ShutdownTimeout = 200 * time.Millisecond
	cfg.ID = "leaving"
	stop := b.startWorker(t, long, cfg)
	j := b.enqueue(t, job(`{}`, queue.Options{}))
	<-started
	require.NoError(t, stop())
	require.Eventually(t, func() bool { return cause.Load() != nil }, 5*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, cause.Load().(error), worker.ErrShutdown)

	back, err := b.client.Get(context.Background(), j.ID)
	require.NoError(t, err)
	require.Equal(t, queue.StateWaiting, back.State)
	require.Equal(t, 0, back.AttemptsMade, "the attempt is given back")
	require.Nil(t, back.LeaseOwner)

	reg := registry(func(ctx context.Context, j *kinds.Job, d *testData) (any, error) { return j.Attempt, nil })
	cfg = testConfig()
	cfg.ID = "successor"
	b.startWorker(t, reg, cfg)
	done := b.waitState(t, j.ID, queue.StateCompleted)
	require.JSONEq(t, `1`, string(done.Result), "the successor ran it as attempt 1")
	require.Equal(t, []string{"waiting", "active", "waiting", "active", "completed"}, b.auditStates(t, j.ID))
}

func TestCancelActiveJobStopsItsHandler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	started := make(chan struct{}, 1)
	var cause atomic.Value
	reg := registry(func(ctx context.Context, j *kinds.Job, d *testData) (any, error) {
		started <- struct{}{}
		<-ctx.Done()
		cause.Store(context.Cause(ctx))
		return nil, ctx.Err()
	})
	b.startWorker(t, reg, testConfig())
	j := b.enqueue(t, job(`{}`, queue.Options{}))
	<-started

	c, err := b.client.Cancel(ctx, j.ID)
	require.NoError(t, err)
	require.Equal(t, queue.StateCancelled, c.State)
	require.Eventually(t, func() bool { return cause.Load() != nil }, 5*time.Second, 5*time.Millisecond)
	require.ErrorIs(t, cause.Load().(error), worker.ErrJobCancelled)
	require.Eventually(t, func() bool {
		got, err := b.client.Get(ctx, j.ID)
		return err == nil && got.LeaseOwner == nil
	}, 5*time.Second, 10*time.Millisecond, "the lease is released once the handler returns")
	got, err := b.client.Get(ctx, j.ID)
	require.NoError(t, err)
	require.Equal(t, queue.StateCancelled, got.State)
	require.Equal(t, []string{"waiting", "active", "cancelled"}, b.auditStates(t, j.ID))

	_, err = b.client.Cancel(ctx, j.ID)
	require.ErrorIs(t, err, queue.ErrConflict)
	_, err = b.client.Cancel(ctx, "no-such-job")
	require.ErrorIs(t, err, queue.ErrNotFound)
}

func TestRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	reg := registry(func(ctx context.Context, j *kinds.Job, d *testData) (any, error) {
		if d.Fail {
			return nil, errors.New("nope")
		}
		return nil, nil
	})
	cfg := testConfig()
	cfg.Concurrency = 1
	b.startWorker(t, reg, cfg)

	gone := b.enqueue(t, job(`{}`, queue.Options{RemoveOnComplete: ptr(queue.Retention(0))}))
	require.Eventually(t, func() bool {
		_, err := b.client.Get(ctx, gone.ID)
		return errors.Is(err, queue.ErrNotFound)
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{"waiting", "active", "completed"}, b.auditStates(t, gone.ID), "audit rows outlive the job")

	var completed, failed []string
	for range 8 {
		completed = append(completed, b.enqueue(t, job(`{}`, queue.Options{RemoveOnComplete: ptr(queue.Retention(3))})).ID)
		failed = append(failed, b.enqueue(t, job(`{"fail":true}`, queue.Options{Attempts: ptr(1), RemoveOnFail: ptr(queue.Retention(2))})).ID)
	}
	require.Eventually(t, func() bool {
		return b.count(t, "SELECT count(*) FROM queue.job_events WHERE state IN ('completed', 'failed')") == 17
	}, 20*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		return b.count(t, "SELECT count(*) FROM queue.jobs WHERE state = 'completed'") == 3 &&
			b.count(t, "SELECT count(*) FROM queue.jobs WHERE state = 'failed'") == 2
	}, 10*time.Second, 20*time.Millisecond)
	// The most recent ones are kept (concurrency 1: submission order is finishing order).
	require.Equal(t, 3, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = ANY($1)", completed[5:]))
	require.Equal(t, 2, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = ANY($1)", failed[6:]))
	require.Equal(t, 8, b.count(t, "SELECT count(*) FROM queue.job_events WHERE state = 'failed'"))
}

func TestRescueFailsJobWithoutAttemptsLeft(t *testing.T) {
	t.Parallel()
	b := setup(t)
	j := b.enqueue(t, job(`{"sleepMs": 60000}`, queue.Options{Attempts: ptr(1)}))
	crashed := helperProcess(t, b.url, "doomed", 500*time.Millisecond)
	b.waitState(t, j.ID, queue.StateActive)
	require.NoError(t, crashed.Process.Signal(syscall.SIGKILL))
	_ = crashed.Wait()

	b.startWorker(t, registry(func(ctx context.Context, j *kinds.Job, d *testData) (any, error) { return nil, nil }), testConfig())
	f := b.waitState(t, j.ID, queue.StateFailed)
	require.Equal(t, 1, f.AttemptsMade)
	require.Contains(t, *f.Error, "lease expired")
	require.NotNil(t, f.FinishedAt)
}

// A handler whose result or error Postgres cannot store (a NUL) fails alone: the other
// jobs finished in the same batch are recorded, none runs twice.
func TestUnstorableOutcomeDoesNotSinkTheBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var runs atomic.Int32
	reg := registry(func(ctx context.Context, j *kinds.Job, d *testData) (any, error) {
		runs.Add(1)
		switch d.Mode {
		case "nul-result":
			return map[string]string{"text": "a\x00b"}, nil
		case "nul-error":
			return nil, kinds.Permanent(errors.New("bad \x00 byte and \xff invalid UTF-8"))
		}
		return "fine", nil
	})
	cfg := testConfig()
	cfg.Concurrency = 8
	b.startWorker(t, reg, cfg)
	var ids []string
	for i := range 12 {
		mode := ""
		switch i % 4 {
		case 1:
			mode = "nul-result"
		case 2:
			mode = "nul-error"
		}
		ids = append(ids, b.enqueue(t, job(fmt.Sprintf(`{"mode":%q}`, mode), queue.Options{Attempts: ptr(1)})).ID)
	}
	for i, id := range ids {
		switch i % 4 {
		case 1:
			f := b.waitState(t, id, queue.StateFailed)
			require.Contains(t, *f.Error, `\u0000`)
		case 2:
			f := b.waitState(t, id, queue.StateFailed)
			require.Equal(t, "bad  byte and \uFFFD invalid UTF-8", *f.Error)
		default:
			b.waitState(t, id, queue.StateCompleted)
		}
	}
	require.Equal(t, int32(len(ids)), runs.Load(), "every job ran exactly once")
}
