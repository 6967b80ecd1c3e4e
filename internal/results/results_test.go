package results_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/results"
	"github.com/pgqueue/queue/internal/testutil"
	"github.com/pgqueue/queue/internal/worker"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newStore(t *testing.T, url string) (*results.Store, redis.UniversalClient) {
	t.Helper()
	opts, err := redis.ParseURL(url)
	require.NoError(t, err)
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	return results.New(rdb, testutil.RedisPrefix(t), time.Hour, quiet()), rdb
}

func waitHealthy(t *testing.T, h *results.Hub) {
	t.Helper()
	require.Eventually(t, h.Healthy, 10*time.Second, 5*time.Millisecond, "hub never subscribed")
}

// pending holds the rest of a batch a test has begun to read, per subscription.
var pending sync.Map // *results.Subscription -> []results.Event

// next returns a subscription's next event, batch after batch.
func next(t *testing.T, sub *results.Subscription) results.Event {
	t.Helper()
	if rest, ok := pending.Load(sub); ok && len(rest.([]results.Event)) > 0 {
		evs := rest.([]results.Event)
		pending.Store(sub, evs[1:])
		return evs[0]
	}
	select {
	case batch, ok := <-sub.C:
		require.True(t, ok, "subscription closed")
		require.NotEmpty(t, batch, "a batch is never empty")
		pending.Store(sub, batch[1:])
		return batch[0]
	case <-time.After(10 * time.Second):
		t.Fatal("no event arrived")
	}
	return results.Event{}
}

func TestPublishSnapshotAndEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, rdb := newStore(t, testutil.RedisURL(t))
	hub := store.NewHub()
	t.Cleanup(hub.Close)
	waitHealthy(t, hub)
	sub := hub.Subscribe(results.Filter{ID: "7"}, 16)
	other := hub.Subscribe(results.Filter{Type: testutil.AnyName}, 16)

	pub := store.NewPublisher()
	job := &queue.Job{ID: "7", Type: testutil.KindName, Queue: "q7", State: queue.StateCompleted, Result: json.RawMessage(`{"ok":true}`), Errors: []queue.AttemptError{}}
	pub.Publish(results.JobEvent(&queue.Job{ID: "8", Type: testutil.KindName, Queue: "q7"}, queue.StateActive), nil) // filtered out
	pub.Publish(results.JobEvent(job, queue.StateCompleted), job)
	pub.Close()

	ev := next(t, sub)
	require.Equal(t, "job", ev.Event)
	require.Equal(t, "7", ev.ID)
	require.Equal(t, testutil.KindName, ev.Type)
	require.Equal(t, "q7", ev.Queue, "events carry the job's queue")
	require.Equal(t, queue.StateCompleted, ev.State)

	got, ok := store.Job(ctx, "7")
	require.True(t, ok)
	require.JSONEq(t, `{"ok":true}`, string(got.Result))
	require.Equal(t, "q7", got.Queue, "snapshots carry the job's queue")
	ttl := rdb.TTL(ctx, store.JobKey("7")).Val()
	require.Greater(t, ttl, 59*time.Minute)

	store.Forget(ctx, "7")
	_, ok = store.Job(ctx, "7")
	require.False(t, ok)
	select {
	case ev := <-other.C:
		t.Fatalf("a type filter let through %+v", ev)
	default:
	}
}

func TestRedisOutageIsSurvivedAndEventsResume(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	store, _ := newStore(t, srv.URL())
	hub := store.NewHub()
	t.Cleanup(hub.Close)
	waitHealthy(t, hub)
	pub := store.NewPublisher()
	t.Cleanup(pub.Close)

	srv.Stop()
	require.Eventually(t, func() bool { return !hub.Healthy() }, 15*time.Second, 10*time.Millisecond)
	start := time.Now()
	for range 100 {
		pub.Publish(results.JobEvent(&queue.Job{ID: "1", Type: testutil.KindName}, queue.StateCompleted), &queue.Job{ID: "1"})
	}
	require.Less(t, time.Since(start), time.Second, "publishing never blocks on Redis")
	require.Eventually(t, func() bool { return store.Errors() > 0 }, 10*time.Second, 10*time.Millisecond)
	_, ok := store.Job(context.Background(), "1")
	require.False(t, ok)

	srv.Start()
	waitHealthy(t, hub)
	sub := hub.Subscribe(results.Filter{ID: "2"}, 4)
	require.Eventually(t, func() bool {
		pub.Publish(results.JobEvent(&queue.Job{ID: "2", Type: testutil.KindName}, queue.StateActive), nil)
		select {
		case batch := <-sub.C:
			return len(batch) > 0 && batch[0].ID == "2"
		case <-time.After(200 * time.Millisecond):
			return false
		}
	}, 15*time.Second, 10*time.Millisecond, "events flow again after Redis restarts, without a new hub")
}

func TestSlowSubscriberIsDisconnected(t *testing.T) {
	t.Parallel()
	store, rdb := newStore(t, testutil.RedisURL(t))
	hub := store.NewHub()
	t.Cleanup(hub.Close)
	waitHealthy(t, hub)
	slow := hub.Subscribe(results.Filter{}, 2)
	// Ten messages (batches) while the subscriber reads none: it may fall two behind.
	for range 10 {
		ev := results.JobEvent(&queue.Job{ID: "x", Type: testutil.KindName}, queue.StateActive)
		b, err := json.Marshal([]results.Event{ev})
		require.NoError(t, err)
		require.NoError(t, rdb.Publish(context.Background(), store.EventsChannel(), b).Err())
	}
	require.Eventually(t, func() bool {
		for {
			select {
			case _, ok := <-slow.C:
				if !ok {
					return true
				}
			default:
				return false
			}
		}
	}, 10*time.Second, 10*time.Millisecond, "the slow subscriber's channel is closed")
}

func TestStatsCacheCollapsesConcurrentRequests(t *testing.T) {
	t.Parallel()
	store, _ := newStore(t, testutil.RedisURL(t))
	var computed atomic.Int32
	cache := store.NewStatsCache(2*time.Second, func(ctx context.Context) ([]byte, error) {
		computed.Add(1)
		time.Sleep(20 * time.Millisecond) // a query in flight while others ask
		return []byte(`{"waiting":1}`), nil
	})
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := cache.Get(context.Background())
			require.NoError(t, err)
			require.JSONEq(t, `{"waiting":1}`, string(b))
		}()
	}
	wg.Wait()
	require.LessOrEqual(t, computed.Load(), int32(2))
	require.GreaterOrEqual(t, computed.Load(), int32(1))

	// A second process (another cache on the same Redis) reads Redis, not Postgres.
	again := store.NewStatsCache(2*time.Second, func(ctx context.Context) ([]byte, error) {
		computed.Add(1)
		return []byte(`{"waiting":2}`), nil
	})
	b, err := again.Get(context.Background())
	require.NoError(t, err)
	require.JSONEq(t, `{"waiting":1}`, string(b))
	require.LessOrEqual(t, computed.Load(), int32(2))
}

// The worker publishes active and completed events, and a removed job's snapshot stays:
// stored by the worker before it removes the row (Config.Snapshots, as cmd/worker runs
// it), or published by the observer when the worker has no Snapshots.
func TestWorkerPublishesEventsAndSnapshots(t *testing.T) {
	t.Parallel()
	for _, withSnapshots := range []bool{true, false} {
		name := "worker stores snapshots"
		if !withSnapshots {
			name = "observer only"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := startPublishingWorkerWith(t, withSnapshots, func(ctx context.Context, j *kinds.Job, _ *testutil.Data) (any, error) {
				j.SetProgress(50)
				return map[string]int{"deleted": 3}, nil
			})
			client, pool, hub, store := p.client, p.pool, p.hub, p.store

			sub := hub.Subscribe(results.Filter{Type: testutil.KindName}, 64)
			r, err := client.Enqueue(ctx, pool, queue.NewJob{Type: testutil.KindName, Data: json.RawMessage(`{}`),
				Options: queue.Options{RemoveOnComplete: ptr(queue.Retention(queue.RemoveAtOnce))}})
			require.NoError(t, err)

			var kinds []string
			for len(kinds) < 3 {
				ev := next(t, sub)
				require.Equal(t, r.Job.ID, ev.ID)
				require.Equal(t, queue.DefaultQueue, ev.Queue)
				if ev.Event == "progress" {
					require.Equal(t, 50, *ev.Progress)
					kinds = append(kinds, "progress")
				} else {
					kinds = append(kinds, ev.State)
				}
			}
			require.Equal(t, []string{"active", "progress", "completed"}, kinds)

			_, err = client.Get(ctx, r.Job.ID)
			require.ErrorIs(t, err, queue.ErrNotFound, "removeOnComplete: true removed the row")
			snap, ok := store.Job(ctx, r.Job.ID)
			require.True(t, ok, "the snapshot outlives the row")
			require.Equal(t, queue.StateCompleted, snap.State)
			require.Equal(t, queue.DefaultQueue, snap.Queue)
			require.JSONEq(t, `{"deleted":3}`, string(snap.Result))
			require.Equal(t, 100, snap.Progress)
			require.NotNil(t, snap.FinishedAt)
		})
	}
}

func ptr[T any](v T) *T { return &v }

// A retried job's events show every state it enters, the promotion back to waiting too.
func TestWorkerPublishesEveryStateOfARetry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := startPublishingWorker(t, func(ctx context.Context, j *kinds.Job, _ *testutil.Data) (any, error) {
		if j.Attempt == 1 {
			return nil, errors.New("try again")
		}
		return nil, nil
	})
	client, pool, hub := p.client, p.pool, p.hub

	sub := hub.Subscribe(results.Filter{Type: testutil.KindName}, 64)
	r, err := client.Enqueue(ctx, pool, queue.NewJob{Type: testutil.KindName, Data: json.RawMessage(`{}`),
		Options: queue.Options{Backoff: &queue.BackoffOption{Type: "fixed", Delay: ptr(int64(50))}}})
	require.NoError(t, err)
	var states []string
	for len(states) < 5 {
		ev := next(t, sub)
		require.Equal(t, r.Job.ID, ev.ID)
		require.Equal(t, queue.DefaultQueue, ev.Queue)
		states = append(states, ev.State)
	}
	// The promotion is published by the leader's goroutine and the claim by the fetch
	// loop's, so "waiting" and the second "active" may arrive in either order.
	require.Equal(t, []string{"active", "delayed"}, states[:2])
	require.ElementsMatch(t, []string{"waiting", "active"}, states[2:4])
	require.Equal(t, "completed", states[4])
}

type publishing struct {
	pool   *pgxpool.Pool
	client *queue.Client
	store  *results.Store
	hub    *results.Hub
}

// elsewhereName is a kind the client accepts and the worker does not run.
const elsewhereName = "TEST_ELSEWHERE"

type elsewhereData struct{}

// startPublishingWorker runs a worker whose TEST_JOB handler is h, whose observer
// publishes to Redis and which stores the snapshots of jobs it removes, with a hub
// subscribed to the same prefix.
func startPublishingWorker(t *testing.T, h kinds.Handler[testutil.Data]) publishing {
	t.Helper()
	return startPublishingWorkerWith(t, true, h)
}

// startPublishingWorkerWith is startPublishingWorker; withSnapshots false leaves the
// worker's Config.Snapshots unset (only the observer writes snapshots).
func startPublishingWorkerWith(t *testing.T, withSnapshots bool, h kinds.Handler[testutil.Data]) publishing {
	t.Helper()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	accepted := testutil.Kinds(nil)
	accepted.Add(kinds.Define[elsewhereData](elsewhereName, nil))
	client, err := queue.NewClient(pool, queue.ClientConfig{Kinds: accepted})
	require.NoError(t, err)
	t.Cleanup(client.Close)
	store, _ := newStore(t, testutil.RedisURL(t))
	hub := store.NewHub()
	t.Cleanup(hub.Close)
	waitHealthy(t, hub)
	pub := store.NewPublisher()
	t.Cleanup(pub.Close)

	cfg := worker.Config{
		PollInterval: 20 * time.Millisecond, Logger: quiet(), RemoveOnComplete: -1, RemoveOnFail: -1,
		Observer: results.NewWorkerObserver(pub),
	}
	if withSnapshots {
		cfg.Snapshots = store.Snapshots()
	}
	w, err := worker.New(pool, testutil.Kinds(h), cfg)
	require.NoError(t, err)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() { stop(); <-done })
	return publishing{pool: pool, client: client, store: store, hub: hub}
}

// A job a rescue fails (no attempt left) is finished like any other: it gets a snapshot.
func TestRescuedFailedJobGetsASnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := startPublishingWorker(t, testutil.Noop)
	// A type the worker does not run, claimed by a worker that vanished at once.
	r, err := p.client.Enqueue(ctx, p.pool, queue.NewJob{Type: elsewhereName, Data: json.RawMessage(`{}`),
		Options: queue.Options{Attempts: ptr(1)}})
	require.NoError(t, err)
	claimed, err := queue.NewRunner(p.pool, "vanished").Claim(ctx, queue.DefaultQueue, []string{elsewhereName}, 1, time.Millisecond)
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	require.Eventually(t, func() bool {
		snap, ok := p.store.Job(ctx, r.Job.ID)
		return ok && snap.State == queue.StateFailed && snap.Error != nil && snap.Queue == queue.DefaultQueue
	}, 10*time.Second, 20*time.Millisecond)
}

// finishedJob is a completed job finished ago (not finished at all when ago is 0).
func finishedJob(id string, ago time.Duration) queue.Job {
	now := time.Now()
	j := queue.Job{ID: id, Type: testutil.KindName, Queue: "snaps", State: queue.StateCompleted,
		Data: json.RawMessage(`{"n":1}`), Priority: 5, AttemptsMade: 1, MaxAttempts: 3, Progress: 100,
		Result: json.RawMessage(`{"id":"` + id + `"}`), Errors: []queue.AttemptError{},
		CreatedAt: queue.Timestamp{Time: now.Add(-ago - time.Second)}, RunAt: queue.Timestamp{Time: now.Add(-ago - time.Second)}}
	if ago > 0 {
		at := queue.Timestamp{Time: now.Add(-ago)}
		j.StartedAt, j.FinishedAt = &at, &at
	}
	return j
}

// Store writes the API's job JSON of each job, to expire RESULT_TTL after the job
// finished; a job finished longer ago than that is not written. Missing names the jobs
// without a snapshot.
func TestSnapshotsStoreWithTheRemainingTTLAndMissingNamesTheRest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, rdb := newStore(t, testutil.RedisURL(t)) // RESULT_TTL: one hour
	snaps := store.Snapshots()
	require.Equal(t, time.Hour, snaps.TTL())

	recent := finishedJob("recent", 10*time.Minute)
	unfinished := finishedJob("unfinished", 0)
	stale := finishedJob("stale", 2*time.Hour)
	missing, err := snaps.Missing(ctx, []string{recent.ID, unfinished.ID, stale.ID})
	require.NoError(t, err)
	require.Equal(t, []string{recent.ID, unfinished.ID, stale.ID}, missing)

	require.NoError(t, snaps.Store(ctx, []queue.Job{recent, unfinished, stale}))

	for _, j := range []queue.Job{recent, unfinished} {
		b, err := rdb.Get(ctx, store.JobKey(j.ID)).Bytes()
		require.NoError(t, err, j.ID)
		want, err := json.Marshal(&j)
		require.NoError(t, err)
		require.JSONEq(t, string(want), string(b), "the snapshot is the API's job object")
		got, ok := store.Job(ctx, j.ID)
		require.True(t, ok)
		require.Equal(t, "snaps", got.Queue)
	}
	// RESULT_TTL minus the time since the job finished.
	ttl := rdb.PTTL(ctx, store.JobKey(recent.ID)).Val()
	require.Greater(t, ttl, 49*time.Minute)
	require.LessOrEqual(t, ttl, 50*time.Minute)
	ttl = rdb.PTTL(ctx, store.JobKey(unfinished.ID)).Val()
	require.Greater(t, ttl, 59*time.Minute)
	require.LessOrEqual(t, ttl, time.Hour)
	require.Zero(t, rdb.Exists(ctx, store.JobKey(stale.ID)).Val(), "a job finished longer ago than RESULT_TTL is not written")

	missing, err = snaps.Missing(ctx, []string{recent.ID, "never", unfinished.ID, stale.ID})
	require.NoError(t, err)
	require.Equal(t, []string{"never", stale.ID}, missing)
	missing, err = snaps.Missing(ctx, []string{recent.ID, unfinished.ID})
	require.NoError(t, err)
	require.Nil(t, missing, "every snapshot stored: nothing missing")

	// Another prefix is another store: its snapshots are not these.
	other, _ := newStore(t, testutil.RedisURL(t))
	missing, err = other.Snapshots().Missing(ctx, []string{recent.ID})
	require.NoError(t, err)
	require.Equal(t, []string{recent.ID}, missing)
}

// With Redis down, Missing cannot tell and Store cannot store: both say so, so the
// engine removes nothing on their word.
func TestSnapshotsFailWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	store, rdb := newStore(t, srv.URL())
	snaps := store.Snapshots()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job := finishedJob("1", time.Minute)
	require.NoError(t, snaps.Store(ctx, []queue.Job{job}))
	missing, err := snaps.Missing(ctx, []string{"1", "2"})
	require.NoError(t, err)
	require.Equal(t, []string{"2"}, missing)

	// Full under noeviction: reads still work, every write is refused.
	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "1").Err())
	errs := store.Errors()
	require.Error(t, snaps.Store(ctx, []queue.Job{finishedJob("3", time.Minute)}), "a refused write fails the store")
	require.Greater(t, store.Errors(), errs)
	missing, err = snaps.Missing(ctx, []string{"1", "3"})
	require.NoError(t, err)
	require.Equal(t, []string{"3"}, missing)
	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "0").Err())

	srv.Stop()
	errs = store.Errors()
	missing, err = snaps.Missing(ctx, []string{"1", "2"})
	require.Error(t, err, "Redis down: Missing cannot tell")
	require.Nil(t, missing)
	require.Error(t, snaps.Store(ctx, []queue.Job{finishedJob("4", time.Minute)}), "Redis down: Store fails")
	require.GreaterOrEqual(t, store.Errors(), errs+2, "each failure is counted")

	srv.Start()
	require.Eventually(t, func() bool {
		return snaps.Store(ctx, []queue.Job{finishedJob("4", time.Minute)}) == nil
	}, 15*time.Second, 50*time.Millisecond, "Store works again once Redis is back")
	missing, err = snaps.Missing(ctx, []string{"1", "4"})
	require.NoError(t, err)
	require.Equal(t, []string{"1"}, missing, "the restarted Redis lost 1 (no persistence) and has 4")
}

// The worker observer publishes a finished job's event, with its snapshot unless the
// worker stored the snapshot itself (Stored).
func TestObserverWritesNoSnapshotTheWorkerStored(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, rdb := newStore(t, testutil.RedisURL(t))
	hub := store.NewHub()
	t.Cleanup(hub.Close)
	waitHealthy(t, hub)
	sub := hub.Subscribe(results.Filter{Type: testutil.KindName}, 16)
	pub := store.NewPublisher()
	t.Cleanup(pub.Close)
	obs := results.NewWorkerObserver(pub)

	started := queue.Timestamp{Time: time.Now().Add(-time.Second)}
	running := func(id string) *queue.Job {
		return &queue.Job{ID: id, Type: testutil.KindName, Queue: "obs", State: queue.StateActive,
			Data: json.RawMessage(`{}`), AttemptsMade: 1, MaxAttempts: 3, Errors: []queue.AttemptError{},
			CreatedAt: started, RunAt: started, StartedAt: &started}
	}
	obs.Observe(queue.Event{Kind: queue.EventFinished, Job: running("stored"), State: queue.StateCompleted,
		Result: []byte(`{"by":"observer"}`), Took: time.Millisecond, Stored: true})
	ev := next(t, sub)
	require.Equal(t, "stored", ev.ID)
	require.Equal(t, "obs", ev.Queue)
	require.Equal(t, queue.StateCompleted, ev.State)
	// The publisher writes a batch's snapshots before its events: by now it would be there.
	require.Zero(t, rdb.Exists(ctx, store.JobKey("stored")).Val(), "Stored: the observer writes no snapshot")

	obs.Observe(queue.Event{Kind: queue.EventFinished, Job: running("unstored"), State: queue.StateCompleted,
		Result: []byte(`{"by":"observer"}`), Took: time.Millisecond})
	ev = next(t, sub)
	require.Equal(t, "unstored", ev.ID)
	require.Equal(t, queue.StateCompleted, ev.State)
	snap, ok := store.Job(ctx, "unstored")
	require.True(t, ok, "not Stored: the observer writes the snapshot")
	require.Equal(t, queue.StateCompleted, snap.State)
	require.Equal(t, "obs", snap.Queue)
	require.JSONEq(t, `{"by":"observer"}`, string(snap.Result))
	require.Equal(t, 100, snap.Progress)
	require.NotNil(t, snap.FinishedAt)
	require.Greater(t, rdb.PTTL(ctx, store.JobKey("unstored")).Val(), 59*time.Minute)

	// A failed job's snapshot carries the attempt's error.
	obs.Observe(queue.Event{Kind: queue.EventFinished, Job: running("failed"), State: queue.StateFailed,
		Error: "boom", Took: time.Millisecond})
	ev = next(t, sub)
	require.Equal(t, "failed", ev.ID)
	require.Equal(t, queue.StateFailed, ev.State)
	snap, ok = store.Job(ctx, "failed")
	require.True(t, ok)
	require.Equal(t, queue.StateFailed, snap.State)
	require.NotNil(t, snap.Error)
	require.Equal(t, "boom", *snap.Error)
	require.Len(t, snap.Errors, 1)
}

// A job removed as it finishes has its snapshot stored by the worker (Snapshots.Store),
// not through the publisher: a progress report the publisher still had queued must not
// overwrite that finished snapshot with a stale running one.
func TestProgressDoesNotOverwriteAStoredSnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, _ := newStore(t, testutil.RedisURL(t))
	hub := store.NewHub()
	t.Cleanup(hub.Close)
	waitHealthy(t, hub)
	sub := hub.Subscribe(results.Filter{ID: "removed"}, 16)
	pub := store.NewPublisher()
	t.Cleanup(pub.Close)
	obs := results.NewWorkerObserver(pub)

	started := queue.Timestamp{Time: time.Now().Add(-time.Second)}
	job := &queue.Job{ID: "removed", Type: testutil.KindName, Queue: queue.DefaultQueue, State: queue.StateActive,
		Data: json.RawMessage(`{}`), AttemptsMade: 1, MaxAttempts: 3, Errors: []queue.AttemptError{},
		CreatedAt: started, RunAt: started, StartedAt: &started}
	// A busy worker: the publisher has a backlog of other jobs' events.
	for i := range 5000 {
		pub.Publish(results.JobEvent(&queue.Job{ID: "busy-" + strconv.Itoa(i), Type: testutil.KindName}, queue.StateActive), nil)
	}
	// As the worker does: the run starts and reports progress, then its outcome is final
	// with retention 0, so the worker stores the snapshot and removes the row, then
	// reports the finish as Stored.
	obs.Observe(queue.Event{Kind: queue.EventStarted, Job: job, State: queue.StateActive})
	obs.Observe(queue.Event{Kind: queue.EventProgress, Job: job, Progress: 50})
	final := queue.FinishedJob(*job, queue.Outcome{OK: true, Result: []byte(`{"done":true}`)}, time.Now())
	require.NoError(t, store.Snapshots().Store(ctx, []queue.Job{final}))
	obs.Observe(queue.Event{Kind: queue.EventFinished, Job: job, State: queue.StateCompleted,
		Result: []byte(`{"done":true}`), Took: time.Second, Stored: true})

	var states []string
	for len(states) < 3 {
		ev := next(t, sub)
		if ev.Event == "progress" {
			states = append(states, "progress")
		} else {
			states = append(states, ev.State)
		}
	}
	require.Equal(t, []string{"active", "progress", "completed"}, states)
	snap, ok := store.Job(ctx, "removed")
	require.True(t, ok)
	require.Equal(t, queue.StateCompleted, snap.State, "the finished snapshot, not the progress one")
	require.Equal(t, 100, snap.Progress)
	require.JSONEq(t, `{"done":true}`, string(snap.Result))
	require.NotNil(t, snap.FinishedAt)
}
