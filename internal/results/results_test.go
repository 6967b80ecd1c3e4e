package results_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/jobs"
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

func next(t *testing.T, sub *results.Subscription) results.Event {
	t.Helper()
	select {
	case ev, ok := <-sub.C:
		require.True(t, ok, "subscription closed")
		return ev
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
	sub := hub.Subscribe("7", "", 16)
	other := hub.Subscribe("", "CACHE_WARM", 16)

	pub := store.NewPublisher()
	job := &queue.Job{ID: "7", Type: "CLEANUP", State: queue.StateCompleted, Result: json.RawMessage(`{"ok":true}`), Errors: []queue.AttemptError{}}
	pub.Publish(results.JobEvent("8", "CLEANUP", queue.StateActive), nil) // filtered out
	pub.Publish(results.JobEvent("7", "CLEANUP", queue.StateCompleted), job)
	pub.Close()

	ev := next(t, sub)
	require.Equal(t, "job", ev.Event)
	require.Equal(t, "7", ev.ID)
	require.Equal(t, queue.StateCompleted, ev.State)

	got, ok := store.Job(ctx, "7")
	require.True(t, ok)
	require.JSONEq(t, `{"ok":true}`, string(got.Result))
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
		pub.Publish(results.JobEvent("1", "CLEANUP", queue.StateCompleted), &queue.Job{ID: "1"})
	}
	require.Less(t, time.Since(start), time.Second, "publishing never blocks on Redis")
	require.Eventually(t, func() bool { return store.Errors() > 0 }, 10*time.Second, 10*time.Millisecond)
	_, ok := store.Job(context.Background(), "1")
	require.False(t, ok)

	srv.Start()
	waitHealthy(t, hub)
	sub := hub.Subscribe("2", "", 4)
	require.Eventually(t, func() bool {
		pub.Publish(results.JobEvent("2", "CLEANUP", queue.StateActive), nil)
		select {
		case ev := <-sub.C:
			return ev.ID == "2"
		case <-time.After(200 * time.Millisecond):
			return false
		}
	}, 15*time.Second, 10*time.Millisecond, "events flow again after Redis restarts, without a new hub")
}

func TestSlowSubscriberIsDisconnected(t *testing.T) {
	t.Parallel()
	store, _ := newStore(t, testutil.RedisURL(t))
	hub := store.NewHub()
	t.Cleanup(hub.Close)
	waitHealthy(t, hub)
	slow := hub.Subscribe("", "", 2)
	pub := store.NewPublisher()
	for range 10 {
		pub.Publish(results.JobEvent("x", "CLEANUP", queue.StateActive), nil)
	}
	pub.Close()
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

// The worker publishes active and completed events, and a removed job's snapshot stays.
func TestWorkerPublishesEventsAndSnapshots(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := startPublishingWorker(t, func(ctx context.Context, j *jobs.Job) (any, error) {
		j.SetProgress(50)
		return map[string]int{"deleted": 3}, nil
	})
	client, pool, hub, store := p.client, p.pool, p.hub, p.store

	sub := hub.Subscribe("", "CLEANUP", 64)
	r, err := client.Enqueue(ctx, pool, queue.NewJob{Type: "CLEANUP", Data: json.RawMessage(`{}`),
		Options: queue.Options{RemoveOnComplete: ptr(queue.Retention(queue.RemoveAtOnce))}})
	require.NoError(t, err)

	var kinds []string
	for len(kinds) < 3 {
		ev := next(t, sub)
		require.Equal(t, r.Job.ID, ev.ID)
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
	require.JSONEq(t, `{"deleted":3}`, string(snap.Result))
	require.Equal(t, 100, snap.Progress)
	require.NotNil(t, snap.FinishedAt)
}

func ptr[T any](v T) *T { return &v }

// A retried job's events show every state it enters, the promotion back to waiting too.
func TestWorkerPublishesEveryStateOfARetry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := startPublishingWorker(t, func(ctx context.Context, j *jobs.Job) (any, error) {
		if j.Attempt == 1 {
			return nil, errors.New("try again")
		}
		return nil, nil
	})
	client, pool, hub := p.client, p.pool, p.hub

	sub := hub.Subscribe("", "CLEANUP", 64)
	r, err := client.Enqueue(ctx, pool, queue.NewJob{Type: "CLEANUP", Data: json.RawMessage(`{}`),
		Options: queue.Options{Backoff: &queue.BackoffOption{Type: "fixed", Delay: ptr(int64(50))}}})
	require.NoError(t, err)
	var states []string
	for len(states) < 5 {
		ev := next(t, sub)
		require.Equal(t, r.Job.ID, ev.ID)
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

// startPublishingWorker runs a worker whose CLEANUP handler is h and whose observer
// publishes to Redis, with a hub subscribed to the same prefix.
func startPublishingWorker(t *testing.T, h jobs.HandlerFunc) publishing {
	t.Helper()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	client, err := queue.NewClient(ctx, pool, queue.ClientConfig{})
	require.NoError(t, err)
	t.Cleanup(client.Close)
	store, _ := newStore(t, testutil.RedisURL(t))
	hub := store.NewHub()
	t.Cleanup(hub.Close)
	waitHealthy(t, hub)
	pub := store.NewPublisher()
	t.Cleanup(pub.Close)

	reg := jobs.NewRegistry()
	reg.Register("CLEANUP", h, nil)
	w, err := worker.New(pool, client, reg, worker.Config{
		PollInterval: 20 * time.Millisecond, Logger: quiet(), RemoveOnComplete: -1, RemoveOnFail: -1,
		Observer: results.NewWorkerObserver(pub),
	})
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
	p := startPublishingWorker(t, func(ctx context.Context, j *jobs.Job) (any, error) { return nil, nil })
	// A type the worker does not run, claimed by a worker that vanished at once.
	r, err := p.client.Enqueue(ctx, p.pool, queue.NewJob{Type: "EMAIL_SEND", Data: json.RawMessage(`{}`),
		Options: queue.Options{Attempts: ptr(1)}})
	require.NoError(t, err)
	claimed, err := p.client.Claim(ctx, "vanished", []string{"EMAIL_SEND"}, 1, time.Millisecond)
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	require.Eventually(t, func() bool {
		snap, ok := p.store.Job(ctx, r.Job.ID)
		return ok && snap.State == queue.StateFailed && snap.Error != nil
	}, 10*time.Second, 20*time.Millisecond)
}
