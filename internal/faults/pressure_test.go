package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/testutil"
)

// procKB reads a field of /proc/PID/status (VmRSS, VmHWM) in KiB.
func procKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// metric reads one unlabelled value from the API's /metrics.
func (s *system) metric(name string) float64 {
	s.t.Helper()
	resp, err := http.Get(s.apiURL + "/metrics")
	require.NoError(s.t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			require.NoError(s.t, err)
			return v
		}
	}
	s.t.Fatalf("no metric %s", name)
	return 0
}

// 500 jobs of 250 KB listed by 6 clients at once: every page stops at 8 MiB, and the
// API's memory stays bounded (the jobs are streamed, not collected).
func TestListingLargeJobsKeepsMemoryBounded(t *testing.T) {
	t.Parallel()
	scale(t) // skip under -short
	dbURL := testutil.NewMigratedDatabase(t)
	s := newSystem(t, dbURL, testutil.RedisURL(t))
	conn := s.connect()
	_, err := conn.Exec(context.Background(), `INSERT INTO queue.jobs (id, type, state, data)
		SELECT 'big-' || i, 'CLEANUP', 'waiting', jsonb_build_object('pad', repeat('x', 250000)) FROM generate_series(1, 500) i`)
	conn.Close(context.Background())
	require.NoError(t, err)
	s.startAPI()
	pid := s.api.cmd.Process.Pid
	// Idle, after a first small request has warmed the process up.
	resp, err := http.Get(s.apiURL + "/api/queue/jobs?limit=1")
	require.NoError(t, err)
	resp.Body.Close()
	idle := procKB(t, pid, "VmRSS")

	var wg sync.WaitGroup
	sizes := make([]int, 6)
	cursors := make([]*string, 6)
	for i := range sizes {
		wg.Go(func() {
			resp, err := http.Get(s.apiURL + "/api/queue/jobs?limit=500")
			if err != nil {
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			sizes[i] = len(body)
			var page struct{ NextCursor *string }
			if json.Unmarshal(body, &page) == nil {
				cursors[i] = page.NextCursor
			}
		})
	}
	wg.Wait()
	peak := procKB(t, pid, "VmHWM")
	for i, n := range sizes {
		require.Positive(t, n, "client %d got an answer", i)
		require.LessOrEqual(t, n, 8<<20, "client %d's page", i)
		require.NotNil(t, cursors[i], "client %d's page goes on", i)
	}
	resp, err = http.Get(s.apiURL + "/api/queue/jobs?limit=500&cursor=" + *cursors[0])
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the cursor works")
	grew := (peak - idle) / 1024
	require.Less(t, grew, int64(150), "the API's memory grew %d MB over its idle %d MB", grew, idle/1024)
	report(t, "large list: jobs=500x250KB clients=6 page_bytes=%d api_rss_idle=%dMB peak_above_idle=%dMB", sizes[0], idle/1024, grew)
}

// 1,000 open event streams cost the API little heap each.
func TestManyStreamsKeepMemoryBounded(t *testing.T) {
	t.Parallel()
	scale(t) // skip under -short
	s := newSystem(t, testutil.NewMigratedDatabase(t), testutil.RedisURL(t), "MAX_STREAMS=3000")
	s.startAPI()
	before := s.metric("go_memstats_heap_inuse_bytes")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2000}}
	const streams = 1000
	var wg sync.WaitGroup
	for range streams {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.apiURL+"/api/queue/events", nil)
			resp, err := client.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			_, _ = io.Copy(io.Discard, resp.Body)
		})
	}
	require.Eventually(t, func() bool { return s.metric("queue_api_open_streams") == streams }, time.Minute, 50*time.Millisecond)
	// Events flow to all of them meanwhile.
	s.submitBulk(ctx, ids("stream", 0, 20))
	time.Sleep(500 * time.Millisecond)
	after := s.metric("go_memstats_heap_inuse_bytes")
	cancel()
	wg.Wait()
	grew := (after - before) / (1 << 20)
	require.Less(t, grew, 50.0, "%d streams grew the heap by %.0f MB", streams, grew)
	report(t, "streams: open=%d heap_growth=%.1fMB per_stream=%.1fKB", streams, grew, grew*1024/streams)
}

// With Redis full (maxmemory, noeviction) a job removed at completion is not lost: it
// stays in Postgres, where GET and wait read it, until its snapshot can be stored; then
// retention removes it and GET answers from the snapshot.
func TestRedisFullKeepsRemovedJobsReadable(t *testing.T) {
	t.Parallel()
	scale(t) // skip under -short
	rs := testutil.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", rs.Port)})
	defer rdb.Close()
	s := newSystem(t, testutil.NewMigratedDatabase(t), rs.URL(), "QUEUE_POLL_INTERVAL=100ms")
	s.startAPI()
	s.startWorkers(1)
	ctx := context.Background()
	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "1").Err())
	require.Error(t, rdb.Set(ctx, "probe", "x", 0).Err(), "Redis refuses writes")

	job := cleanupJob("full-redis")
	job["options"].(map[string]any)["removeOnComplete"] = true
	s.submit(ctx, []map[string]any{job})
	var state string
	s.scan(`SELECT state FROM queue.job_events WHERE job_id = 'full-redis' AND state = 'completed'`, &state)
	time.Sleep(time.Second) // several retention passes
	require.Equal(t, 1, s.count(`SELECT count(*) FROM queue.jobs WHERE id = 'full-redis' AND state = 'completed'`),
		"kept in Postgres while no snapshot can be stored")
	for _, path := range []string{"/api/queue/jobs/full-redis", "/api/queue/jobs/full-redis/wait?timeout=1s"} {
		resp, err := http.Get(s.apiURL + path)
		require.NoError(t, err)
		var j struct{ State string }
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&j))
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		require.Equal(t, "completed", j.State, path)
	}

	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "0").Err())
	require.Eventually(t, func() bool {
		return s.count(`SELECT count(*) FROM queue.jobs WHERE id = 'full-redis'`) == 0
	}, 30*time.Second, 100*time.Millisecond, "retention removes it once the snapshot is stored")
	resp, err := http.Get(s.apiURL + "/api/queue/jobs/full-redis")
	require.NoError(t, err)
	var j struct {
		State  string
		Result json.RawMessage
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&j))
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "completed", j.State)
	require.Contains(t, string(j.Result), "targetType", "the snapshot holds the result")
	report(t, "redis full: removeOnComplete job kept in Postgres while Redis refused writes, removed after its snapshot was stored")
}
