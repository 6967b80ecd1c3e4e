package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/api"
	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/results"
	"github.com/pgqueue/queue/internal/testutil"
)

// emailType is the tests' strict kind, shaped like EMAIL_SEND: its data rules are its
// struct tags. The other accepted types are testutil's (TEST_JOB, and TEST_ANY, whose
// data may be any object). Every other type, the built-in ones included, is unknown to
// this API and refused on "type".
const emailType = "TEST_EMAIL"

type emailData struct {
	To       string  `json:"to" validate:"required,email"`
	Subject  string  `json:"subject" validate:"required"`
	Template string  `json:"template" validate:"required"`
	UserID   *string `json:"userId"`
}

// emailKind is the strict kind with handler h (nil: checks only, as the API does).
func emailKind(h kinds.Handler[emailData]) kinds.Kind { return kinds.Define(emailType, h) }

// testRegistry is the API's registry: the strict kind and testutil's kinds.
func testRegistry() *kinds.Registry {
	reg := testutil.Kinds(nil)
	reg.Add(emailKind(nil))
	return reg
}

// anyType accepts any data object (the no-op type of these tests).
const anyType = testutil.AnyName

type env struct {
	t      *testing.T
	pool   *pgxpool.Pool
	client *queue.Client
	srv    *api.Server
	http   *httptest.Server
	logs   *testutil.SyncBuffer
}

// setup starts the API on a fresh database; tune may change its Deps.
func setup(t *testing.T, tune ...func(*api.Deps)) *env {
	t.Helper()
	pool := testutil.NewPool(t)
	client, err := queue.NewClient(pool, queue.ClientConfig{
		Kinds: testRegistry(), RemoveOnComplete: ptr(-1), RemoveOnFail: ptr(-1),
	})
	require.NoError(t, err)
	t.Cleanup(client.Close)
	logs := &testutil.SyncBuffer{}
	d := api.Deps{
		Pool: pool, Client: client,
		Logger:   slog.New(slog.NewJSONHandler(logs, nil)),
		WaitPoll: 10 * time.Millisecond,
	}
	for _, f := range tune {
		f(&d)
	}
	srv, err := api.New(d)
	require.NoError(t, err)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	t.Cleanup(srv.StopStreams)
	return &env{t: t, pool: pool, client: client, srv: srv, http: ts, logs: logs}
}

func ptr[T any](v T) *T { return &v }

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), string(r.body))
	return m
}

// errorBody checks the API's error shape and returns code and details.
func (r response) errorBody(t *testing.T) (string, []map[string]any) {
	t.Helper()
	var b struct {
		Error struct {
			Code    string           `json:"code"`
			Message string           `json:"message"`
			Details []map[string]any `json:"details"`
		} `json:"error"`
	}
	require.NoError(t, json.Unmarshal(r.body, &b), string(r.body))
	require.NotEmpty(t, b.Error.Code, string(r.body))
	require.NotEmpty(t, b.Error.Message, string(r.body))
	return b.Error.Code, b.Error.Details
}

func (r response) fields(t *testing.T) []string {
	t.Helper()
	_, details := r.errorBody(t)
	out := make([]string, len(details))
	for i, d := range details {
		out[i] = d["field"].(string)
	}
	return out
}

func (e *env) do(method, path string, body any, headers ...string) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		require.NoError(e.t, err)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.http.URL+path, rd)
	require.NoError(e.t, err)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := e.http.Client().Do(req)
	require.NoError(e.t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	require.NoError(e.t, err)
	return response{status: res.StatusCode, header: res.Header, body: raw}
}

func (e *env) requireError(r response, status int, code string) {
	e.t.Helper()
	require.Equal(e.t, status, r.status, string(r.body))
	got, _ := r.errorBody(e.t)
	require.Equal(e.t, code, got)
}

var email = map[string]any{"to": "user@example.com", "subject": "Welcome", "template": "welcome"}

func (e *env) submit(body any) map[string]any {
	e.t.Helper()
	r := e.do("POST", "/api/queue/jobs", body)
	require.Equal(e.t, http.StatusCreated, r.status, string(r.body))
	return r.json(e.t)
}

func (e *env) submitEmail() string {
	e.t.Helper()
	return e.submit(map[string]any{"type": emailType, "data": email})["id"].(string)
}

// testTypes are every type of testRegistry, for claims.
var testTypes = []string{emailType, testutil.KindName, testutil.AnyName}

// claim makes the next job of the default queue active on worker w, as a worker would.
func (e *env) claim(w string) queue.Job {
	e.t.Helper()
	got, err := queue.NewRunner(e.pool, w).Claim(context.Background(), queue.DefaultQueue, testTypes, 1, time.Minute)
	require.NoError(e.t, err)
	require.Len(e.t, got, 1)
	return got[0]
}

// finish ends a claimed job's attempt: ok, or failed for good. removeAtOnce deletes the
// job as it finishes, as a worker does for retention 0 once it stored the snapshot.
func (e *env) finish(w string, j queue.Job, ok bool, removeAtOnce bool) {
	e.t.Helper()
	keep := -1
	if removeAtOnce {
		keep = 0
	}
	states, err := queue.NewRunner(e.pool, w).Finish(context.Background(), queue.RetentionDefaults{RemoveOnComplete: keep, RemoveOnFail: keep},
		[]queue.Outcome{{Claim: queue.Claim{Seq: j.Seq, Token: j.LeaseToken}, Attempt: j.AttemptsMade, OK: ok, Remove: removeAtOnce,
			Result: []byte(`{"ok":true}`), Message: "boom", RetryIn: -1}})
	require.NoError(e.t, err)
	require.Contains(e.t, states, j.Seq, "the claim still held the job")
}

func TestHealth(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.do("GET", "/api/health", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.JSONEq(t, `{"status":"ok"}`, string(r.body))
}

func TestReady(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.do("GET", "/api/ready", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.JSONEq(t, `{"postgres":"up","redis":"down"}`, string(r.body), "no Redis pinger: down, still 200")

	up := setup(t, func(d *api.Deps) { d.RedisPing = func(context.Context) error { return nil } })
	r = up.do("GET", "/api/ready", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.JSONEq(t, `{"postgres":"up","redis":"up"}`, string(r.body))

	down := setup(t, func(d *api.Deps) { d.RedisPing = func(context.Context) error { return fmt.Errorf("refused") } })
	down.pool.Close() // Postgres unreachable from this process
	r = down.do("GET", "/api/ready", nil)
	require.Equal(t, http.StatusServiceUnavailable, r.status)
	require.JSONEq(t, `{"postgres":"down","redis":"down"}`, string(r.body))
}

func TestInternalErrorsDoNotLeak(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.pool.Close()
	r := e.do("GET", "/api/queue/jobs/1", nil, "X-Request-ID", "leak-check-1")
	e.requireError(r, http.StatusInternalServerError, "internal")
	require.NotContains(t, strings.ToLower(string(r.body)), "pool")
	require.NotContains(t, strings.ToLower(string(r.body)), "select")
	require.Contains(t, string(r.body), "leak-check-1", "the message names the request id to look up")
	require.Contains(t, e.logs.String(), "closed pool", "the real error is logged")
}

func TestSubmitJob(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.do("POST", "/api/queue/jobs", map[string]any{"type": emailType, "data": email, "options": map[string]any{"priority": 10}})
	require.Equal(t, http.StatusCreated, r.status, string(r.body))
	job := r.json(t)
	for _, k := range []string{"id", "type", "queue", "group", "state", "data", "priority", "attemptsMade", "maxAttempts",
		"progress", "result", "error", "errors", "createdAt", "runAt", "startedAt", "finishedAt"} {
		require.Contains(t, job, k)
	}
	require.Len(t, job, 17, "exactly the fields of the job object")
	require.Nil(t, job["group"], "no options.group: none")
	require.Equal(t, emailType, job["type"])
	require.Equal(t, "waiting", job["state"])
	require.Equal(t, queue.DefaultQueue, job["queue"], "no options.queue: the default queue")
	require.EqualValues(t, 10, job["priority"])
	require.EqualValues(t, 3, job["maxAttempts"])
	require.EqualValues(t, 0, job["attemptsMade"])
	require.Equal(t, []any{}, job["errors"])
	require.Nil(t, job["result"])
	require.Nil(t, job["startedAt"])
	require.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`, job["createdAt"])
	require.Equal(t, email, job["data"])

	delayed := e.submit(map[string]any{"type": emailType, "data": email, "options": map[string]any{"delay": 60000}})
	require.Equal(t, "delayed", delayed["state"])

	// A jobId that exists: 200 with the existing job, whatever the new data says.
	custom := map[string]any{"type": emailType, "data": email, "options": map[string]any{"jobId": "welcome-42", "removeOnComplete": true, "removeOnFail": 5}}
	first := e.do("POST", "/api/queue/jobs", custom)
	require.Equal(t, http.StatusCreated, first.status, string(first.body))
	require.Equal(t, "welcome-42", first.json(t)["id"])
	other := map[string]any{"type": emailType, "data": map[string]any{"to": "x@example.com", "subject": "Other", "template": "t"},
		"options": map[string]any{"jobId": "welcome-42"}}
	again := e.do("POST", "/api/queue/jobs", other)
	require.Equal(t, http.StatusOK, again.status, string(again.body))
	require.Equal(t, email, again.json(t)["data"])
}

func TestSubmitJobValidation(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cases := []struct {
		name   string
		body   any
		fields []string
	}{
		{"every problem at once", map[string]any{
			"type": emailType, "data": map[string]any{"to": "nope", "subject": "Hi", "template": "t", "cc": "x"},
			"options": map[string]any{"priority": 21, "attempts": 0, "delay": -1, "bogus": 1, "backoff": map[string]any{"type": "linear", "delay": 86400001},
				"jobId": "123", "removeOnComplete": -2, "timeout": 0},
		}, []string{"options.bogus", "options.priority", "options.delay", "options.attempts", "options.backoff.type", "options.backoff.delay",
			"options.jobId", "options.removeOnComplete", "options.timeout", "data.cc", "data.to"}},
		{"unknown type", map[string]any{"type": "NOPE", "data": map[string]any{}}, []string{"type"}},
		{"a built-in type this API does not register", map[string]any{"type": "DATA_EXPORT", "data": map[string]any{}}, []string{"type"}},
		{"missing type and data", map[string]any{}, []string{"type", "data"}},
		{"wrong JSON types", map[string]any{"type": 5, "data": "x", "options": map[string]any{"priority": "high", "delay": 1.5, "removeOnFail": "yes", "jobId": 7}},
			[]string{"type", "options.priority", "options.delay", "options.jobId", "options.removeOnFail", "data"}},
		{"options not an object", map[string]any{"type": anyType, "data": map[string]any{}, "options": []int{1}}, []string{"options"}},
		{"unknown top-level field", map[string]any{"type": anyType, "data": map[string]any{}, "extra": true}, []string{"extra"}},
		{"body is not an object", `[1,2]`, []string{"body"}},
		{"data too large", map[string]any{"type": anyType, "data": map[string]any{"x": strings.Repeat("a", queue.MaxDataBytes)}}, []string{"data"}},
	}
	for _, c := range cases {
		r := e.do("POST", "/api/queue/jobs", c.body)
		e.requireError(r, http.StatusBadRequest, "validation_failed")
		require.ElementsMatch(t, c.fields, r.fields(t), c.name)
	}

	// Messages say what is wrong with each field.
	r := e.do("POST", "/api/queue/jobs", map[string]any{"type": emailType, "data": map[string]any{"to": "nope", "subject": "s", "template": "t"}})
	_, details := r.errorBody(t)
	require.Equal(t, []map[string]any{{"field": "data.to", "message": "must be an e-mail address"}}, details)

	for _, body := range []string{`{"type":`, `not json`, `{} {}`, ``} {
		r := e.do("POST", "/api/queue/jobs", body)
		e.requireError(r, http.StatusBadRequest, "bad_request")
	}

	deep := strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat(`}`, 40)
	r = e.do("POST", "/api/queue/jobs", `{"type":"TEST_ANY","data":`+deep+`}`)
	e.requireError(r, http.StatusBadRequest, "validation_failed")
	ok := strings.Repeat(`{"a":`, 30) + `1` + strings.Repeat(`}`, 30)
	r = e.do("POST", "/api/queue/jobs", `{"type":"TEST_ANY","data":`+ok+`}`)
	require.Equal(t, http.StatusCreated, r.status, string(r.body), "31 levels in all are allowed")

	for _, body := range []string{`{"type":"TEST_ANY","data":{"x":"a\u0000b"}}`, `{"type":"TEST_ANY","data":{"x":"\ud800"}}`, `{"type":"TEST_ANY","data":{"x":"\udc00\ud800"}}`} {
		r = e.do("POST", "/api/queue/jobs", body)
		e.requireError(r, http.StatusBadRequest, "validation_failed")
	}
	r = e.do("POST", "/api/queue/jobs", `{"type":"TEST_ANY","data":{"x":"\ud83d\ude00 \\u0000 \u00e9"}}`)
	require.Equal(t, http.StatusCreated, r.status, string(r.body), "a surrogate pair and an escaped backslash are fine")
	e.requireError(e.do("POST", "/api/queue/jobs", []byte("{\"type\":\"TEST_ANY\",\"data\":{\"x\":\"\xff\"}}")), http.StatusBadRequest, "bad_request")
	r = e.do("POST", "/api/queue/jobs", `{"type":"TEST_ANY","data":{"x":1e1000000}}`)
	e.requireError(r, http.StatusBadRequest, "validation_failed")
	require.Equal(t, []string{"data"}, r.fields(t))

	big := `{"type":"TEST_ANY","data":{"x":"` + strings.Repeat("a", 1<<20) + `"}}`
	r = e.do("POST", "/api/queue/jobs", big)
	e.requireError(r, http.StatusRequestEntityTooLarge, "payload_too_large")

	var n int
	require.NoError(t, e.pool.QueryRow(context.Background(), "SELECT count(*) FROM queue.jobs").Scan(&n))
	require.Equal(t, 2, n, "only the valid submissions were stored")
}

func TestSubmitBulk(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.submit(map[string]any{"type": emailType, "data": email, "options": map[string]any{"jobId": "existing"}})

	r := e.do("POST", "/api/queue/jobs/bulk", map[string]any{"jobs": []any{
		map[string]any{"type": emailType, "data": email},
		map[string]any{"type": anyType, "data": map[string]any{}, "options": map[string]any{"priority": 20}},
		map[string]any{"type": emailType, "data": map[string]any{"to": "b@example.com", "subject": "x", "template": "t"}, "options": map[string]any{"jobId": "existing"}},
	}})
	require.Equal(t, http.StatusCreated, r.status, string(r.body))
	var out struct{ Jobs []map[string]any }
	require.NoError(t, json.Unmarshal(r.body, &out))
	require.Len(t, out.Jobs, 3)
	require.Equal(t, emailType, out.Jobs[0]["type"])
	require.EqualValues(t, 20, out.Jobs[1]["priority"])
	require.Equal(t, "existing", out.Jobs[2]["id"])
	require.Equal(t, email, out.Jobs[2]["data"], "the existing job, unchanged")

	bad := e.do("POST", "/api/queue/jobs/bulk", map[string]any{"jobs": []any{
		map[string]any{"type": anyType, "data": map[string]any{}},
		map[string]any{"type": anyType, "data": map[string]any{}, "options": map[string]any{"jobId": "dup"}},
		map[string]any{"type": anyType, "data": map[string]any{}, "options": map[string]any{"jobId": "dup"}},
		map[string]any{"type": emailType, "data": map[string]any{"subject": "s", "template": "t"}},
		"not a job",
	}})
	e.requireError(bad, http.StatusBadRequest, "validation_failed")
	require.ElementsMatch(t, []string{"jobs[2].options.jobId", "jobs[3].data.to", "jobs[4]"}, bad.fields(t))

	for _, body := range []any{map[string]any{"jobs": []any{}}, map[string]any{}, map[string]any{"jobs": "x"}, map[string]any{"jobs": []any{}, "x": 1}} {
		e.requireError(e.do("POST", "/api/queue/jobs/bulk", body), http.StatusBadRequest, "validation_failed")
	}
	tooMany := make([]any, queue.MaxBulk+1)
	for i := range tooMany {
		tooMany[i] = map[string]any{"type": anyType, "data": map[string]any{}}
	}
	r = e.do("POST", "/api/queue/jobs/bulk", map[string]any{"jobs": tooMany})
	e.requireError(r, http.StatusBadRequest, "validation_failed")
	require.Equal(t, []string{"jobs"}, r.fields(t))
	e.requireError(e.do("POST", "/api/queue/jobs/bulk", "{"), http.StatusBadRequest, "bad_request")

	r = e.do("POST", "/api/queue/jobs/bulk", map[string]any{"jobs": tooMany[:queue.MaxBulk]})
	require.Equal(t, http.StatusCreated, r.status, string(r.body))

	var n int
	require.NoError(t, e.pool.QueryRow(context.Background(), "SELECT count(*) FROM queue.jobs").Scan(&n))
	require.Equal(t, 3+queue.MaxBulk, n, "rejected requests stored nothing")
}

func TestGetJob(t *testing.T) {
	t.Parallel()
	rd := newRedis(t)
	e := setup(t, rd.use)
	id := e.submit(map[string]any{"type": emailType, "data": email, "options": map[string]any{"removeOnComplete": true}})["id"].(string)

	r := e.do("GET", "/api/queue/jobs/"+id, nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, id, r.json(t)["id"])

	r = e.do("GET", "/api/queue/jobs/unknown", nil)
	e.requireError(r, http.StatusNotFound, "not_found")

	// A job retention removed is answered from the result cache (written as a worker does)...
	j := e.claim("w1")
	e.finish("w1", j, true, true)
	rd.finished(t, j, queue.StateCompleted)
	var n int
	require.NoError(t, e.pool.QueryRow(context.Background(), "SELECT count(*) FROM queue.jobs WHERE id = $1", id).Scan(&n))
	require.Zero(t, n, "retention removed the job as it finished")
	r = e.do("GET", "/api/queue/jobs/"+id, nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, "completed", r.json(t)["state"])

	// ...until DELETE (or clean) removes it: DELETE of a job retention removed is 204 and
	// purges its cached copy, so GET is 404 again, and a second DELETE finds nothing.
	require.Equal(t, http.StatusNoContent, e.do("DELETE", "/api/queue/jobs/"+id, nil).status)
	e.requireError(e.do("GET", "/api/queue/jobs/"+id, nil), http.StatusNotFound, "not_found")
	e.requireError(e.do("DELETE", "/api/queue/jobs/"+id, nil), http.StatusNotFound, "not_found")
	other := e.submitEmail()
	o, err := e.client.Get(context.Background(), other)
	require.NoError(t, err)
	rd.finished(t, o, queue.StateCompleted)
	require.Equal(t, http.StatusNoContent, e.do("DELETE", "/api/queue/jobs/"+other, nil).status)
	e.requireError(e.do("GET", "/api/queue/jobs/"+other, nil), http.StatusNotFound, "not_found")
	_, cached := rd.store.Job(context.Background(), other)
	require.False(t, cached, "DELETE drops the cached result")
}

func TestListJobs(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var ids []string
	for range 5 {
		ids = append(ids, e.submitEmail())
	}
	e.submit(map[string]any{"type": anyType, "data": map[string]any{}})

	type page struct {
		Jobs       []queue.Job `json:"jobs"`
		NextCursor *string     `json:"nextCursor"`
	}
	get := func(q string) page {
		r := e.do("GET", "/api/queue/jobs"+q, nil)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		var p page
		require.NoError(t, json.Unmarshal(r.body, &p))
		return p
	}
	p := get("?type=" + emailType + "&limit=2")
	require.Len(t, p.Jobs, 2)
	require.Equal(t, ids[4], p.Jobs[0].ID, "newest first")
	require.NotNil(t, p.NextCursor)
	e.submitEmail() // a concurrent insert does not shift the next pages
	p2 := get("?type=" + emailType + "&limit=2&cursor=" + *p.NextCursor)
	require.Equal(t, []string{ids[2], ids[1]}, []string{p2.Jobs[0].ID, p2.Jobs[1].ID})
	p3 := get("?type=" + emailType + "&limit=2&cursor=" + *p2.NextCursor)
	require.Len(t, p3.Jobs, 1)
	require.Nil(t, p3.NextCursor)

	all := get("")
	require.Len(t, all.Jobs, 7)
	raw := e.do("GET", "/api/queue/jobs?state=completed", nil)
	require.JSONEq(t, `{"jobs":[],"nextCursor":null}`, string(raw.body))

	e.claim("w1")
	active := get("?state=active")
	require.Len(t, active.Jobs, 1)

	for q, field := range map[string]string{
		"?limit=0": "limit", "?limit=501": "limit", "?limit=x": "limit", "?state=done": "state", "?cursor=zzz": "cursor",
	} {
		r := e.do("GET", "/api/queue/jobs"+q, nil)
		e.requireError(r, http.StatusBadRequest, "validation_failed")
		require.Equal(t, []string{field}, r.fields(t), q)
	}
}

func TestDeleteJob(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.submitEmail()
	j := e.claim("w1")
	e.requireError(e.do("DELETE", "/api/queue/jobs/"+id, nil), http.StatusConflict, "conflict")
	require.Equal(t, http.StatusOK, e.do("POST", "/api/queue/jobs/"+id+"/cancel", nil).status)
	e.requireError(e.do("DELETE", "/api/queue/jobs/"+id, nil), http.StatusConflict, "conflict")
	e.finish("w1", j, false, false) // the handler returned
	r := e.do("DELETE", "/api/queue/jobs/"+id, nil)
	require.Equal(t, http.StatusNoContent, r.status)
	require.Empty(t, r.body)
	e.requireError(e.do("DELETE", "/api/queue/jobs/"+id, nil), http.StatusNotFound, "not_found")
	e.requireError(e.do("GET", "/api/queue/jobs/"+id, nil), http.StatusNotFound, "not_found")
}

func TestRetryJob(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.submitEmail()
	e.requireError(e.do("POST", "/api/queue/jobs/"+id+"/retry", nil), http.StatusConflict, "conflict")
	j := e.claim("w1")
	e.finish("w1", j, false, false)

	r := e.do("POST", "/api/queue/jobs/"+id+"/retry", nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	job := r.json(t)
	require.Equal(t, "waiting", job["state"])
	require.EqualValues(t, 0, job["attemptsMade"])
	require.Nil(t, job["error"])
	require.Nil(t, job["result"])
	require.EqualValues(t, 0, job["progress"])
	require.Len(t, job["errors"], 1)

	e.requireError(e.do("POST", "/api/queue/jobs/nope/retry", nil), http.StatusNotFound, "not_found")
}

func TestCancelJob(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.submitEmail()
	r := e.do("POST", "/api/queue/jobs/"+id+"/cancel", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "cancelled", r.json(t)["state"])
	require.NotNil(t, r.json(t)["finishedAt"])
	e.requireError(e.do("POST", "/api/queue/jobs/"+id+"/cancel", nil), http.StatusConflict, "conflict")
	e.requireError(e.do("POST", "/api/queue/jobs/nope/cancel", nil), http.StatusNotFound, "not_found")

	// An active job is cancelled at once; it keeps its lease until its handler returns.
	active := e.submitEmail()
	e.claim("w1")
	r = e.do("POST", "/api/queue/jobs/"+active+"/cancel", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "cancelled", r.json(t)["state"])
}

func TestWait(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.submitEmail()

	// Still waiting at the timeout: 200 with the job as it is.
	start := time.Now()
	r := e.do("GET", "/api/queue/jobs/"+id+"/wait?timeout=150ms", nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, "waiting", r.json(t)["state"])
	require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)

	// Completes while we wait (integer milliseconds).
	go func() {
		time.Sleep(100 * time.Millisecond)
		r := queue.NewRunner(e.pool, "w1")
		j, err := r.Claim(context.Background(), queue.DefaultQueue, []string{emailType}, 1, time.Minute)
		if err == nil && len(j) == 1 {
			_, _ = r.Finish(context.Background(), queue.RetentionDefaults{RemoveOnComplete: -1, RemoveOnFail: -1},
				[]queue.Outcome{{Claim: queue.Claim{Seq: j[0].Seq, Token: j[0].LeaseToken}, Attempt: 1, OK: true, Result: []byte(`{"sent":true}`)}})
		}
	}()
	r = e.do("GET", "/api/queue/jobs/"+id+"/wait?timeout=10000", nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, "completed", r.json(t)["state"])
	require.Equal(t, map[string]any{"sent": true}, r.json(t)["result"])

	// Finished already: at once.
	r = e.do("GET", "/api/queue/jobs/"+id+"/wait", nil)
	require.Equal(t, "completed", r.json(t)["state"])

	e.requireError(e.do("GET", "/api/queue/jobs/nope/wait?timeout=1s", nil), http.StatusNotFound, "not_found")
	for _, bad := range []string{"61s", "60001", "-1", "-1s", "soon"} {
		r := e.do("GET", "/api/queue/jobs/"+id+"/wait?timeout="+bad, nil)
		e.requireError(r, http.StatusBadRequest, "validation_failed")
		require.Equal(t, []string{"timeout"}, r.fields(t))
	}
	require.Equal(t, http.StatusOK, e.do("GET", "/api/queue/jobs/"+id+"/wait?timeout=60s", nil).status)
}

func TestWaitSeesJobRemovedAsItFinishes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.submit(map[string]any{"type": emailType, "data": email, "options": map[string]any{"removeOnFail": true}})["id"].(string)
	go func() {
		time.Sleep(100 * time.Millisecond)
		r := queue.NewRunner(e.pool, "w1")
		j, err := r.Claim(context.Background(), queue.DefaultQueue, []string{emailType}, 1, time.Minute)
		if err == nil && len(j) == 1 {
			// Retention 0: the worker removes the job as it records the failure.
			_, _ = r.Finish(context.Background(), queue.RetentionDefaults{RemoveOnComplete: 0, RemoveOnFail: 0},
				[]queue.Outcome{{Claim: queue.Claim{Seq: j[0].Seq, Token: j[0].LeaseToken}, Attempt: 1, OK: false, Remove: true,
					Message: "smtp refused", RetryIn: -1}})
		}
	}()
	r := e.do("GET", "/api/queue/jobs/"+id+"/wait?timeout=10s", nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	job := r.json(t)
	require.Equal(t, "failed", job["state"], "rebuilt from the audit trail")
	require.Equal(t, "smtp refused", job["error"])
	require.NotNil(t, job["finishedAt"])
	e.requireError(e.do("GET", "/api/queue/jobs/"+id, nil), http.StatusNotFound, "not_found")
}

func TestWaitIsLimitedByMaxStreams(t *testing.T) {
	t.Parallel()
	e := setup(t, func(d *api.Deps) { d.MaxStreams = 1 })
	id := e.submitEmail()
	done := make(chan response)
	go func() { done <- e.do("GET", "/api/queue/jobs/"+id+"/wait?timeout=5s", nil) }()
	require.Eventually(t, func() bool {
		return strings.Contains(string(e.do("GET", "/metrics", nil).body), "queue_api_open_streams 1")
	}, 5*time.Second, 10*time.Millisecond, "the first wait is open")
	e.requireError(e.do("GET", "/api/queue/jobs/"+id+"/wait?timeout=1ms", nil), http.StatusServiceUnavailable, "unavailable")
	e.requireError(e.do("GET", "/api/queue/events", nil), http.StatusServiceUnavailable, "unavailable")

	// StopStreams (shutdown) answers open waits at once.
	start := time.Now()
	e.srv.StopStreams()
	r := <-done
	require.Equal(t, http.StatusOK, r.status)
	require.Less(t, time.Since(start), 4*time.Second)
}

func TestEvents(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.requireError(e.do("GET", "/api/queue/events", nil), http.StatusServiceUnavailable, "unavailable")

	rd := newRedis(t)
	e = setup(t, rd.use, func(d *api.Deps) { d.Heartbeat = 20 * time.Millisecond })
	at := queue.Timestamp{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	progress := 50
	go func() {
		// Once the stream is subscribed, publish as workers do, then end the stream.
		require.Eventually(t, func() bool {
			return strings.Contains(string(e.do("GET", "/metrics", nil).body), "queue_api_open_streams 1")
		}, 5*time.Second, 5*time.Millisecond)
		time.Sleep(50 * time.Millisecond) // long enough for a heartbeat
		rd.pub.Publish(results.Event{Event: "job", ID: "1", Type: anyType, Queue: queue.DefaultQueue, State: "active", At: at}, nil)
		rd.pub.Publish(results.Event{Event: "job", ID: "2", Type: emailType, Queue: queue.DefaultQueue, State: "active", At: at}, nil)
		rd.pub.Publish(results.Event{Event: "progress", ID: "2", Type: emailType, Queue: queue.DefaultQueue, Progress: &progress, At: at}, nil)
		time.Sleep(200 * time.Millisecond)
		e.srv.StopStreams()
	}()
	r := e.do("GET", "/api/queue/events?type="+emailType, nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "text/event-stream", r.header.Get("Content-Type"))
	body := string(r.body)
	require.Contains(t, body, "event: job\ndata: {\"id\":\"2\",\"type\":\"TEST_EMAIL\",\"queue\":\"default\",\"state\":\"active\",\"at\":\"2026-01-01T00:00:00.000Z\"}\n\n")
	require.Contains(t, body, "event: progress\ndata: {\"id\":\"2\",\"progress\":50,\"at\":\"2026-01-01T00:00:00.000Z\"}\n\n")
	require.NotContains(t, body, `"id":"1"`, "filtered by type")
	require.Contains(t, body, ": heartbeat\n\n")
}

func TestStats(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.submitEmail()
	e.submitEmail()
	e.submit(map[string]any{"type": anyType, "data": map[string]any{}, "options": map[string]any{"delay": 10000}})
	r := e.do("GET", "/api/queue/stats", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.JSONEq(t, `{"waiting":2,"active":0,"completed":0,"failed":0,"delayed":1,"cancelled":0,"paused":false,
		"byType":{"TEST_EMAIL":{"waiting":2,"active":0,"completed":0,"failed":0,"delayed":0,"cancelled":0},
		          "TEST_ANY":{"waiting":0,"active":0,"completed":0,"failed":0,"delayed":1,"cancelled":0}},
		"byQueue":{"default":{"waiting":2,"active":0,"completed":0,"failed":0,"delayed":1,"cancelled":0}}}`, string(r.body))
}

func TestPauseResume(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.do("POST", "/api/queue/pause", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.JSONEq(t, `{"paused":true}`, string(r.body))
	require.Equal(t, true, e.do("GET", "/api/queue/stats", nil).json(t)["paused"])
	e.submitEmail() // submissions are still accepted
	got, err := queue.NewRunner(e.pool, "w1").Claim(context.Background(), queue.DefaultQueue, []string{emailType}, 1, time.Minute)
	require.NoError(t, err)
	require.Empty(t, got, "nothing is claimed while paused")

	r = e.do("POST", "/api/queue/resume", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.JSONEq(t, `{"paused":false}`, string(r.body))
}

func TestClean(t *testing.T) {
	t.Parallel()
	rd := newRedis(t)
	e := setup(t, rd.use)
	done := e.submitEmail()
	failed := e.submitEmail()
	cancelled := e.submitEmail()
	j := e.claim("w1")
	e.finish("w1", j, true, false)
	e.finish("w1", e.claim("w1"), false, false)
	require.Equal(t, http.StatusOK, e.do("POST", "/api/queue/jobs/"+cancelled+"/cancel", nil).status)
	rd.finished(t, j, queue.StateCompleted)

	// The defaults (a day, two days) keep what just finished.
	r := e.do("POST", "/api/queue/clean/completed", nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.JSONEq(t, `{"removed":0}`, string(r.body))
	r = e.do("POST", "/api/queue/clean/failed", "{}")
	require.JSONEq(t, `{"removed":0}`, string(r.body))

	r = e.do("POST", "/api/queue/clean/completed", map[string]any{"olderThan": 0})
	require.JSONEq(t, `{"removed":1}`, string(r.body))
	_, cached := rd.store.Job(context.Background(), done)
	require.False(t, cached, "cached results are dropped too")
	e.requireError(e.do("GET", "/api/queue/jobs/"+done, nil), http.StatusNotFound, "not_found")

	r = e.do("POST", "/api/queue/clean/failed", map[string]any{"olderThan": 0})
	require.JSONEq(t, `{"removed":2}`, string(r.body), "failed and cancelled")
	e.requireError(e.do("GET", "/api/queue/jobs/"+failed, nil), http.StatusNotFound, "not_found")

	for _, body := range []any{map[string]any{"olderThan": -1}, map[string]any{"olderThan": "1d"}, map[string]any{"age": 1}, `[]`} {
		e.requireError(e.do("POST", "/api/queue/clean/failed", body), http.StatusBadRequest, "validation_failed")
	}
	e.requireError(e.do("POST", "/api/queue/clean/completed", "nope"), http.StatusBadRequest, "bad_request")
}

func TestUnknownRoute(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.requireError(e.do("GET", "/api/nope", nil), http.StatusNotFound, "not_found")
	e.requireError(e.do("PUT", "/api/queue/jobs", nil), http.StatusNotFound, "not_found")
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.do("GET", "/api/health", nil, "X-Request-ID", "abc-123")
	require.Equal(t, "abc-123", r.header.Get("X-Request-ID"))
	r = e.do("GET", "/api/health", nil)
	require.Regexp(t, `^[0-9a-f]{32}$`, r.header.Get("X-Request-ID"))
	r = e.do("GET", "/api/health", nil, "X-Request-ID", "bad id\twith spaces")
	require.Regexp(t, `^[0-9a-f]{32}$`, r.header.Get("X-Request-ID"), "an unsafe id is replaced")

	logs := e.logs.String()
	require.Contains(t, logs, `"request_id":"abc-123"`)
	require.Contains(t, logs, `"route":"/api/health"`)
	require.Contains(t, logs, `"status":200`)
	require.Contains(t, logs, `"latency_ms"`)
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	e := setup(t, func(d *api.Deps) { d.APIKeys = []string{"k"} })
	e.do("GET", "/api/health", nil)
	e.do("POST", "/api/queue/jobs", map[string]any{"type": emailType, "data": email}, "X-API-Key", "k")
	e.do("GET", "/api/queue/jobs/nope", nil, "X-API-Key", "k")
	r := e.do("GET", "/metrics", nil)
	require.Equal(t, http.StatusOK, r.status, "no key needed")
	body := string(r.body)
	require.Contains(t, body, `queue_api_http_requests_total{method="GET",route="/api/health",status="200"} 1`)
	require.Contains(t, body, `queue_api_http_requests_total{method="GET",route="/api/queue/jobs/:id",status="404"} 1`)
	require.Contains(t, body, `queue_api_http_request_duration_seconds_bucket{method="POST",route="/api/queue/jobs"`)
	require.Contains(t, body, `queue_api_jobs_submitted_total{type="TEST_EMAIL"} 1`)
	require.Contains(t, body, `queue_jobs{state="waiting",type="TEST_EMAIL"} 1`)
	require.Contains(t, body, `queue_paused 0`)
}

func TestNotifications(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	var first, second int64
	require.NoError(t, e.pool.QueryRow(ctx, `INSERT INTO queue.notifications (user_id, title, body, type, metadata)
		VALUES ('u1', 'Hello', 'World', 'info', '{"k":1}') RETURNING id`).Scan(&first))
	require.NoError(t, e.pool.QueryRow(ctx, `INSERT INTO queue.notifications (user_id, title, body, type, metadata)
		VALUES ('u1', 'Again', 'Body', 'warning', '{}') RETURNING id`).Scan(&second))

	r := e.do("GET", "/api/notifications?userId=u1&limit=1", nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	var page struct {
		Notifications []map[string]any `json:"notifications"`
		NextCursor    *string          `json:"nextCursor"`
	}
	require.NoError(t, json.Unmarshal(r.body, &page))
	require.Len(t, page.Notifications, 1)
	n := page.Notifications[0]
	for _, k := range []string{"id", "userId", "title", "body", "type", "metadata", "createdAt", "readAt"} {
		require.Contains(t, n, k)
	}
	require.Equal(t, fmt.Sprint(second), n["id"], "newest first")
	require.NotNil(t, page.NextCursor)
	r = e.do("GET", "/api/notifications?userId=u1&limit=1&cursor="+*page.NextCursor, nil)
	require.NoError(t, json.Unmarshal(r.body, &page))
	require.Equal(t, fmt.Sprint(first), page.Notifications[0]["id"])

	r = e.do("POST", fmt.Sprintf("/api/notifications/%d/read", first), nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.NotNil(t, r.json(t)["readAt"])
	r = e.do("GET", "/api/notifications?userId=u1&unread=true", nil)
	require.NoError(t, json.Unmarshal(r.body, &page))
	require.Len(t, page.Notifications, 1)
	require.Nil(t, page.NextCursor)

	e.requireError(e.do("POST", "/api/notifications/999999/read", nil), http.StatusNotFound, "not_found")
	e.requireError(e.do("POST", "/api/notifications/abc/read", nil), http.StatusNotFound, "not_found")
	for _, q := range []string{"", "?userId=u1&unread=maybe", "?userId=u1&limit=0", "?userId=u1&cursor=%25%25"} {
		e.requireError(e.do("GET", "/api/notifications"+q, nil), http.StatusBadRequest, "validation_failed")
	}
}

// TestStreamsOutliveServerTimeouts: a wait longer than the server's write timeout still
// gets its answer (net/http would cut writes after the write deadline).
func TestStreamsOutliveServerTimeouts(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ts := httptest.NewUnstartedServer(e.srv)
	ts.Config.ReadTimeout = 200 * time.Millisecond
	ts.Config.WriteTimeout = 200 * time.Millisecond
	ts.Start()
	t.Cleanup(ts.Close)
	id := e.submitEmail()

	start := time.Now()
	res, err := ts.Client().Get(ts.URL + "/api/queue/jobs/" + id + "/wait?timeout=700ms")
	require.NoError(t, err)
	defer res.Body.Close()
	var job map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&job))
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, "waiting", job["state"])
	require.GreaterOrEqual(t, time.Since(start), 700*time.Millisecond)
}
