package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/api"
	"github.com/pgqueue/queue/internal/jobs"
	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/results"
	"github.com/pgqueue/queue/internal/testutil"
	"github.com/pgqueue/queue/internal/worker"
)

// inQueue is a submission of the strict kind to the named queue.
func inQueue(name string, options ...map[string]any) map[string]any {
	o := map[string]any{"queue": name}
	for _, extra := range options {
		for k, v := range extra {
			o[k] = v
		}
	}
	return map[string]any{"type": emailType, "data": email, "options": o}
}

// queueBody decodes one queue object.
func queueBody(t *testing.T, r response) queue.Queue {
	t.Helper()
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	var q queue.Queue
	require.NoError(t, json.Unmarshal(r.body, &q), string(r.body))
	return q
}

// queueList decodes GET /api/queue/queues.
func (e *env) queueList() []queue.Queue {
	e.t.Helper()
	r := e.do("GET", "/api/queue/queues", nil)
	require.Equal(e.t, http.StatusOK, r.status, string(r.body))
	var body struct {
		Queues []queue.Queue `json:"queues"`
	}
	require.NoError(e.t, json.Unmarshal(r.body, &body), string(r.body))
	require.NotNil(e.t, body.Queues, "an empty list, not null: %s", r.body)
	return body.Queues
}

// claimFrom claims up to max jobs of one queue on worker w.
func (e *env) claimFrom(w, queueName string, max int) []queue.Job {
	e.t.Helper()
	got, err := queue.NewRunner(e.pool, w).Claim(context.Background(), queueName, testTypes, max, time.Minute)
	require.NoError(e.t, err)
	return got
}

func TestSubmitToNamedQueue(t *testing.T) {
	t.Parallel()
	e := setup(t)

	job := e.submit(inQueue("mail"))
	require.Equal(t, "mail", job["queue"])
	r := e.do("GET", "/api/queue/jobs/"+job["id"].(string), nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "mail", r.json(t)["queue"], "the stored job keeps its queue")
	require.Equal(t, queue.DefaultQueue, e.submit(inQueue(queue.DefaultQueue))["queue"])
	require.Equal(t, queue.DefaultQueue, e.submit(map[string]any{"type": anyType, "data": map[string]any{}, "options": map[string]any{"queue": nil}})["queue"],
		"null takes the default")

	r = e.do("POST", "/api/queue/jobs/bulk", map[string]any{"jobs": []any{
		inQueue("reports"),
		map[string]any{"type": anyType, "data": map[string]any{}},
	}})
	require.Equal(t, http.StatusCreated, r.status, string(r.body))
	var out struct{ Jobs []map[string]any }
	require.NoError(t, json.Unmarshal(r.body, &out))
	require.Equal(t, "reports", out.Jobs[0]["queue"])
	require.Equal(t, queue.DefaultQueue, out.Jobs[1]["queue"])

	// A bad queue name is refused, naming options.queue.
	for _, bad := range []any{"", "Mail", "-mail", "_mail", "mail queue", "mail/x", "mäil", strings.Repeat("q", 65), 5, true, map[string]any{}} {
		r := e.do("POST", "/api/queue/jobs", inQueue("x", map[string]any{"queue": bad}))
		e.requireError(r, http.StatusBadRequest, "validation_failed")
		require.Equal(t, []string{"options.queue"}, r.fields(t), "%v", bad)
	}
	r = e.do("POST", "/api/queue/jobs", inQueue("Bad"))
	_, details := r.errorBody(t)
	require.Equal(t, []map[string]any{{"field": "options.queue", "message": queue.QueueNameRule}}, details)
	r = e.do("POST", "/api/queue/jobs/bulk", map[string]any{"jobs": []any{inQueue("ok-1"), inQueue("NOT OK")}})
	e.requireError(r, http.StatusBadRequest, "validation_failed")
	require.Equal(t, []string{"jobs[1].options.queue"}, r.fields(t))
	// The longest name is fine.
	require.Equal(t, strings.Repeat("q", 64), e.submit(inQueue(strings.Repeat("q", 64)))["queue"])

	var n int
	require.NoError(t, e.pool.QueryRow(context.Background(), "SELECT count(*) FROM queue.jobs").Scan(&n))
	require.Equal(t, 6, n, "refused submissions stored nothing")
}

func TestListJobsByQueue(t *testing.T) {
	t.Parallel()
	e := setup(t)
	mail1 := e.submit(inQueue("mail"))["id"].(string)
	mail2 := e.submit(inQueue("mail"))["id"].(string)
	other := e.submitEmail()
	anyMail := e.submit(map[string]any{"type": anyType, "data": map[string]any{}, "options": map[string]any{"queue": "mail"}})["id"].(string)

	ids := func(q string) []string { return e.listIDs(t, q) }
	require.Equal(t, []string{anyMail, mail2, mail1}, ids("?queue=mail"), "newest first, this queue only")
	require.Equal(t, []string{other}, ids("?queue=default"))
	require.Equal(t, []string{mail2, mail1}, ids("?queue=mail&type="+emailType), "with the type filter")
	require.Equal(t, []string{mail2}, ids("?queue=mail&type="+emailType+"&limit=1"))
	require.Empty(t, ids("?queue=nope"))
	require.Len(t, ids(""), 4, "no filter: every queue")

	e.claimFrom("w1", "mail", 1)
	require.Equal(t, []string{mail1}, ids("?queue=mail&state=active"), "the oldest of the same priority is claimed first")
	require.Empty(t, ids("?queue=default&state=active"))
}

func TestStatsByQueue(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.submit(inQueue("mail"))
	e.submit(inQueue("mail", map[string]any{"delay": 60000}))
	e.submitEmail()
	e.submit(map[string]any{"type": anyType, "data": map[string]any{}, "options": map[string]any{"queue": "reports"}})
	require.Len(t, e.claimFrom("w1", "mail", 5), 1)

	r := e.do("GET", "/api/queue/stats", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.JSONEq(t, `{"waiting":2,"active":1,"completed":0,"failed":0,"delayed":1,"cancelled":0,"paused":false,
		"byType":{"TEST_EMAIL":{"waiting":1,"active":1,"completed":0,"failed":0,"delayed":1,"cancelled":0},
		          "TEST_ANY":{"waiting":1,"active":0,"completed":0,"failed":0,"delayed":0,"cancelled":0}},
		"byQueue":{"mail":{"waiting":0,"active":1,"completed":0,"failed":0,"delayed":1,"cancelled":0},
		           "default":{"waiting":1,"active":0,"completed":0,"failed":0,"delayed":0,"cancelled":0},
		           "reports":{"waiting":1,"active":0,"completed":0,"failed":0,"delayed":0,"cancelled":0}}}`, string(r.body))
}

func TestQueues(t *testing.T) {
	t.Parallel()
	e := setup(t)
	require.Empty(t, e.queueList(), "no jobs, settings or workers: no queues")
	r := e.do("GET", "/api/queue/queues/mail", nil)
	e.requireError(r, http.StatusNotFound, "not_found")

	// A queue appears once it has jobs.
	e.submit(inQueue("mail"))
	e.submit(inQueue("mail"))
	e.submit(inQueue("mail", map[string]any{"delay": 60000}))
	e.submit(map[string]any{"type": anyType, "data": map[string]any{}, "options": map[string]any{"queue": "mail"}})
	cancelled := e.submit(inQueue("mail"))["id"].(string)
	require.Equal(t, http.StatusOK, e.do("POST", "/api/queue/jobs/"+cancelled+"/cancel", nil).status)
	e.submitEmail()
	done := e.claimFrom("w1", "mail", 1)
	require.Len(t, done, 1)
	e.finish("w1", done[0], true, false)
	require.Len(t, e.claimFrom("w1", "mail", 1), 1) // stays active

	r = e.do("GET", "/api/queue/queues/mail", nil)
	mail := queueBody(t, r)
	require.Equal(t, "mail", mail.Name)
	require.False(t, mail.Paused)
	require.Equal(t, queue.Counts{Waiting: 1, Active: 1, Completed: 1, Delayed: 1, Cancelled: 1}, mail.Counts)
	require.Zero(t, mail.Workers)
	require.Equal(t, []string{anyType, emailType}, mail.UnhandledTypes, "waiting and delayed jobs that no live worker handles")
	var raw map[string]any
	require.NoError(t, json.Unmarshal(r.body, &raw))
	for _, k := range []string{"name", "paused", "concurrency", "rate", "groupConcurrency", "groupRate", "fair",
		"heldBy", "heldSince", "nextStartAt", "counts", "workers", "unhandledTypes"} {
		require.Contains(t, raw, k)
	}
	require.Len(t, raw, 13, "exactly the fields of openapi.json's Queue")
	require.Nil(t, raw["concurrency"], "no limit set")
	require.Nil(t, raw["rate"])

	list := e.queueList()
	require.Len(t, list, 2)
	require.Equal(t, []string{"default", "mail"}, []string{list[0].Name, list[1].Name}, "by name")
	require.Equal(t, queue.Counts{Waiting: 1}, list[0].Counts)
	require.Equal(t, mail, list[1], "the list shows what GET of one queue shows")

	e.requireError(e.do("GET", "/api/queue/queues/reports", nil), http.StatusNotFound, "not_found")
	report := e.submit(inQueue("reports"))["id"].(string)
	require.Equal(t, queue.Counts{Waiting: 1}, queueBody(t, e.do("GET", "/api/queue/queues/reports", nil)).Counts)
	require.Len(t, e.queueList(), 3)
	require.Equal(t, http.StatusNoContent, e.do("DELETE", "/api/queue/jobs/"+report, nil).status)
	e.requireError(e.do("GET", "/api/queue/queues/reports", nil), http.StatusNotFound, "not_found")
	require.Len(t, e.queueList(), 2, "a queue without jobs, settings or workers is gone")
	for _, bad := range []string{"Mail", "-x", strings.Repeat("q", 65), "a%20b"} {
		r := e.do("GET", "/api/queue/queues/"+bad, nil)
		e.requireError(r, http.StatusBadRequest, "validation_failed")
		require.Equal(t, []string{"name"}, r.fields(t), bad)
	}
}

func TestPauseQueue(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.submit(inQueue("mail"))
	e.submit(inQueue("mail"))
	e.submitEmail()

	r := e.do("POST", "/api/queue/queues/mail/pause", nil)
	q := queueBody(t, r)
	require.Equal(t, "mail", q.Name)
	require.True(t, q.Paused)
	require.Equal(t, queue.Counts{Waiting: 2}, q.Counts)
	require.True(t, queueBody(t, e.do("GET", "/api/queue/queues/mail", nil)).Paused)
	require.False(t, queueBody(t, e.do("GET", "/api/queue/queues/default", nil)).Paused, "other queues carry on")
	require.Equal(t, false, e.do("GET", "/api/queue/stats", nil).json(t)["paused"], "the global switch is separate")

	require.Equal(t, "mail", e.submit(inQueue("mail"))["queue"], "submissions are still accepted")
	require.Empty(t, e.claimFrom("w1", "mail", 5), "nothing is claimed from a paused queue")
	require.Len(t, e.claimFrom("w1", queue.DefaultQueue, 5), 1, "another queue's claim still works")

	// Pausing twice is harmless.
	require.True(t, queueBody(t, e.do("POST", "/api/queue/queues/mail/pause", nil)).Paused)

	r = e.do("POST", "/api/queue/queues/mail/resume", nil)
	q = queueBody(t, r)
	require.False(t, q.Paused)
	require.False(t, queueBody(t, e.do("GET", "/api/queue/queues/mail", nil)).Paused)
	require.Len(t, e.claimFrom("w1", "mail", 5), 3, "resumed: its jobs are claimed")

	// A queue without jobs can be paused ahead of them; it exists from then on.
	e.requireError(e.do("GET", "/api/queue/queues/later", nil), http.StatusNotFound, "not_found")
	q = queueBody(t, e.do("POST", "/api/queue/queues/later/pause", nil))
	require.Equal(t, queue.Queue{Name: "later", Paused: true, UnhandledTypes: []string{}}, q)
	require.True(t, queueBody(t, e.do("GET", "/api/queue/queues/later", nil)).Paused)
	e.submit(inQueue("later"))
	require.Empty(t, e.claimFrom("w1", "later", 5), "its first job waits")
	require.False(t, queueBody(t, e.do("POST", "/api/queue/queues/later/resume", nil)).Paused)
	require.Len(t, e.claimFrom("w1", "later", 5), 1)

	for _, path := range []string{"/api/queue/queues/Mail/pause", "/api/queue/queues/-x/resume", "/api/queue/queues//pause"} {
		r := e.do("POST", path, nil)
		e.requireError(r, http.StatusBadRequest, "validation_failed")
		require.Equal(t, []string{"name"}, r.fields(t), path)
	}
}

// Pausing a queue drops the cached stats, like the global pause does.
func TestPauseQueueForgetsCachedStats(t *testing.T) {
	t.Parallel()
	var forgotten atomic.Int32
	e := setup(t, func(d *api.Deps) { d.StatsChanged = func(context.Context) { forgotten.Add(1) } })
	require.Equal(t, http.StatusOK, e.do("POST", "/api/queue/queues/mail/pause", nil).status)
	require.EqualValues(t, 1, forgotten.Load())
	require.Equal(t, http.StatusOK, e.do("POST", "/api/queue/queues/mail/resume", nil).status)
	require.EqualValues(t, 2, forgotten.Load())
}

func TestWorkers(t *testing.T) {
	t.Parallel()
	rd := newRedis(t)
	e := setup(t, rd.use)
	workers := func() []queue.Worker {
		r := e.do("GET", "/api/queue/workers", nil)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		var body struct {
			Workers []queue.Worker `json:"workers"`
		}
		require.NoError(t, json.Unmarshal(r.body, &body), string(r.body))
		require.NotNil(t, body.Workers, "an empty list, not null: %s", r.body)
		return body.Workers
	}
	r := e.do("GET", "/api/queue/workers", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.JSONEq(t, `{"workers":[]}`, string(r.body))

	release := make(chan struct{})
	w, err := worker.New(e.pool, kinds.NewRegistry(emailKind(func(ctx context.Context, _ *kinds.Job, _ *emailData) (any, error) {
		select {
		case <-release:
			return "sent", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})), worker.Config{
		Queues:       []worker.QueueConfig{{Name: "mail", Concurrency: 2}},
		PollInterval: 20 * time.Millisecond, Lease: 300 * time.Millisecond,
		RemoveOnComplete: -1, RemoveOnFail: -1,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Observer: results.NewWorkerObserver(rd.pub),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-stopped
	})

	require.Eventually(t, func() bool { return len(workers()) == 1 }, 10*time.Second, 20*time.Millisecond, "the worker registers itself")
	r = e.do("GET", "/api/queue/workers", nil)
	var rawList struct{ Workers []map[string]any }
	require.NoError(t, json.Unmarshal(r.body, &rawList))
	for _, k := range []string{"id", "host", "pid", "queues", "types", "running", "startedAt", "lastSeenAt"} {
		require.Contains(t, rawList.Workers[0], k)
	}
	require.Len(t, rawList.Workers[0], 8, "exactly the fields of openapi.json's Worker")
	require.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`, rawList.Workers[0]["lastSeenAt"])
	got := workers()[0]
	require.Equal(t, w.ID(), got.ID)
	require.Equal(t, map[string]int{"mail": 2}, got.Queues)
	require.Equal(t, []string{emailType}, got.Types)
	require.Equal(t, os.Getpid(), got.PID)
	host, _ := os.Hostname()
	require.Equal(t, host, got.Host)
	require.Zero(t, got.Running)
	require.False(t, got.StartedAt.IsZero())
	require.False(t, got.LastSeenAt.Before(got.StartedAt.Time))

	// The queue it serves exists through it, and lists what it cannot run.
	mail := queueBody(t, e.do("GET", "/api/queue/queues/mail", nil))
	require.Equal(t, 1, mail.Workers)
	e.submit(map[string]any{"type": anyType, "data": map[string]any{}, "options": map[string]any{"queue": "mail"}})
	require.Equal(t, []string{anyType}, queueBody(t, e.do("GET", "/api/queue/queues/mail", nil)).UnhandledTypes)

	// A running job shows in its row.
	id := e.submit(inQueue("mail"))["id"].(string)
	require.Eventually(t, func() bool { return workers()[0].Running == 1 }, 10*time.Second, 20*time.Millisecond)
	close(release)
	r = e.do("GET", "/api/queue/jobs/"+id+"/wait?timeout=10s", nil)
	require.Equal(t, "completed", r.json(t)["state"])
	require.Equal(t, "mail", r.json(t)["queue"])
	require.Eventually(t, func() bool { return workers()[0].Running == 0 }, 10*time.Second, 20*time.Millisecond)

	// A worker that stops leaves the list.
	cancel()
	require.NoError(t, <-stopped)
	stopped <- nil // for the cleanup
	require.Empty(t, workers())
}

// The API accepts exactly its client's kinds: an unknown type is refused on "type",
// also when another registry would know it.
func TestUnknownTypeRefused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, typ := range []string{"NOPE", jobs.TypeEmailSend, "test_email", "1BAD"} {
		r := e.do("POST", "/api/queue/jobs", map[string]any{"type": typ, "data": email})
		e.requireError(r, http.StatusBadRequest, "validation_failed")
		require.Equal(t, []string{"type"}, r.fields(t), typ)
	}
	r := e.do("POST", "/api/queue/jobs", map[string]any{"type": "NOPE", "data": map[string]any{}})
	_, details := r.errorBody(t)
	require.Equal(t, []map[string]any{{"field": "type", "message": `unknown job type "NOPE"`}}, details)
	r = e.do("POST", "/api/queue/jobs/bulk", map[string]any{"jobs": []any{
		map[string]any{"type": emailType, "data": email},
		map[string]any{"type": "NOPE", "data": map[string]any{}},
	}})
	e.requireError(r, http.StatusBadRequest, "validation_failed")
	require.Equal(t, []string{"jobs[1].type"}, r.fields(t))

	// With the built-in registry, the built-in types are accepted by their real rules and
	// the test kinds are unknown.
	builtin := setup(t, func(d *api.Deps) {
		c, err := queue.NewClient(d.Pool, queue.ClientConfig{Kinds: jobs.Builtin(jobs.Deps{})})
		require.NoError(t, err)
		t.Cleanup(c.Close)
		d.Client = c
	})
	r = builtin.do("POST", "/api/queue/jobs", map[string]any{"type": jobs.TypeEmailSend, "data": email})
	require.Equal(t, http.StatusCreated, r.status, string(r.body))
	r = builtin.do("POST", "/api/queue/jobs", map[string]any{"type": jobs.TypeEmailSend, "data": map[string]any{"to": "user@example.com"}})
	e.requireError(r, http.StatusBadRequest, "validation_failed")
	require.ElementsMatch(t, []string{"data.subject", "data.template"}, r.fields(t))
	for _, typ := range []string{emailType, testutil.KindName, anyType} {
		r := builtin.do("POST", "/api/queue/jobs", map[string]any{"type": typ, "data": map[string]any{}})
		e.requireError(r, http.StatusBadRequest, "validation_failed")
		require.Equal(t, []string{"type"}, r.fields(t), typ)
	}

	var n int
	require.NoError(t, e.pool.QueryRow(context.Background(), "SELECT count(*) FROM queue.jobs").Scan(&n))
	require.Zero(t, n)
}

// The served OpenAPI document lists the registry's types as JobType's enum.
func TestOpenAPIListsRegisteredTypes(t *testing.T) {
	t.Parallel()
	enum := func(e *env) []string {
		r := e.do("GET", "/api/openapi.json", nil)
		require.Equal(t, http.StatusOK, r.status)
		var doc struct {
			Components struct {
				Schemas map[string]struct {
					Type string   `json:"type"`
					Enum []string `json:"enum"`
				} `json:"schemas"`
			} `json:"components"`
		}
		require.NoError(t, json.Unmarshal(r.body, &doc))
		jobType, ok := doc.Components.Schemas["JobType"]
		require.True(t, ok, "components.schemas.JobType")
		require.Equal(t, "string", jobType.Type)
		return jobType.Enum
	}
	e := setup(t)
	require.Equal(t, []string{testutil.AnyName, emailType, testutil.KindName}, enum(e))
	require.Equal(t, testRegistry().Names(), enum(e))

	builtin := setup(t, func(d *api.Deps) {
		c, err := queue.NewClient(d.Pool, queue.ClientConfig{Kinds: jobs.Builtin(jobs.Deps{})})
		require.NoError(t, err)
		t.Cleanup(c.Close)
		d.Client = c
	})
	require.Equal(t, []string{jobs.TypeCacheWarm, jobs.TypeCleanup, jobs.TypeDataExport, jobs.TypeEmailSend,
		jobs.TypeFileProcess, jobs.TypeUserNotification}, enum(builtin))
}

// SSE events carry their queue and may be filtered by it.
func TestEventsFilterByQueue(t *testing.T) {
	t.Parallel()
	rd := newRedis(t)
	e := setup(t, rd.use)
	at := queue.Timestamp{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	progress := 30
	go func() {
		require.Eventually(t, func() bool {
			return strings.Contains(string(e.do("GET", "/metrics", nil).body), "queue_api_open_streams 1")
		}, 5*time.Second, 5*time.Millisecond)
		rd.pub.Publish(results.Event{Event: "job", ID: "1", Type: emailType, Queue: queue.DefaultQueue, State: "active", At: at}, nil)
		rd.pub.Publish(results.Event{Event: "job", ID: "2", Type: emailType, Queue: "mail", State: "active", At: at}, nil)
		rd.pub.Publish(results.Event{Event: "progress", ID: "1", Type: emailType, Queue: queue.DefaultQueue, Progress: &progress, At: at}, nil)
		rd.pub.Publish(results.Event{Event: "progress", ID: "2", Type: emailType, Queue: "mail", Progress: &progress, At: at}, nil)
		time.Sleep(200 * time.Millisecond)
		e.srv.StopStreams()
	}()
	r := e.do("GET", "/api/queue/events?queue=mail", nil)
	require.Equal(t, http.StatusOK, r.status)
	body := string(r.body)
	require.Contains(t, body, "event: job\ndata: {\"id\":\"2\",\"type\":\"TEST_EMAIL\",\"queue\":\"mail\",\"state\":\"active\",\"at\":\"2026-01-01T00:00:00.000Z\"}\n\n")
	require.Contains(t, body, "event: progress\ndata: {\"id\":\"2\",\"progress\":30,\"at\":\"2026-01-01T00:00:00.000Z\"}\n\n")
	require.NotContains(t, body, `"id":"1"`, "filtered by queue")
}

// listIDs lists jobs with the query (from "?") and returns their ids, in page order.
func (e *env) listIDs(t *testing.T, query string) []string {
	t.Helper()
	r := e.do("GET", "/api/queue/jobs"+query, nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	var p struct{ Jobs []queue.Job }
	require.NoError(t, json.Unmarshal(r.body, &p))
	out := make([]string, len(p.Jobs))
	for i, j := range p.Jobs {
		out[i] = j.ID
	}
	return out
}
