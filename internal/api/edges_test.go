package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/api"
	"github.com/pgqueue/queue/internal/testutil"
)

// NUL or invalid UTF-8 in a path segment or a query value is the client's mistake: 400
// naming it, never a 500 from Postgres.
func TestBadBytesInPathsAndQueries(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cases := []struct{ method, path, field string }{
		{"GET", "/api/queue/jobs/%00", "id"},
		{"GET", "/api/queue/jobs/a%ffb", "id"},
		{"DELETE", "/api/queue/jobs/%00", "id"},
		{"POST", "/api/queue/jobs/%00/cancel", "id"},
		{"POST", "/api/queue/jobs/%00/retry", "id"},
		{"GET", "/api/queue/jobs/%00/wait", "id"},
		{"GET", "/api/queue/jobs?type=%ff%fe", "type"},
		{"GET", "/api/queue/jobs?cursor=a%00", "cursor"},
		{"GET", "/api/notifications?userId=%00", "userId"},
		{"POST", "/api/notifications/%00/read", "id"},
		{"GET", "/api/queue/queues/%ff", "name"},
	}
	for _, c := range cases {
		r := e.do(c.method, c.path, nil)
		e.requireError(r, http.StatusBadRequest, "validation_failed")
		require.Contains(t, r.fields(t), c.field, "%s %s", c.method, c.path)
	}
	require.NotContains(t, e.logs.String(), `"level":"ERROR"`, "nothing was an internal error")
}

// A number sent as a string is a wrong JSON type, for options as for data.
func TestNumbersAreNotStrings(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, opts := range []map[string]any{
		{"priority": "5"}, {"attempts": "3"}, {"delay": "0"}, {"timeout": "100"},
		{"removeOnComplete": "1"}, {"backoff": map[string]any{"delay": "10"}},
	} {
		r := e.do("POST", "/api/queue/jobs", map[string]any{"type": emailType, "data": email, "options": opts})
		e.requireError(r, http.StatusBadRequest, "validation_failed")
		for k, v := range opts {
			want := "options." + k
			if _, nested := v.(map[string]any); nested {
				want += ".delay"
			}
			require.Equal(t, []string{want}, r.fields(t), "%v", opts)
		}
	}
	require.Equal(t, http.StatusCreated, e.do("POST", "/api/queue/jobs", map[string]any{"type": emailType, "data": email,
		"options": map[string]any{"priority": 5, "removeOnComplete": -1}}).status)
}

// A page stops at 8 MiB of JSON, and its cursor goes on from there: every job once,
// newest first, however large the jobs.
func TestPagesStopAtEightMiB(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	const jobs, pad = 60, 250_000 // 15 MB of data
	_, err := e.pool.Exec(ctx, `INSERT INTO queue.jobs (id, type, state, data)
		SELECT 'big-' || i, $1, 'waiting', jsonb_build_object('pad', repeat('x', $2)) FROM generate_series(1, $3) i`,
		testutil.AnyName, pad, jobs)
	require.NoError(t, err)

	var seen []string
	pages := 0
	cursor := ""
	for {
		path := "/api/queue/jobs?limit=500"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		r := e.do("GET", path, nil)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		require.LessOrEqual(t, len(r.body), 8<<20, "page %d", pages)
		var page struct {
			Jobs []struct {
				ID string `json:"id"`
			} `json:"jobs"`
			NextCursor *string `json:"nextCursor"`
		}
		require.NoError(t, json.Unmarshal(r.body, &page))
		require.NotEmpty(t, page.Jobs)
		for _, j := range page.Jobs {
			seen = append(seen, j.ID)
		}
		pages++
		if page.NextCursor == nil {
			break
		}
		cursor = *page.NextCursor
	}
	require.GreaterOrEqual(t, pages, 2, "15 MB do not fit one page")
	want := make([]string, jobs)
	for i := range want {
		want[i] = fmt.Sprintf("big-%d", jobs-i)
	}
	require.Equal(t, want, seen, "every job once, newest first")

	// An empty list is a whole page too.
	r := e.do("GET", "/api/queue/jobs?state=failed", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.JSONEq(t, `{"jobs":[],"nextCursor":null}`, string(r.body))
}

// One client (an API key, else an address) holds at most half of MAX_STREAMS; another
// still gets in.
func TestOneClientTakesAtMostHalfOfTheStreams(t *testing.T) {
	t.Parallel()
	e := setup(t, func(d *api.Deps) { d.MaxStreams = 4; d.APIKeys = []string{"key-a", "key-b"} })
	sub := e.do("POST", "/api/queue/jobs", map[string]any{"type": emailType, "data": email}, "Authorization", "Bearer key-a")
	require.Equal(t, http.StatusCreated, sub.status, string(sub.body))
	id := sub.json(t)["id"].(string)
	open := func(key string) chan response {
		done := make(chan response, 1)
		go func() {
			done <- e.do("GET", "/api/queue/jobs/"+id+"/wait?timeout=5s", nil, "Authorization", "Bearer "+key)
		}()
		return done
	}
	streams := func() string {
		return string(e.do("GET", "/metrics", nil, "Authorization", "Bearer key-a").body)
	}
	var held []chan response
	for range 2 {
		held = append(held, open("key-a"))
	}
	require.Eventually(t, func() bool { return strings.Contains(streams(), "queue_api_open_streams 2") }, 5*time.Second, 10*time.Millisecond)
	r := e.do("GET", "/api/queue/jobs/"+id+"/wait?timeout=1ms", nil, "Authorization", "Bearer key-a")
	e.requireError(r, http.StatusServiceUnavailable, "unavailable")
	require.Contains(t, string(r.body), "half")

	held = append(held, open("key-b"))
	require.Eventually(t, func() bool { return strings.Contains(streams(), "queue_api_open_streams 3") }, 5*time.Second, 10*time.Millisecond,
		"another key still connects")
	e.srv.StopStreams()
	for _, h := range held {
		require.Equal(t, http.StatusOK, (<-h).status)
	}
}
