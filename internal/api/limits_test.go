package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/api"
	"github.com/pgqueue/queue/internal/metrics"
	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/testutil"
	"github.com/pgqueue/queue/internal/worker"
)

// putLimits sends PUT /api/queue/queues/:name.
func (e *env) putLimits(name string, body any, headers ...string) response {
	e.t.Helper()
	return e.do("PUT", "/api/queue/queues/"+name, body, headers...)
}

// limitsOf reads a queue's settings as GET shows them, as raw JSON values.
func (e *env) limitsOf(name string) map[string]any {
	e.t.Helper()
	r := e.do("GET", "/api/queue/queues/"+name, nil)
	require.Equal(e.t, http.StatusOK, r.status, string(r.body))
	q := r.json(e.t)
	out := map[string]any{}
	for _, k := range []string{"concurrency", "rate", "groupConcurrency", "groupRate", "fair"} {
		out[k] = q[k]
	}
	return out
}

func TestSetQueueLimits(t *testing.T) {
	t.Parallel()
	e := setup(t)

	// A queue without jobs can be limited ahead of them; the answer is the queue object.
	r := e.putLimits("mail", `{"concurrency": 20, "rate": {"limit": 100, "period": 1000}, "groupConcurrency": 2,
		"groupRate": {"limit": 5, "period": 60000}, "fair": true}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	q := r.json(t)
	require.Len(t, q, 13, "exactly the fields of openapi.json's Queue")
	require.Equal(t, "mail", q["name"])
	require.Equal(t, false, q["paused"])
	require.Nil(t, q["heldBy"])
	want := map[string]any{
		"concurrency": 20.0, "rate": map[string]any{"limit": 100.0, "period": 1000.0},
		"groupConcurrency": 2.0, "groupRate": map[string]any{"limit": 5.0, "period": 60000.0}, "fair": true,
	}
	got := map[string]any{}
	for k := range want {
		got[k] = q[k]
	}
	require.Equal(t, want, got, "the answer shows the new settings")
	require.Equal(t, want, e.limitsOf("mail"), "GET shows them too")
	require.Contains(t, names(e.queueList()), "mail", "a queue with settings is listed")

	// Fields not given keep their value; null clears a limit.
	r = e.putLimits("mail", map[string]any{"concurrency": 3, "rate": nil})
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	want["concurrency"], want["rate"] = 3.0, nil
	require.Equal(t, want, e.limitsOf("mail"))

	r = e.putLimits("mail", map[string]any{"groupRate": nil, "groupConcurrency": nil, "fair": false})
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	want["groupRate"], want["groupConcurrency"], want["fair"] = nil, nil, false
	require.Equal(t, want, e.limitsOf("mail"))

	r = e.putLimits("mail", `{}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, want, e.limitsOf("mail"), "an empty object changes nothing")

	// fair is a switch, not a limit: null puts it back to its default, off.
	r = e.putLimits("mail", map[string]any{"fair": true})
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	r = e.putLimits("mail", `{"fair": null}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, want, e.limitsOf("mail"))

	// The bounds themselves are accepted.
	r = e.putLimits("mail", map[string]any{"concurrency": queue.MaxLimit,
		"rate": map[string]any{"limit": 1, "period": queue.MaxRatePeriodMs}, "groupRate": map[string]any{"limit": queue.MaxLimit, "period": 1}})
	require.Equal(t, http.StatusOK, r.status, string(r.body))

	// The setting reaches the engine: a claim of the queue takes no more than it allows,
	// and the queue then says which limit held it back.
	r = e.putLimits("mail", map[string]any{"concurrency": 2, "rate": nil, "groupRate": nil})
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	for range 3 {
		e.submit(inQueue("mail"))
	}
	claimed, err := queue.NewRunner(e.pool, "w1").ClaimLimited(context.Background(), "mail", testTypes, 5, time.Minute)
	require.NoError(t, err)
	require.Len(t, claimed, 2, "concurrency 2")
	q = e.do("GET", "/api/queue/queues/mail", nil).json(t)
	require.Equal(t, queue.LimitConcurrency, q["heldBy"])
	require.NotNil(t, q["heldSince"])

	// Clearing every limit lets the rest start.
	r = e.putLimits("mail", map[string]any{"concurrency": nil})
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Nil(t, r.json(t)["heldBy"], "a change forgets what held the queue")
	claimed, err = queue.NewRunner(e.pool, "w1").ClaimLimited(context.Background(), "mail", testTypes, 5, time.Minute)
	require.NoError(t, err)
	require.Len(t, claimed, 1)
}

func names(list []queue.Queue) []string {
	out := make([]string, len(list))
	for i, q := range list {
		out[i] = q.Name
	}
	return out
}

func TestSetQueueLimitsRefusesBadInput(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.putLimits("mail", map[string]any{"concurrency": 3, "rate": map[string]any{"limit": 10, "period": 1000}})
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	before := e.limitsOf("mail")

	for _, c := range []struct {
		body   string
		fields []string
	}{
		{`{"concurrency": 0}`, []string{"concurrency"}},
		{`{"concurrency": -1}`, []string{"concurrency"}},
		{`{"concurrency": 100001}`, []string{"concurrency"}},
		{`{"concurrency": 99999999999999}`, []string{"concurrency"}},
		{`{"concurrency": "5"}`, []string{"concurrency"}},
		{`{"concurrency": 1.5}`, []string{"concurrency"}},
		{`{"concurrency": true}`, []string{"concurrency"}},
		{`{"concurrency": [5]}`, []string{"concurrency"}},
		{`{"groupConcurrency": 0}`, []string{"groupConcurrency"}},
		{`{"groupConcurrency": "2"}`, []string{"groupConcurrency"}},
		{`{"rate": 5}`, []string{"rate"}},
		{`{"rate": "5/s"}`, []string{"rate"}},
		{`{"rate": {}}`, []string{"rate.limit", "rate.period"}},
		{`{"rate": {"limit": 5}}`, []string{"rate.period"}},
		{`{"rate": {"period": 1000}}`, []string{"rate.limit"}},
		{`{"rate": {"limit": 0, "period": 1000}}`, []string{"rate.limit"}},
		{`{"rate": {"limit": 100001, "period": 1000}}`, []string{"rate.limit"}},
		{`{"rate": {"limit": 5, "period": 0}}`, []string{"rate.period"}},
		{`{"rate": {"limit": 5, "period": 86400001}}`, []string{"rate.period"}},
		{`{"rate": {"limit": "5", "period": "1000"}}`, []string{"rate.limit", "rate.period"}},
		{`{"rate": {"limit": 5, "period": 1000, "burst": 10}}`, []string{"rate.burst"}},
		{`{"groupRate": {"limit": 5, "period": -1}}`, []string{"groupRate.period"}},
		{`{"groupRate": [5, 1000]}`, []string{"groupRate"}},
		{`{"fair": "true"}`, []string{"fair"}},
		{`{"fair": 1}`, []string{"fair"}},
		{`{"colour": "red"}`, []string{"colour"}},
		{`{"": 1}`, []string{`""`}},
		{`{"paused": true}`, []string{"paused"}},
		{`[]`, []string{"body"}},
		{`"concurrency"`, []string{"body"}},
		{`null`, []string{"body"}},
		// Every problem at once; a good field beside bad ones is not applied either.
		{`{"concurrency": 1, "groupConcurrency": 0, "rate": {"limit": 5, "period": 0}, "fair": "yes", "extra": 1}`,
			[]string{"groupConcurrency", "rate.period", "fair", "extra"}},
	} {
		r := e.putLimits("mail", c.body)
		e.requireError(r, http.StatusBadRequest, "validation_failed")
		require.ElementsMatch(t, c.fields, r.fields(t), c.body)
	}
	require.Equal(t, before, e.limitsOf("mail"), "refused changes changed nothing")
	_, details := e.putLimits("mail", `{"rate": {"limit": 5}}`).errorBody(t)
	require.Equal(t, []map[string]any{{"field": "rate.period", "message": "is required"}}, details)

	// A path segment that cannot name a queue.
	for _, name := range []string{"Mail", "-mail", "mail.x", strings.Repeat("q", 65), url.PathEscape("mäil")} {
		r := e.putLimits(name, `{"concurrency": 1}`)
		e.requireError(r, http.StatusBadRequest, "validation_failed")
		require.Equal(t, []string{"name"}, r.fields(t), name)
	}
	r = e.putLimits("Mail", `{"concurrency": 0}`)
	e.requireError(r, http.StatusBadRequest, "validation_failed")
	require.ElementsMatch(t, []string{"name", "concurrency"}, r.fields(t), "the path and the body in one answer")
	r = e.putLimits("mail%00", `{"concurrency": 1}`)
	e.requireError(r, http.StatusBadRequest, "validation_failed")
	require.Equal(t, []string{"name"}, r.fields(t))

	// A body that is not JSON.
	for _, body := range []string{``, `   `, `{"concurrency": 1`, `concurrency=1`, "{\"fair\": tru}", "\xff"} {
		e.requireError(e.putLimits("mail", body), http.StatusBadRequest, "bad_request")
	}
	e.requireError(e.putLimits("mail", `{"fair": true, "x": `+strings.Repeat("[", 40)+strings.Repeat("]", 40)+`}`),
		http.StatusBadRequest, "validation_failed")
	e.requireError(e.putLimits("mail", `{"colour": "`+strings.Repeat("a", 2<<20)+`"}`), http.StatusRequestEntityTooLarge, "payload_too_large")

	require.Equal(t, before, e.limitsOf("mail"))
	require.Equal(t, []string{"mail"}, names(e.queueList()), "refused names created no queue")
}

func TestSetQueueLimitsNeedsAKey(t *testing.T) {
	t.Parallel()
	e := setup(t, func(d *api.Deps) { d.APIKeys = []string{"key-one"} })
	body := map[string]any{"concurrency": 4}
	e.requireError(e.putLimits("mail", body), http.StatusUnauthorized, "unauthorized")
	e.requireError(e.putLimits("mail", body, "Authorization", "Bearer wrong"), http.StatusUnauthorized, "unauthorized")
	r := e.do("GET", "/api/queue/queues/mail", nil, "X-API-Key", "key-one")
	e.requireError(r, http.StatusNotFound, "not_found")

	r = e.putLimits("mail", body, "Authorization", "Bearer key-one")
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, 4.0, r.json(t)["concurrency"])
}

func TestGroupOption(t *testing.T) {
	t.Parallel()
	e := setup(t)
	inGroup := func(queueName, group string) map[string]any {
		return inQueue(queueName, map[string]any{"group": group})
	}

	a1 := e.submit(inGroup("mail", "tenant-a"))
	require.Equal(t, "tenant-a", a1["group"])
	r := e.do("GET", "/api/queue/jobs/"+a1["id"].(string), nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "tenant-a", r.json(t)["group"], "the stored job keeps its group")
	none := e.submit(inQueue("mail", map[string]any{"group": nil}))
	require.Contains(t, none, "group")
	require.Nil(t, none["group"], "null: no group")
	longest := strings.Repeat("é", queue.MaxGroupLength)
	require.Equal(t, longest, e.submit(inGroup("mail", longest))["group"], "128 characters, not bytes")
	spaced := e.submit(inGroup("mail", "Tenant B / EU ✓"))
	require.Equal(t, "Tenant B / EU ✓", spaced["group"])

	r = e.do("POST", "/api/queue/jobs/bulk", map[string]any{"jobs": []any{
		inGroup("mail", "tenant-a"),
		inGroup("reports", "tenant-a"),
		inQueue("mail"),
	}})
	require.Equal(t, http.StatusCreated, r.status, string(r.body))
	var bulk struct{ Jobs []map[string]any }
	require.NoError(t, json.Unmarshal(r.body, &bulk))
	require.Equal(t, "tenant-a", bulk.Jobs[0]["group"])
	require.Equal(t, "tenant-a", bulk.Jobs[1]["group"])
	require.Nil(t, bulk.Jobs[2]["group"])

	ids := func(query string) []string { return e.listIDs(t, "?"+query) }
	a2, a3 := bulk.Jobs[0]["id"].(string), bulk.Jobs[1]["id"].(string)
	require.Equal(t, []string{a3, a2, a1["id"].(string)}, ids("group=tenant-a"), "newest first, this group only, any queue")
	require.Equal(t, []string{a2, a1["id"].(string)}, ids("group=tenant-a&queue=mail"))
	require.Equal(t, []string{a2}, ids("group=tenant-a&queue=mail&limit=1"))
	require.Equal(t, []string{spaced["id"].(string)}, ids("group="+url.QueryEscape("Tenant B / EU ✓")))
	require.Empty(t, ids("group=tenant-c"))
	require.Empty(t, ids("group=Tenant-A"), "groups are case-sensitive")
	require.Len(t, ids("group="), 7, "an empty filter does not filter")

	// A bad group is refused, naming the field.
	for _, bad := range []any{"", strings.Repeat("g", queue.MaxGroupLength+1), "tab\there", "new\nline", "del\u007f", "c1\u0085",
		5, true, []any{"a"}, map[string]any{}} {
		r := e.do("POST", "/api/queue/jobs", inQueue("mail", map[string]any{"group": bad}))
		e.requireError(r, http.StatusBadRequest, "validation_failed")
		require.Equal(t, []string{"options.group"}, r.fields(t), "%q", bad)
	}
	r = e.do("POST", "/api/queue/jobs", inGroup("mail", ""))
	_, details := r.errorBody(t)
	require.Equal(t, []map[string]any{{"field": "options.group", "message": queue.GroupRule}}, details)
	r = e.do("POST", "/api/queue/jobs/bulk", map[string]any{"jobs": []any{
		inGroup("mail", "ok"), inQueue("mail"), inGroup("mail", "also ok"), inGroup("mail", "bad\x01"),
	}})
	e.requireError(r, http.StatusBadRequest, "validation_failed")
	require.Equal(t, []string{"jobs[3].options.group"}, r.fields(t))

	for _, bad := range []string{"%01", "a%0Ab", url.QueryEscape(strings.Repeat("g", queue.MaxGroupLength+1)), "%00", "%FF"} {
		r := e.do("GET", "/api/queue/jobs?group="+bad, nil)
		e.requireError(r, http.StatusBadRequest, "validation_failed")
		require.Equal(t, []string{"group"}, r.fields(t), bad)
	}

	var n int
	require.NoError(t, e.pool.QueryRow(context.Background(), "SELECT count(*) FROM queue.jobs").Scan(&n))
	require.Equal(t, 7, n, "refused submissions stored nothing")
}

// scrape reads a Prometheus page.
func scrape(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode, string(b))
	return string(b)
}

// A worker counts the claims a limit held back; the API's and the worker's /metrics show
// the jobs a limit holds, per queue and limit, and nothing for a queue that is not held.
func TestHeldMetrics(t *testing.T) {
	t.Parallel()
	e := setup(t)
	// One start a day: the second job of "limited" is held by the rate.
	r := e.putLimits("limited", map[string]any{"rate": map[string]any{"limit": 1, "period": queue.MaxRatePeriodMs}})
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	r = e.putLimits("capped", map[string]any{"concurrency": 1})
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	for range 2 {
		e.submit(map[string]any{"type": testutil.KindName, "data": map[string]any{}, "options": map[string]any{"queue": "limited"}})
	}
	for range 4 {
		e.submit(inQueue("capped"))
	}
	e.submitEmail() // the default queue: never held

	heldLine := func(queueName, limit string, n int) string {
		return "\nqueue_held_jobs{limit=\"" + limit + "\",queue=\"" + queueName + "\"} " + strconv.Itoa(n) + "\n"
	}
	apiMetrics := e.http.URL + "/metrics"
	require.NotContains(t, scrape(t, apiMetrics), "\nqueue_held_jobs{", "nothing is held before a claim")

	// "capped": a claim of the API's tests' kind takes one job; three wait behind the limit.
	claimed, err := queue.NewRunner(e.pool, "w0").ClaimLimited(context.Background(), "capped", testTypes, 4, time.Minute)
	require.NoError(t, err)
	require.Len(t, claimed, 1)

	reg := prometheus.NewRegistry()
	jobMetrics := metrics.NewJobs(reg)
	metrics.RegisterHeld(reg, e.client.Queues)
	w, err := worker.New(e.pool, testutil.Kinds(testutil.Noop), worker.Config{
		Queues:       []worker.QueueConfig{{Name: "limited", Concurrency: 2}},
		PollInterval: 20 * time.Millisecond, RemoveOnComplete: -1, RemoveOnFail: -1,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Observer: jobMetrics,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	workerMetrics := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(workerMetrics.Close)

	var body string
	require.Eventually(t, func() bool {
		body = scrape(t, workerMetrics.URL)
		return strings.Contains(body, "\nqueue_claims_held_total{limit=\"rate\",queue=\"limited\"} ") &&
			strings.Contains(body, heldLine("limited", "rate", 1))
	}, 10*time.Second, 20*time.Millisecond, "worker metrics:\n%s", body)
	require.Contains(t, body, heldLine("capped", "concurrency", 3))
	require.NotContains(t, body, `queue_claims_held_total{limit="concurrency"`, "this worker does not serve capped")

	body = scrape(t, apiMetrics)
	require.Contains(t, body, heldLine("limited", "rate", 1))
	require.Contains(t, body, heldLine("capped", "concurrency", 3))
	require.NotContains(t, body, `queue_held_jobs{limit="concurrency",queue="default"}`)
	require.NotContains(t, body, `queue_held_jobs{limit="rate",queue="default"}`)

	// A change of the limits forgets the hold: the series goes away.
	r = e.putLimits("capped", map[string]any{"concurrency": 10})
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.NotContains(t, scrape(t, apiMetrics), `queue="capped"`)
}

// The OpenAPI document describes what the routes accept: the fields of the PUT body, the
// group option and the list's group filter.
func TestOpenAPIDescribesFlowControl(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var doc struct {
		Paths map[string]map[string]struct {
			RequestBody struct {
				Content map[string]struct {
					Schema struct {
						Ref string `json:"$ref"`
					} `json:"schema"`
				} `json:"content"`
			} `json:"requestBody"`
			Parameters []struct {
				Name string `json:"name"`
				In   string `json:"in"`
			} `json:"parameters"`
		} `json:"paths"`
		Components struct {
			Schemas map[string]struct {
				AdditionalProperties *bool                     `json:"additionalProperties"`
				Properties           map[string]map[string]any `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	r := e.do("GET", "/api/openapi.json", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.NoError(t, json.Unmarshal(r.body, &doc))

	put, ok := doc.Paths["/api/queue/queues/{name}"]["put"]
	require.True(t, ok, "PUT /api/queue/queues/{name} is documented")
	require.Equal(t, "#/components/schemas/QueueLimits", put.RequestBody.Content["application/json"].Schema.Ref)
	limits := doc.Components.Schemas["QueueLimits"]
	require.NotNil(t, limits.AdditionalProperties)
	require.False(t, *limits.AdditionalProperties, "unknown fields are refused")
	var fields []string
	for k := range limits.Properties {
		fields = append(fields, k)
	}
	require.ElementsMatch(t, []string{"concurrency", "rate", "groupConcurrency", "groupRate", "fair"}, fields)
	// Every documented field is accepted.
	body := map[string]any{"concurrency": 1, "rate": map[string]any{"limit": 1, "period": 1}, "groupConcurrency": 1,
		"groupRate": map[string]any{"limit": 1, "period": 1}, "fair": true}
	require.Len(t, body, len(fields))
	r = e.putLimits("mail", body)
	require.Equal(t, http.StatusOK, r.status, string(r.body))

	require.Contains(t, doc.Components.Schemas["Options"].Properties, "group")
	var params []string
	for _, p := range doc.Paths["/api/queue/jobs"]["get"].Parameters {
		params = append(params, p.In+":"+p.Name)
	}
	require.Contains(t, params, "query:group")
}
