package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/testutil"
)

// Flow control across real worker processes: the limits of a queue's settings row hold
// for every worker at once. The checks read the audit trail, where a claim's 'active'
// row opens it and the job's next row (its outcome, a rescue, a hand-back) closes it.

// fullSize reports whether FAULTS_FULL=1 asks for the full figures; under -short the
// scenario is skipped, as the rest of the suite is.
func fullSize(t *testing.T) bool {
	if os.Getenv("FAULTS_FULL") == "1" {
		return true
	}
	scale(t)
	return false
}

var (
	emailData   = map[string]any{"to": "user@example.com", "subject": "Hi", "template": "test"}
	cleanupData = map[string]any{"targetType": "temp_files", "olderThan": 3600000}
)

// limitColumns are the settings of queue.queues the tests set.
var limitColumns = []string{"concurrency", "rate_limit", "rate_period_ms", "group_concurrency",
	"group_rate_limit", "group_rate_period_ms", "fair", "paused"}

// setQueue stores a queue's settings as an operator's SQL would, and tells the workers:
// a settings change through queue_settings, and queue_jobs for a resumed queue.
func (s *system) setQueue(name string, settings map[string]any) {
	s.t.Helper()
	cols := []string{"name"}
	args := []any{name}
	var updates []string
	for _, c := range limitColumns {
		if v, ok := settings[c]; ok {
			cols = append(cols, c)
			args = append(args, v)
			updates = append(updates, c+" = excluded."+c)
		}
	}
	require.Len(s.t, updates, len(settings), "known settings only: %v", settings)
	marks := make([]string, len(cols))
	for i := range marks {
		marks[i] = fmt.Sprintf("$%d", i+1)
	}
	ctx := context.Background()
	conn := s.connect()
	defer conn.Close(ctx)
	_, err := conn.Exec(ctx, fmt.Sprintf("INSERT INTO queue.queues (%s) VALUES (%s) ON CONFLICT (name) DO UPDATE SET %s",
		strings.Join(cols, ", "), strings.Join(marks, ", "), strings.Join(updates, ", ")), args...)
	require.NoError(s.t, err)
	_, err = conn.Exec(ctx, "SELECT pg_notify('queue_settings', $1), pg_notify('queue_jobs', $1)", name)
	require.NoError(s.t, err)
}

// enqueue submits jobs through queue.enqueue in one transaction, as an application's SQL
// would; group(i) names the group of the i-th job (nil: none). It returns the database's
// clock just before the commit.
func (s *system) enqueue(kind string, data map[string]any, jobIDs []string, queueName string, group func(i int) string) time.Time {
	s.t.Helper()
	opts := make([]string, len(jobIDs))
	for i := range jobIDs {
		o := map[string]any{"queue": queueName, "backoff": map[string]any{"type": "fixed", "delay": 100}}
		if group != nil {
			o["group"] = group(i)
		}
		b, err := json.Marshal(o)
		require.NoError(s.t, err)
		opts[i] = string(b)
	}
	body, err := json.Marshal(data)
	require.NoError(s.t, err)
	ctx := context.Background()
	conn := s.connect()
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	require.NoError(s.t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	var n int
	require.NoError(s.t, tx.QueryRow(ctx, `
		SELECT count(queue.enqueue($1, $2::jsonb, p_attempts => 10, p_job_id => u.id, p_options => u.opts))
		FROM unnest($3::text[], $4::jsonb[]) AS u(id, opts)`, kind, string(body), jobIDs, opts).Scan(&n))
	require.Equal(s.t, len(jobIDs), n)
	var at time.Time
	require.NoError(s.t, tx.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&at))
	require.NoError(s.t, tx.Commit(ctx))
	return at
}

// claim is one claim of a job: from its 'active' row to the row that ended it (end is
// zero while it holds). Sends of the SMTP sink are claims too, by the test's clock.
type claim struct {
	job, group, worker string
	attempt            int
	start, end         time.Time
	endState, endMsg   string
}

func (c claim) String() string {
	return fmt.Sprintf("%s (group %q, attempt %d, worker %s) %s..%s", c.job, c.group, c.attempt, c.worker,
		c.start.Format("15:04:05.000000"), c.end.Format("15:04:05.000000"))
}

// claims reads every claim of a queue's jobs from the audit trail, in start order.
func (s *system) claims(queueName string) []claim {
	s.t.Helper()
	conn := s.connect()
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), `
		SELECT e.job_id, e.state, e.at, e.attempt, coalesce(e.worker, ''), coalesce(e.message, ''),
		       coalesce(j.group_key, '')
		FROM queue.job_events e LEFT JOIN queue.jobs j ON j.id = e.job_id
		WHERE e.queue = $1 ORDER BY e.job_id, e.id`, queueName)
	require.NoError(s.t, err)
	defer rows.Close()
	var out []claim
	open := map[string]int{}
	for rows.Next() {
		var id, state, worker, msg, group string
		var at time.Time
		var attempt int
		require.NoError(s.t, rows.Scan(&id, &state, &at, &attempt, &worker, &msg, &group))
		if i, ok := open[id]; ok {
			out[i].end, out[i].endState, out[i].endMsg = at, state, msg
			delete(open, id)
		}
		if state == "active" {
			open[id] = len(out)
			out = append(out, claim{job: id, group: group, worker: worker, attempt: attempt, start: at})
		}
	}
	require.NoError(s.t, rows.Err())
	slices.SortStableFunc(out, func(a, b claim) int { return a.start.Compare(b.start) })
	return out
}

// sends are the SMTP sink's deliveries as claims, with the group of each job.
func sends(ds []delivery, groupOf map[string]string) []claim {
	out := make([]claim, len(ds))
	for i, d := range ds {
		out[i] = claim{job: d.jobID, group: groupOf[d.jobID], worker: "smtp", start: d.start, end: d.end}
	}
	return out
}

// allEnded fails the test when a claim never ended (a lost job or a stuck lease).
func allEnded(t *testing.T, cs []claim) {
	t.Helper()
	for _, c := range cs {
		require.False(t, c.end.IsZero(), "the claim %s never ended", c)
	}
}

// requireAllCompleted fails unless all total jobs completed, naming the others with their
// errors. The tests call it after their limit checks, which hold whatever the outcomes.
func (s *system) requireAllCompleted(total int) {
	s.t.Helper()
	if n := s.count("SELECT count(*) FROM queue.jobs WHERE state = 'completed'"); n != total {
		conn := s.connect()
		defer conn.Close(context.Background())
		rows, err := conn.Query(context.Background(),
			"SELECT id || ' ' || state || ': ' || coalesce(error, '') FROM queue.jobs WHERE state <> 'completed' ORDER BY seq LIMIT 10")
		require.NoError(s.t, err)
		var others []string
		for rows.Next() {
			var o string
			require.NoError(s.t, rows.Scan(&o))
			others = append(others, o)
		}
		rows.Close()
		s.t.Fatalf("%d of %d jobs completed; the others: %s", n, total, strings.Join(others, "; "))
	}
}

// sweep walks claims in time order (one that ends at the instant another starts has left
// first) and returns the most that held at once, how long each number held between the
// first start and the last end, and the claims that held at the first instant more than
// limit did.
func sweep(cs []claim, limit int) (most int, lasted map[int]time.Duration, over []claim) {
	type edge struct {
		at       time.Time
		delta, i int
	}
	edges := make([]edge, 0, 2*len(cs))
	for i, c := range cs {
		edges = append(edges, edge{c.start, +1, i}, edge{c.end, -1, i})
	}
	sort.Slice(edges, func(i, j int) bool {
		if !edges[i].at.Equal(edges[j].at) {
			return edges[i].at.Before(edges[j].at)
		}
		return edges[i].delta < edges[j].delta
	})
	lasted = map[int]time.Duration{}
	open := map[int]bool{}
	for k, e := range edges {
		if k > 0 {
			lasted[len(open)] += e.at.Sub(edges[k-1].at)
		}
		if e.delta > 0 {
			open[e.i] = true
		} else {
			delete(open, e.i)
		}
		most = max(most, len(open))
		if over == nil && len(open) > limit {
			for i := range open {
				over = append(over, cs[i])
			}
			slices.SortFunc(over, func(a, b claim) int { return a.start.Compare(b.start) })
		}
	}
	return most, lasted, over
}

// above is how long more than limit claims held at once.
func above(lasted map[int]time.Duration, limit int) time.Duration {
	var d time.Duration
	for n, l := range lasted {
		if n > limit {
			d += l
		}
	}
	return d
}

// requireAtMost fails when more than limit of the claims held at once, naming them.
func requireAtMost(t *testing.T, cs []claim, limit int, what string) {
	t.Helper()
	most, lasted, over := sweep(cs, limit)
	require.LessOrEqual(t, most, limit, "%s: %d at once, above %d for %s in all; the first time:\n%s",
		what, most, limit, above(lasted, limit), fmtClaims(over))
}

func fmtClaims(cs []claim) string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString("  " + c.String() + "\n")
	}
	return b.String()
}

func byGroup(cs []claim) map[string][]claim {
	out := map[string][]claim{}
	for _, c := range cs {
		out[c.group] = append(out[c.group], c)
	}
	return out
}

func workersOf(cs []claim) int {
	seen := map[string]bool{}
	for _, c := range cs {
		seen[c.worker] = true
	}
	return len(seen)
}

// busy is the time from the first start to the last end.
func busy(cs []claim) time.Duration {
	last := cs[0].end
	for _, c := range cs {
		if c.end.After(last) {
			last = c.end
		}
	}
	return last.Sub(cs[0].start)
}

// busiestWindow is the most starts (sorted) within any period; the busiest half-open
// window [t, t+period) begins at a start.
func busiestWindow(starts []time.Time, period time.Duration) int {
	most, j := 0, 0
	for i := range starts {
		for j < len(starts) && starts[j].Before(starts[i].Add(period)) {
			j++
		}
		most = max(most, j-i)
	}
	return most
}

// sampleLeases polls the leases of a queue's jobs (what the concurrency limits count),
// the most of the queue or, perGroup, of any one group, until the returned function is
// called, which gives the most it saw. It checks the database's own state, apart from
// the audit trail's times.
func (s *system) sampleLeases(queueName string, perGroup bool) func() int {
	query := "SELECT count(*) FROM queue.jobs WHERE queue = $1 AND lease_owner IS NOT NULL"
	if perGroup {
		query = `SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM queue.jobs
			WHERE queue = $1 AND lease_owner IS NOT NULL GROUP BY group_key) g`
	}
	conn := s.connect()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	most := 0
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var n int
			if conn.QueryRow(ctx, query, queueName).Scan(&n) == nil {
				most = max(most, n)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	var once sync.Once
	stop := func() int {
		once.Do(func() {
			cancel()
			<-done
			_ = conn.Close(context.Background())
		})
		return most
	}
	s.t.Cleanup(func() { stop() })
	return stop
}

// Queue concurrency 3 over 4 workers of 20 slots each: never more than 3 of the queue's
// jobs active at once, 3 most of the time, and the run takes little more than the limit
// allows.
func TestQueueConcurrencyLimitAcrossWorkers(t *testing.T) {
	t.Parallel()
	total := 90
	if fullSize(t) {
		total = 300
	}
	const limit, workers, job = 3, 4, 50 * time.Millisecond
	// From the launch of the workers to their first claim: exec, pool, schema check,
	// LISTEN, first read of the limits; ~200 ms here, allowed 7x on a busy runner.
	const startup = 1500 * time.Millisecond
	sink := startSlowSMTP(t, func(string, int) time.Duration { return job })
	s := newSystem(t, testutil.NewMigratedDatabase(t), testutil.RedisURL(t), append(sink.env(), "QUEUE_QUEUES=limited:20")...)
	s.setQueue("limited", map[string]any{"concurrency": limit})
	s.enqueue("EMAIL_SEND", emailData, ids("conc", 0, total), "limited", nil)
	leases := s.sampleLeases("limited", false)
	launched := s.dbNow()
	s.startWorkers(workers)
	s.waitAllFinished(total, 2*time.Minute)
	maxLeases := leases()

	cs := s.claims("limited")
	require.Len(t, cs, total, "one claim per job")
	allEnded(t, cs)
	require.LessOrEqual(t, maxLeases, limit, "leases held at once")
	requireAtMost(t, sends(sink.deliveries(), nil), limit, "e-mails sent at once")
	requireAtMost(t, cs, limit, "jobs active at once in the audit trail")
	most, lasted, _ := sweep(cs, limit)
	require.Equal(t, limit, most, "the limit is reached")
	require.Greater(t, workersOf(cs), 1, "the workers took turns under the one limit")

	ideal := time.Duration(total) * job / limit
	budget := ideal*12/10 + startup
	took := busy(cs)
	run := cs[0].start.Add(took).Sub(launched)
	require.LessOrEqual(t, run, budget, "the run from the workers' launch (ideal %s, busy %s)", ideal, took)
	s.requireAllCompleted(total)
	// Where the time beyond the ideal goes: a claim lasts longer than its send (claim,
	// SMTP handshake, outcome), and a freed slot idles until the next claim.
	var claimed, sent time.Duration
	for _, c := range cs {
		claimed += c.end.Sub(c.start)
	}
	for _, d := range sink.deliveries() {
		sent += d.end.Sub(d.start)
	}
	handoff := (time.Duration(limit)*took - claimed) / time.Duration(total)
	report(t, "queue concurrency: workers=%dx20 limit=%d jobs=%d job=%s max_active=%d max_leases_sampled=%d workers_used=%d at_limit=%.0f%% first_start_after=%s busy=%s (%.2fx ideal %s) run=%s budget=%s claim_mean=%s send_mean=%s idle_slot_per_job=%s",
		workers, limit, total, job, most, maxLeases, workersOf(cs), 100*lasted[limit].Seconds()/took.Seconds(),
		cs[0].start.Sub(launched).Round(time.Millisecond), took.Round(time.Millisecond), took.Seconds()/ideal.Seconds(),
		ideal, run.Round(time.Millisecond), budget, (claimed / time.Duration(total)).Round(100*time.Microsecond),
		(sent / time.Duration(total)).Round(100*time.Microsecond), handoff.Round(100*time.Microsecond))
}

// Rate limit over 4 workers: in no window of the period do more than limit jobs start,
// and the starts take within 10% of the time the limit needs for them.
func TestQueueRateLimitAcrossWorkers(t *testing.T) {
	t.Parallel()
	total, limit, period := 100, 20, 500*time.Millisecond
	if fullSize(t) {
		total, limit, period = 1000, 50, time.Second
	}
	s := newSystem(t, testutil.NewMigratedDatabase(t), testutil.RedisURL(t), "QUEUE_QUEUES=rated:10")
	s.setQueue("rated", map[string]any{"rate_limit": limit, "rate_period_ms": period.Milliseconds()})
	s.enqueue("CLEANUP", cleanupData, ids("rate", 0, total), "rated", nil)
	s.startWorkers(4)
	s.waitAllFinished(total, 2*time.Minute)

	cs := s.claims("rated")
	require.Len(t, cs, total, "one start per job")
	starts := make([]time.Time, len(cs))
	for i, c := range cs {
		starts[i] = c.start
	}
	busiest := busiestWindow(starts, period)
	require.LessOrEqual(t, busiest, limit, "starts within one period")
	require.Equal(t, limit, busiest, "the limit is reached")

	// The fastest the limit allows: limit starts at once, then limit more each period.
	ideal := time.Duration(math.Ceil(float64(total)/float64(limit))-1) * period
	took := starts[len(starts)-1].Sub(starts[0])
	require.GreaterOrEqual(t, took, ideal*9/10, "the starts took %s", took)
	require.LessOrEqual(t, took, ideal*11/10, "the starts took %s", took)
	perPeriod := make([]int, int(took/period)+1)
	for _, at := range starts {
		perPeriod[int(at.Sub(starts[0])/period)]++
	}
	s.requireAllCompleted(total)
	report(t, "queue rate: workers=4x10 rate=%d/%s jobs=%d busiest_window=%d starts_took=%s (ideal %s, %+.1f%%) workers_used=%d starts_per_period=%v",
		limit, period, total, busiest, took.Round(time.Millisecond), ideal, 100*(took.Seconds()/ideal.Seconds()-1), workersOf(cs), perPeriod)
}

// Group concurrency 1 with 5 groups: no group ever has two jobs active, and the 5
// groups run side by side most of the time.
func TestGroupConcurrencyLimitAcrossWorkers(t *testing.T) {
	t.Parallel()
	perGroup := 10
	if fullSize(t) {
		perGroup = 50
	}
	const groups, job = 5, 100 * time.Millisecond
	total := groups * perGroup
	sink := startSlowSMTP(t, func(string, int) time.Duration { return job })
	s := newSystem(t, testutil.NewMigratedDatabase(t), testutil.RedisURL(t), append(sink.env(), "QUEUE_QUEUES=grouped:10")...)
	s.setQueue("grouped", map[string]any{"group_concurrency": 1})
	jobIDs := ids("grp", 0, total)
	groupOf := map[string]string{}
	for i, id := range jobIDs {
		groupOf[id] = fmt.Sprintf("g%d", i%groups)
	}
	s.enqueue("EMAIL_SEND", emailData, jobIDs, "grouped", func(i int) string { return groupOf[jobIDs[i]] })
	leases := s.sampleLeases("grouped", true)
	s.startWorkers(3)
	s.waitAllFinished(total, 2*time.Minute)
	maxLeases := leases()

	cs := s.claims("grouped")
	require.Len(t, cs, total, "one claim per job")
	allEnded(t, cs)
	most, lasted, _ := sweep(cs, groups)
	took := busy(cs)
	share := (lasted[groups] + above(lasted, groups)).Seconds() / took.Seconds()
	var audited time.Duration // time a group had more than one job active, by the audit trail
	for _, g := range byGroup(cs) {
		_, l, _ := sweep(g, 1)
		audited += above(l, 1)
	}
	// Printed before the checks: when one fails, the figures say by how much.
	report(t, "group concurrency: workers=3x10 groupConcurrency=1 groups=%d jobs=%d job=%s max_leases_per_group_sampled=%d audit_time_above_1_per_group=%s max_active=%d all_groups_active=%.0f%% four=%.0f%% busy=%s (ideal %s)",
		groups, total, job, maxLeases, audited, most, 100*share, 100*lasted[groups-1].Seconds()/took.Seconds(),
		took.Round(time.Millisecond), time.Duration(perGroup)*job)

	require.Len(t, byGroup(cs), groups)
	require.LessOrEqual(t, maxLeases, 1, "leases held at once by one group")
	for g, gs := range byGroup(sends(sink.deliveries(), groupOf)) {
		requireAtMost(t, gs, 1, "e-mails of group "+g+" sent at once")
	}
	for g, gs := range byGroup(cs) {
		requireAtMost(t, gs, 1, "jobs of group "+g+" active at once in the audit trail")
	}
	require.Equal(t, groups, most, "every group runs at once")
	// A group's next job starts only after its previous finish is recorded, so each
	// group idles for a finish's and a claim's round trips between jobs.
	require.Greater(t, share, 0.5, "share of the time with all %d groups active", groups)
	s.requireAllCompleted(total)
}

// A fair queue: group A has a backlog of thousands, then group B submits 10 jobs at the
// same priority; all of B's jobs start within the next 20 starts of the queue.
func TestFairQueueServesNewGroupAtOnce(t *testing.T) {
	t.Parallel()
	backlog := 2000
	if fullSize(t) {
		backlog = 10000
	}
	const late, within = 10, 20
	// Two slots a worker: claims of one or two jobs, whose order inside a claim (which
	// the audit trail does not keep) moves a start by one place at most.
	s := newSystem(t, testutil.NewMigratedDatabase(t), testutil.RedisURL(t), "QUEUE_QUEUES=fair:2")
	s.setQueue("fair", map[string]any{"fair": true})
	s.enqueue("CLEANUP", cleanupData, ids("a", 0, backlog), "fair", func(int) string { return "A" })
	s.startWorkers(2)
	require.Eventually(t, func() bool {
		return s.count("SELECT count(*) FROM queue.job_events WHERE queue = 'fair' AND state = 'active'") >= 50
	}, time.Minute, 5*time.Millisecond, "A runs")
	// B arrives while the queue is paused (a claim under way takes the settings row, so
	// none is once the pause is stored): no claim straddles the submission, and the next
	// starts are exactly those decided with B's jobs waiting.
	s.setQueue("fair", map[string]any{"paused": true})
	submitted := s.enqueue("CLEANUP", cleanupData, ids("b", 0, late), "fair", func(int) string { return "B" })
	s.setQueue("fair", map[string]any{"paused": false})
	require.Eventually(t, func() bool {
		return s.count("SELECT count(*) FROM queue.jobs WHERE id LIKE 'b-%' AND state = 'completed'") == late
	}, time.Minute, 10*time.Millisecond, "B's jobs complete")

	conn := s.connect()
	defer conn.Close(context.Background())
	// A claim's jobs start at one instant, in no recorded order: each start counts at
	// the last place of its claim.
	rows, err := conn.Query(context.Background(), `
		WITH starts AS (
			SELECT e.at, j.group_key FROM queue.job_events e JOIN queue.jobs j ON j.id = e.job_id
			WHERE e.queue = 'fair' AND e.state = 'active' AND e.at > $1)
		SELECT count(*) OVER (ORDER BY at RANGE UNBOUNDED PRECEDING), group_key FROM starts ORDER BY at`, submitted)
	require.NoError(t, err)
	var positions []int
	for rows.Next() {
		var n int
		var group string
		require.NoError(t, rows.Scan(&n, &group))
		if group == "B" {
			positions = append(positions, n)
		}
	}
	require.NoError(t, rows.Err())
	require.Len(t, positions, late, "B's starts after its submission")
	require.LessOrEqual(t, positions[late-1], within, "positions of B's starts among the queue's starts: %v", positions)
	started := s.count("SELECT count(*) FROM queue.job_events WHERE queue = 'fair' AND state = 'active' AND job_id LIKE 'a-%' AND at < $1", submitted)
	require.Greater(t, backlog-started, 1000, "A still had a backlog when B arrived")
	report(t, "fair queue: workers=2x2 backlog_A=%d A_waiting_at_submit=%d jobs_B=%d B_start_positions=%v (within %d)",
		backlog, backlog-started, late, positions, within)
}

// A worker SIGKILLed while it holds every slot of a queue limited to 3: the slots stay
// taken until its leases expire, then the rescued jobs run on the other worker, every
// job completes exactly once, and at no instant do more than 3 of the queue's jobs hold
// a slot.
func TestKilledWorkerGivesBackLimitedSlots(t *testing.T) {
	t.Parallel()
	total := 15
	if fullSize(t) {
		total = 60
	}
	const limit, lease, job = 3, time.Second, 150 * time.Millisecond
	held := ids("held", 0, limit) // claimed first: the earliest submitted
	sink := startSlowSMTP(t, func(id string, nth int) time.Duration {
		if nth == 0 && slices.Contains(held, id) {
			return 4 * time.Second // outlives the victim
		}
		return job
	})
	s := newSystem(t, testutil.NewMigratedDatabase(t), testutil.RedisURL(t),
		append(sink.env(), "QUEUE_QUEUES=limited:10", "QUEUE_LEASE="+lease.String())...)
	s.setQueue("limited", map[string]any{"concurrency": limit})
	s.enqueue("EMAIL_SEND", emailData, ids("held", 0, total), "limited", nil)
	leases := s.sampleLeases("limited", false)

	s.startWorkers(1)
	victim := s.workers[0]
	victimID := s.workerID(victim)
	require.Eventually(t, func() bool {
		return s.count("SELECT count(*) FROM queue.jobs WHERE lease_owner = $1 AND id = ANY($2)", victimID, held) == limit
	}, 30*time.Second, 5*time.Millisecond, "the victim holds every slot")
	s.startWorkers(1)
	survivorID := s.workerID(s.workers[1])
	killedAt := s.dbNow()
	victim.kill()
	s.waitAllFinished(total, time.Minute)
	maxLeases := leases()

	cs := s.claims("limited")
	allEnded(t, cs)
	var rescues []time.Time
	var firstAfter time.Time
	for _, c := range cs {
		if c.worker == victimID {
			require.Contains(t, held, c.job, "the victim claimed only the held jobs")
			require.Equal(t, "waiting", c.endState, "%s was rescued", c.job)
			require.True(t, strings.HasPrefix(c.endMsg, "lease expired"), "%s: %s", c.job, c.endMsg)
			rescues = append(rescues, c.end)
			continue
		}
		require.Equal(t, survivorID, c.worker)
		if firstAfter.IsZero() {
			firstAfter = c.start
		}
	}
	require.Len(t, rescues, limit)
	firstRescue, lastRescue := slices.MinFunc(rescues, time.Time.Compare), slices.MaxFunc(rescues, time.Time.Compare)
	require.LessOrEqual(t, maxLeases, limit, "leases held at once")
	// The killed claims hold their slots until their rescue rows.
	requireAtMost(t, cs, limit, "jobs holding a slot at once in the audit trail")
	most, _, _ := sweep(cs, limit)
	require.Equal(t, limit, most)
	require.False(t, firstAfter.Before(firstRescue), "no job started while the dead worker's claims held the slots")
	require.Less(t, lastRescue.Sub(killedAt), lease+time.Second, "the slots come back once the leases expire")
	s.requireAllCompleted(total)
	require.Zero(t, s.count(`SELECT count(*) FROM (SELECT job_id FROM queue.job_events WHERE state = 'completed'
		GROUP BY job_id HAVING count(*) <> 1) t`), "every job completed exactly once")
	require.Equal(t, limit, s.ranTwiceExplained(), "only the rescued jobs ran twice")
	report(t, "killed worker: limit=%d lease=%s jobs=%d rescued=%d slots_back_after=%s first_start_after_kill=%s max_active=%d max_leases_sampled=%d completed_once=%d",
		limit, lease, total, len(rescues), lastRescue.Sub(killedAt).Round(time.Millisecond), firstAfter.Sub(killedAt).Round(time.Millisecond),
		most, maxLeases, total)
}
