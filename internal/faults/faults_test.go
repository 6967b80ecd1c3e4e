// Package faults injects the failures that happen in production (Postgres restarts,
// workers killed, Redis lost, a crowd of clients) into real api and worker processes and
// checks that no job is lost. `make test` runs the short mode; `make faults` the full one
// (FAULTS_FULL=1: 5,000 jobs per scenario), which prints the figures.
package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/testutil"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "faults-bin-")
	if err != nil {
		panic(err)
	}
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/pgqueue/queue/cmd/api", "github.com/pgqueue/queue/cmd/worker")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "faults: cannot build the binaries:", err)
		os.Exit(2)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// scale is the number of jobs per scenario: 5,000 in the full suite, fewer in CI.
func scale(t *testing.T) int {
	if os.Getenv("FAULTS_FULL") == "1" {
		return 5000
	}
	if testing.Short() {
		t.Skip("fault injection: run without -short (make test) or with make faults")
	}
	return 600
}

func report(t *testing.T, format string, args ...any) {
	t.Logf("FIGURES "+format, args...)
}

// proc is an api or worker process of the test.
type proc struct {
	t    *testing.T
	name string
	env  []string
	cmd  *exec.Cmd
	out  *bytes.Buffer
	mu   sync.Mutex
}

func (p *proc) start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cmd = exec.Command(filepath.Join(binDir, p.name))
	p.cmd.Env = append(os.Environ(), p.env...)
	p.out = &bytes.Buffer{}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	require.NoError(p.t, p.cmd.Start())
}

func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.ProcessState != nil {
		return nil
	}
	_ = p.cmd.Process.Signal(sig)
	err := p.cmd.Wait()
	return err
}

// kill is a crash: SIGKILL, nothing handed back.
func (p *proc) kill() { _ = p.signal(syscall.SIGKILL) }

// stop is a graceful stop; it returns the process's exit error (nil for exit 0).
func (p *proc) stop() error { return p.signal(syscall.SIGTERM) }

// tail is the end of the process's output, for failure messages.
func (p *proc) tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.out == nil {
		return ""
	}
	s := p.out.String()
	return s[max(0, len(s)-3000):]
}

type system struct {
	t       *testing.T
	dbURL   string
	env     []string
	apiURL  string
	api     *proc
	workers []*proc
	// answers 500 to a submission: a database outage must be 503, never 500
	internalErrors atomic.Int64
}

// newSystem prepares the environment of the processes; nothing runs yet.
func newSystem(t *testing.T, dbURL, redisURL string, extra ...string) *system {
	port := testutil.FreePort(t)
	data := t.TempDir()
	env := append([]string{
		"DATABASE_URL=" + dbURL, "REDIS_URL=" + redisURL, "REDIS_PREFIX=" + testutil.RedisPrefix(t),
		"PORT=" + strconv.Itoa(port), "API_BIND=127.0.0.1", "DATA_DIR=" + data,
		"METRICS_PORT=0", "LOG_LEVEL=warn", "QUEUE_POLL_INTERVAL=100ms", "QUEUE_LEASE=2s",
		"QUEUE_CONCURRENCY=10", "QUEUE_REMOVE_ON_COMPLETE=false", "QUEUE_REMOVE_ON_FAIL=false",
		"RATE_LIMIT_SUBMIT=0", "QUEUE_SHUTDOWN_TIMEOUT=5s",
	}, extra...)
	s := &system{t: t, dbURL: dbURL, env: env, apiURL: fmt.Sprintf("http://127.0.0.1:%d", port)}
	t.Cleanup(func() {
		for _, p := range append([]*proc{s.api}, s.workers...) {
			if p != nil {
				p.kill()
			}
		}
		if t.Failed() {
			for i, w := range s.workers {
				t.Logf("worker %d output:\n%s", i, w.tail())
			}
			if s.api != nil {
				t.Logf("api output:\n%s", s.api.tail())
			}
		}
	})
	return s
}

func (s *system) startAPI() {
	s.api = &proc{t: s.t, name: "api", env: s.env}
	s.api.start()
	require.Eventually(s.t, func() bool {
		resp, err := http.Get(s.apiURL + "/api/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, 30*time.Second, 20*time.Millisecond, "api never became healthy: %s", s.api.tail())
}

func (s *system) startWorkers(n int) {
	for i := range n {
		w := &proc{t: s.t, name: "worker", env: append(append([]string{}, s.env...), fmt.Sprintf("WORKER_INDEX=%d", i))}
		w.start()
		s.workers = append(s.workers, w)
	}
}

// cleanupJob is a real built-in job that finishes quickly (an empty temp folder).
func cleanupJob(id string) map[string]any {
	return map[string]any{
		"type": "CLEANUP", "data": map[string]any{"targetType": "temp_files", "olderThan": 3600000},
		"options": map[string]any{"jobId": id, "attempts": 5, "backoff": map[string]any{"type": "fixed", "delay": 100}},
	}
}

// submitBulk posts cleanup jobs with the given ids, retrying until they are
// acknowledged, and returns the number of attempts that failed.
func (s *system) submitBulk(ctx context.Context, ids []string) (failures int) {
	var jobs []map[string]any
	for _, id := range ids {
		jobs = append(jobs, cleanupJob(id))
	}
	return s.submit(ctx, jobs)
}

// submit posts jobs in one bulk request, retrying (the same ids: the API is idempotent
// on jobId) until they are acknowledged, and returns the number of attempts that failed.
func (s *system) submit(ctx context.Context, jobs []map[string]any) (failures int) {
	body, _ := json.Marshal(map[string]any{"jobs": jobs})
	client := &http.Client{Timeout: 10 * time.Second}
	for ctx.Err() == nil {
		resp, err := client.Post(s.apiURL+"/api/queue/jobs/bulk", "application/json", bytes.NewReader(body))
		if err == nil {
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusCreated {
				return failures
			}
			if resp.StatusCode == http.StatusInternalServerError {
				s.internalErrors.Add(1)
			}
			require.NotEqual(s.t, http.StatusBadRequest, resp.StatusCode, "the bulk body is valid: %s", msg)
		}
		failures++
		time.Sleep(100 * time.Millisecond)
	}
	return failures
}

// connect opens a connection, retrying while the database is down.
func (s *system) connect() *pgx.Conn {
	s.t.Helper()
	var conn *pgx.Conn
	require.Eventually(s.t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		conn, err = pgx.Connect(ctx, s.dbURL)
		return err == nil
	}, 60*time.Second, 100*time.Millisecond)
	return conn
}

// scan reads one row into dest, retrying while the database is down or the row is not
// there yet.
func (s *system) scan(query string, dest ...any) {
	s.t.Helper()
	s.scanArgs(query, nil, dest...)
}

func (s *system) scanArgs(query string, args []any, dest ...any) {
	s.t.Helper()
	require.Eventually(s.t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, s.dbURL)
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		return conn.QueryRow(ctx, query, args...).Scan(dest...) == nil
	}, 60*time.Second, 100*time.Millisecond, "no row for %s", query)
}

// dbNow is the database's clock, which the audit trail's times come from.
func (s *system) dbNow() time.Time {
	var now time.Time
	s.scan("SELECT now()", &now)
	return now
}

// workerID is the id a worker process registered under.
func (s *system) workerID(p *proc) string {
	s.t.Helper()
	var id string
	s.scan(fmt.Sprintf("SELECT id FROM queue.workers WHERE pid = %d", p.cmd.Process.Pid), &id)
	return id
}

// leader is the holder of an unexpired maintenance lease, or "".
func (s *system) leader() string {
	var holder string
	s.scan("SELECT coalesce((SELECT holder FROM queue.leaders WHERE name = 'maintenance' AND expires_at > now()), '')", &holder)
	return holder
}

// waitJobState waits until the job is in state.
func (s *system) waitJobState(id, state string, within time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for s.count("SELECT count(*) FROM queue.jobs WHERE id = $1 AND state = $2", id, state) == 0 {
		if time.Now().After(deadline) {
			s.t.Fatalf("job %s never reached %s in %s", id, state, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// count runs a query that returns one integer, retrying while the database is down.
func (s *system) count(query string, args ...any) int {
	s.t.Helper()
	var n int
	s.scanArgs(query, args, &n)
	return n
}

func (s *system) waitAllFinished(total int, within time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for {
		done := s.count("SELECT count(*) FROM queue.jobs WHERE state IN ('completed', 'failed', 'cancelled')")
		if done >= total {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("only %d of %d jobs finished in %s; states: %v", done, total, within, s.states())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *system) states() map[string]int {
	out := map[string]int{}
	for _, st := range []string{"waiting", "delayed", "active", "completed", "failed", "cancelled"} {
		out[st] = s.count("SELECT count(*) FROM queue.jobs WHERE state = $1", st)
	}
	return out
}

// ranTwiceExplained checks the audit trail: a job started more than once only after a
// lease expiry (or a hand-back at shutdown) for each extra start. It returns the number
// of jobs that ran more than once.
func (s *system) ranTwiceExplained() int {
	s.t.Helper()
	// A start is explained by the enqueue, or by a return to the queue: a retry
	// ('delayed', or 'waiting' with the error), a lease expiry or a hand-back ('waiting'
	// with a message). Promotions of delayed jobs are 'waiting' without a message.
	unexplained := s.count(`
		SELECT count(*) FROM (
			SELECT job_id,
			       count(*) FILTER (WHERE state = 'active') AS starts,
			       count(*) FILTER (WHERE state = 'delayed' OR (state = 'waiting' AND message IS NOT NULL)) AS returns
			FROM queue.job_events GROUP BY job_id
		) t WHERE starts > 1 + returns`)
	require.Zero(s.t, unexplained, "every extra start follows a lease expiry, a hand-back or a retry")
	return s.count(`SELECT count(*) FROM (SELECT job_id FROM queue.job_events WHERE state = 'active' GROUP BY job_id HAVING count(*) > 1) t`)
}

func ids(prefix string, from, to int) []string {
	out := make([]string, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s-%d", prefix, i))
	}
	return out
}

func TestPostgresRestarts(t *testing.T) {
	t.Parallel()
	total := scale(t)
	pg := testutil.StartPostgres(t)
	s := newSystem(t, pg.URL("queue"), testutil.RedisURL(t))
	s.startAPI()
	s.startWorkers(2)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const batch = 50
	var failed atomic.Int64
	submitted := make(chan struct{})
	go func() {
		defer close(submitted)
		for i := 0; i < total; i += batch {
			failed.Add(int64(s.submitBulk(ctx, ids("pg", i, min(i+batch, total)))))
			time.Sleep(10 * time.Millisecond)
		}
	}()
	restarts := 0
	for _, at := range []float64{0.3, 0.6} {
		require.Eventually(t, func() bool {
			return s.count("SELECT count(*) FROM queue.jobs") >= int(at*float64(total))
		}, 2*time.Minute, 20*time.Millisecond)
		pg.Restart(500 * time.Millisecond)
		restarts++
	}
	<-submitted
	require.NoError(t, ctx.Err(), "every job was acknowledged")
	s.waitAllFinished(total, 2*time.Minute)

	require.Equal(t, total, s.count("SELECT count(*) FROM queue.jobs"), "no job lost, none duplicated")
	require.Equal(t, total, s.count("SELECT count(*) FROM queue.jobs WHERE state = 'completed'"))
	require.Zero(t, s.count("SELECT count(*) FROM queue.jobs WHERE state = 'failed'"), "no job failed because of the restarts")
	twice := s.ranTwiceExplained()
	resp, err := http.Get(s.apiURL + "/api/ready")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode, "the API reconnected by itself")
	require.Zero(t, s.internalErrors.Load(), "submissions during the outage were answered 503, not 500")
	report(t, "postgres restarts: jobs=%d restarts=%d lost=0 failed=0 ran_twice=%d rejected_submissions_retried=%d", total, restarts, twice, failed.Load())
}

func TestWorkersKilled(t *testing.T) {
	t.Parallel()
	total := scale(t)
	dbURL := testutil.NewMigratedDatabase(t)
	s := newSystem(t, dbURL, testutil.RedisURL(t), "QUEUE_LEASE=1s")
	s.startAPI()
	s.startWorkers(3)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const batch = 100
	go func() {
		for i := 0; i < total; i += batch {
			s.submitBulk(ctx, ids("kill", i, min(i+batch, total)))
			time.Sleep(20 * time.Millisecond)
		}
	}()
	kills := 0
	for k, at := range []float64{0.2, 0.45, 0.7} {
		require.Eventually(t, func() bool {
			return s.count("SELECT count(*) FROM queue.jobs WHERE state = 'completed'") >= int(at*float64(total))
		}, 2*time.Minute, 10*time.Millisecond)
		w := s.workers[k%len(s.workers)]
		w.kill()
		kills++
		w.start()
	}
	s.waitAllFinished(total, 2*time.Minute)
	require.Equal(t, total, s.count("SELECT count(*) FROM queue.jobs"))
	require.Equal(t, total, s.count("SELECT count(*) FROM queue.jobs WHERE state = 'completed'"), "every job completes")
	twice := s.ranTwiceExplained()
	expired := s.count("SELECT count(DISTINCT job_id) FROM queue.job_events WHERE message LIKE 'lease expired%'")
	require.Equal(t, expired, twice, "the jobs that ran twice are exactly those whose lease expired")
	for i, w := range s.workers {
		require.NoError(t, w.stop(), "worker %d exits 0 on SIGTERM", i)
	}
	report(t, "worker kills: jobs=%d sigkills=%d lost=0 failed=0 ran_twice=%d (each after its lease expired)", total, kills, twice)
}

func TestRedisLost(t *testing.T) {
	t.Parallel()
	total := scale(t)
	rs := testutil.StartRedis(t)
	s := newSystem(t, testutil.NewMigratedDatabase(t), rs.URL())
	s.startAPI()
	s.startWorkers(2)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const batch = 50
	half := total / 2
	for i := 0; i < half; i += batch {
		s.submitBulk(ctx, ids("redis", i, min(i+batch, half)))
	}
	rs.Stop()
	ready := readyState(t, s.apiURL)
	require.Equal(t, "down", ready["redis"], "ready reports Redis down")
	require.Equal(t, "up", ready["postgres"])
	for i := half; i < total; i += batch {
		s.submitBulk(ctx, ids("redis", i, min(i+batch, total)))
	}
	s.waitAllFinished(total, 2*time.Minute)
	require.Zero(t, s.count("SELECT count(*) FROM queue.jobs WHERE state = 'failed'"), "no job failed because of Redis")

	rs.Start()
	require.Eventually(t, func() bool { return readyState(t, s.apiURL)["redis"] == "up" }, 30*time.Second, 100*time.Millisecond)
	// Events flow again without a restart: an SSE client sees the next job complete. A
	// client reconnects when the server ends its stream (as SSE clients do): the burst of
	// events the workers flush when Redis is back may cut off a slow one.
	var events <-chan string
	require.Eventually(t, func() bool {
		if events == nil {
			events = openEvents(t, s.apiURL)
		}
		s.submitBulk(ctx, []string{fmt.Sprintf("redis-after-%d", time.Now().UnixNano())})
		deadline := time.After(time.Second)
		for {
			select {
			case line, open := <-events:
				if !open {
					events = nil
					return false
				}
				if strings.Contains(line, `"redis-after-`) && strings.Contains(line, `"completed"`) {
					return true
				}
			case <-deadline:
				return false
			}
		}
	}, 30*time.Second, 10*time.Millisecond, "events resume after Redis is back")
	require.Equal(t, total, s.count("SELECT count(*) FROM queue.jobs WHERE state = 'completed' AND id LIKE 'redis-%' AND id NOT LIKE 'redis-after%'"))
	report(t, "redis lost: jobs=%d outages=1 lost=0 failed=0", total)
}

func readyState(t *testing.T, apiURL string) map[string]string {
	t.Helper()
	resp, err := http.Get(apiURL + "/api/ready")
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	require.Equal(t, 200, resp.StatusCode, "Redis down is reported, still 200")
	return out
}

// openEvents streams the SSE lines of /api/queue/events until the test ends.
func openEvents(t *testing.T, apiURL string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL+"/api/queue/events", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	return lines
}

func TestCrowdOfClients(t *testing.T) {
	t.Parallel()
	duration := 3 * time.Second
	if os.Getenv("FAULTS_FULL") == "1" {
		duration = 10 * time.Second
	} else {
		scale(t) // skip under -short
	}
	const clients, keys, rate = 200, 4, 50
	dbURL := testutil.NewMigratedDatabase(t)
	s := newSystem(t, dbURL, testutil.RedisURL(t), "API_KEYS=k0,k1,k2,k3", fmt.Sprintf("RATE_LIMIT_SUBMIT=%d", rate))
	s.startAPI()

	var mu sync.Mutex
	statuses := map[int]int{}
	acceptedByKey := make([]int, keys)
	var acked []string
	var missingRetryAfter atomic.Int32
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	transport := &http.Transport{MaxIdleConnsPerHost: clients}
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	start := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := c % keys
			for n := 0; ctx.Err() == nil; n++ {
				body, _ := json.Marshal(map[string]any{"type": "CLEANUP", "data": map[string]any{"targetType": "temp_files", "olderThan": 0}})
				req, _ := http.NewRequest(http.MethodPost, s.apiURL+"/api/queue/jobs", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer k"+strconv.Itoa(key))
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				var job struct{ ID string }
				_ = json.NewDecoder(resp.Body).Decode(&job)
				resp.Body.Close()
				mu.Lock()
				statuses[resp.StatusCode]++
				if resp.StatusCode == http.StatusCreated {
					acceptedByKey[key]++
					acked = append(acked, job.ID)
				}
				mu.Unlock()
				if resp.StatusCode == http.StatusTooManyRequests {
					if resp.Header.Get("Retry-After") == "" {
						missingRetryAfter.Add(1)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	for code, n := range statuses {
		require.Less(t, code, 500, "%d answers were %d", n, code)
	}
	require.Zero(t, missingRetryAfter.Load(), "every 429 has Retry-After")
	// Token bucket per key: burst + rate·elapsed at most (one second of slack for timing).
	limit := rate + int(float64(rate)*(elapsed.Seconds()+1))
	for k, n := range acceptedByKey {
		require.LessOrEqual(t, n, limit, "key k%d got %d submissions through in %s", k, n, elapsed)
		require.Positive(t, n)
	}
	require.Positive(t, statuses[http.StatusTooManyRequests], "the crowd was limited")
	pool, err := pgxpool.New(context.Background(), dbURL)
	require.NoError(t, err)
	defer pool.Close()
	var found int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM queue.jobs WHERE id = ANY($1)", acked).Scan(&found))
	require.Equal(t, len(acked), found, "every acknowledged job exists")
	report(t, "crowd: clients=%d duration=%s requests=%d accepted=%d rate_limited=%d 5xx=0 lost=0 statuses=%v",
		clients, elapsed.Round(time.Millisecond), sum(statuses), len(acked), statuses[http.StatusTooManyRequests], statuses)
}

func sum(m map[int]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
