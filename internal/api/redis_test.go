package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/api"
	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/results"
	"github.com/pgqueue/queue/internal/testutil"
	"github.com/pgqueue/queue/internal/worker"
)

// redisSide is a real Redis side for an API under test, on its own key prefix.
type redisSide struct {
	store      *results.Store
	hub        *results.Hub
	pub        *results.Publisher
	statsTTL   time.Duration
	statsCalls atomic.Int32 // stats queries that reached Postgres
}

func newRedis(t *testing.T) *redisSide {
	t.Helper()
	return newRedisAt(t, testutil.RedisURL(t))
}

func newRedisAt(t *testing.T, url string) *redisSide {
	t.Helper()
	opts, err := redis.ParseURL(url)
	require.NoError(t, err)
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	store := results.New(rdb, testutil.RedisPrefix(t), time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
	hub := store.NewHub()
	t.Cleanup(hub.Close)
	pub := store.NewPublisher()
	t.Cleanup(pub.Close)
	require.Eventually(t, hub.Healthy, 10*time.Second, 5*time.Millisecond)
	return &redisSide{store: store, hub: hub, pub: pub, statsTTL: time.Second}
}

// use plugs the Redis side into the API's Deps (as cmd/api does).
func (r *redisSide) use(d *api.Deps) {
	compute := api.StatsJSON(d.Client)
	api.Redis{Store: r.store, Hub: r.hub, Publisher: r.pub, Stats: r.store.NewStatsCache(r.statsTTL,
		func(ctx context.Context) ([]byte, error) {
			r.statsCalls.Add(1)
			return compute(ctx)
		})}.Use(d)
}

// finished publishes a job's end exactly as a worker's observer does, and waits for
// its snapshot to be readable.
func (r *redisSide) finished(t *testing.T, j queue.Job, state string) {
	t.Helper()
	results.NewWorkerObserver(r.pub).Observe(queue.Event{Kind: queue.EventFinished, Job: &j, State: state,
		Result: []byte(`{"done":true}`), Took: time.Millisecond})
	require.Eventually(t, func() bool {
		_, ok := r.store.Job(context.Background(), j.ID)
		return ok
	}, 5*time.Second, 5*time.Millisecond)
}

// startWorker runs an in-process worker of the strict test kind whose observer publishes
// to Redis and which stores snapshots there, as cmd/worker does.
func (r *redisSide) startWorker(t *testing.T, e *env, h kinds.Handler[emailData]) {
	t.Helper()
	w, err := worker.New(e.pool, kinds.NewRegistry(emailKind(h)), worker.Config{
		PollInterval: 50 * time.Millisecond, RemoveOnComplete: -1, RemoveOnFail: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Observer: results.NewWorkerObserver(r.pub),
		Snapshots: r.store.Snapshots(),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// A completion right after the wait request arrives is never missed: the wait
// subscribes before it reads. Postgres polling is made too slow to rescue a miss.
func TestWaitNeverMissesACompletion(t *testing.T) {
	t.Parallel()
	rd := newRedis(t)
	e := setup(t, rd.use, func(d *api.Deps) { d.WaitPoll = time.Minute })
	for i := range 40 {
		id := e.submitEmail()
		j := e.claim("w1")
		require.Equal(t, id, j.ID)
		answer := make(chan response, 1)
		go func() { answer <- e.do("GET", "/api/queue/jobs/"+id+"/wait?timeout=10s", nil) }()
		time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		e.finish("w1", j, true, false)
		rd.finished(t, j, queue.StateCompleted)
		start := time.Now()
		select {
		case r := <-answer:
			require.Equal(t, http.StatusOK, r.status)
			require.Equal(t, "completed", r.json(t)["state"], "iteration %d", i)
		case <-time.After(5 * time.Second):
			t.Fatalf("iteration %d: the wait missed the completion", i)
		}
		require.Less(t, time.Since(start), 2*time.Second)
	}
}

// Without Redis the wait still answers, from Postgres.
func TestWaitWorksWithRedisDown(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	rd := newRedisAt(t, srv.URL())
	e := setup(t, rd.use, func(d *api.Deps) { d.WaitPoll = 20 * time.Millisecond })
	srv.Stop()
	require.Eventually(t, func() bool { return !rd.hub.Healthy() }, 15*time.Second, 10*time.Millisecond)
	r := e.do("GET", "/api/ready", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.JSONEq(t, `{"postgres":"up","redis":"down"}`, string(r.body))

	id := e.submitEmail()
	j := e.claim("w1")
	go func() {
		time.Sleep(100 * time.Millisecond)
		e.finish("w1", j, true, false)
	}()
	r = e.do("GET", "/api/queue/jobs/"+id+"/wait?timeout=10s", nil)
	require.Equal(t, "completed", r.json(t)["state"])
	require.Equal(t, http.StatusOK, e.do("GET", "/api/queue/stats", nil).status, "stats from Postgres")
}

// An SSE client sees a job's active and completed events, published by the worker.
func TestEventStreamShowsWorkerEvents(t *testing.T) {
	t.Parallel()
	rd := newRedis(t)
	e := setup(t, rd.use)
	rd.startWorker(t, e, func(context.Context, *kinds.Job, *emailData) (any, error) { return "sent", nil })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.http.URL+"/api/queue/events?type="+emailType, nil)
	require.NoError(t, err)
	resp, err := e.http.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	require.Equal(t, ": connected", <-lines)

	id := e.submitEmail()
	var states []string
	timeout := time.After(10 * time.Second)
	for len(states) < 3 {
		select {
		case line := <-lines:
			if !strings.HasPrefix(line, "data: ") {
				continue
			}
			var ev struct{ ID, State string }
			require.NoError(t, json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev))
			if ev.ID == id {
				states = append(states, ev.State)
			}
		case <-timeout:
			t.Fatalf("saw only %v", states)
		}
	}
	// The API publishes "waiting" and the worker "active": two processes, whose events
	// may interleave (README). One publisher's events keep their order.
	require.ElementsMatch(t, []string{"waiting", "active", "completed"}, states)
	require.Less(t, slices.Index(states, "active"), slices.Index(states, "completed"), "%v", states)
}

// A job that removeOnComplete deleted is still answered, from the worker's snapshot.
func TestRemovedJobAnsweredFromCache(t *testing.T) {
	t.Parallel()
	rd := newRedis(t)
	e := setup(t, rd.use)
	rd.startWorker(t, e, func(context.Context, *kinds.Job, *emailData) (any, error) {
		return map[string]string{"messageId": "m-1"}, nil
	})
	id := e.submit(map[string]any{"type": emailType, "data": email, "options": map[string]any{"removeOnComplete": true}})["id"].(string)
	r := e.do("GET", "/api/queue/jobs/"+id+"/wait?timeout=10s", nil)
	require.Equal(t, "completed", r.json(t)["state"])
	require.Eventually(t, func() bool {
		_, err := e.client.Get(context.Background(), id)
		return err == queue.ErrNotFound
	}, 5*time.Second, 10*time.Millisecond, "the row is gone")
	r = e.do("GET", "/api/queue/jobs/"+id, nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	got := r.json(t)
	require.Equal(t, "completed", got["state"])
	require.Equal(t, map[string]any{"messageId": "m-1"}, got["result"])
}

// Fifty dashboards asking at once cost at most a couple of Postgres stats queries.
func TestConcurrentStatsHitPostgresOnce(t *testing.T) {
	t.Parallel()
	rd := newRedis(t)
	rd.statsTTL = 5 * time.Second
	e := setup(t, rd.use)
	e.submitEmail()
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.do("GET", "/api/queue/stats", nil)
			require.Equal(t, http.StatusOK, r.status)
			require.Equal(t, float64(1), r.json(t)["waiting"])
		}()
	}
	wg.Wait()
	require.LessOrEqual(t, rd.statsCalls.Load(), int32(2))
	require.GreaterOrEqual(t, rd.statsCalls.Load(), int32(1))
}

// Pause shows in the stats at once, whatever STATS_TTL is.
func TestPauseShowsInCachedStatsAtOnce(t *testing.T) {
	t.Parallel()
	rd := newRedis(t)
	rd.statsTTL = time.Hour
	e := setup(t, rd.use)
	require.Equal(t, false, e.do("GET", "/api/queue/stats", nil).json(t)["paused"])
	require.Equal(t, http.StatusOK, e.do("POST", "/api/queue/pause", nil).status)
	require.Equal(t, true, e.do("GET", "/api/queue/stats", nil).json(t)["paused"])
	require.Equal(t, http.StatusOK, e.do("POST", "/api/queue/resume", nil).status)
	require.Equal(t, false, e.do("GET", "/api/queue/stats", nil).json(t)["paused"])
}
