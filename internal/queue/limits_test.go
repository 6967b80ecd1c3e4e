package queue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/testutil"
)

var anyType = []string{testutil.AnyName}

// enqueueIn submits n jobs to queue q, in group g ("" for none), at priority p.
func (b *bundle) enqueueIn(t *testing.T, q, g string, p, n int) {
	t.Helper()
	jobs := make([]queue.NewJob, n)
	for i := range jobs {
		jobs[i] = queue.NewJob{Type: testutil.AnyName, Data: json.RawMessage(`{}`),
			Options: queue.Options{Queue: &q, Priority: &p}}
		if g != "" {
			jobs[i].Options.Group = &g
		}
	}
	for len(jobs) > 0 {
		k := min(len(jobs), queue.MaxBulk)
		_, err := b.client.EnqueueMany(context.Background(), b.pool, jobs[:k])
		require.NoError(t, err)
		jobs = jobs[k:]
	}
}

func (b *bundle) setLimits(t *testing.T, q string, l queue.QueueLimits) queue.Queue {
	t.Helper()
	out, err := b.client.SetQueueLimits(context.Background(), q, l)
	require.NoError(t, err)
	return out
}

func finishAll(t *testing.T, r *queue.Runner, jobs []queue.Job) {
	t.Helper()
	if len(jobs) == 0 {
		return
	}
	outcomes := make([]queue.Outcome, len(jobs))
	for i, j := range jobs {
		outcomes[i] = queue.Outcome{Claim: claimOf(j), Attempt: j.AttemptsMade, OK: true}
	}
	states, err := r.Finish(context.Background(), queue.RetentionDefaults{RemoveOnComplete: -1, RemoveOnFail: -1}, outcomes)
	require.NoError(t, err)
	require.Len(t, states, len(jobs))
}

// maxOverlap is the most runs of one queue (per group when byGroup) active at once,
// from the audit trail: each start until the next state its job entered.
func maxOverlap(t *testing.T, b *bundle, q string, byGroup bool) int {
	t.Helper()
	rows, err := b.pool.Query(context.Background(), `
		SELECT e.at, e.state = 'active', j.group_key
		FROM queue.job_events e JOIN queue.jobs j ON j.id = e.job_id
		WHERE e.queue = $1 AND e.state IN ('active', 'completed', 'failed', 'waiting', 'delayed') AND e.attempt > 0
		ORDER BY e.at, e.state = 'active'`, q)
	require.NoError(t, err)
	defer rows.Close()
	running, most := map[string]int{}, 0
	for rows.Next() {
		var at time.Time
		var start bool
		var g string
		require.NoError(t, rows.Scan(&at, &start, &g))
		if !byGroup {
			g = ""
		}
		if start {
			running[g]++
			most = max(most, running[g])
		} else {
			running[g]--
		}
	}
	require.NoError(t, rows.Err())
	return most
}

// Four workers claim a queue limited to 3 at once, each asking for 20 slots and
// finishing its jobs after a few milliseconds: never more than 3 run at once, and the
// queue is drained.
func TestConcurrencyLimitHoldsAcrossWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.setLimits(t, "smtp", queue.QueueLimits{Concurrency: queue.To(3)})
	b.enqueueIn(t, "smtp", "", 5, 60)

	var wg sync.WaitGroup
	for w := range 4 {
		r := queue.NewRunner(b.pool, fmt.Sprintf("w%d", w))
		wg.Go(func() {
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				jobs, err := r.ClaimLimited(context.Background(), "smtp", anyType, 20, time.Minute)
				require.NoError(t, err)
				require.LessOrEqual(t, len(jobs), 3)
				if len(jobs) == 0 {
					var left int
					require.NoError(t, b.pool.QueryRow(context.Background(),
						`SELECT count(*) FROM queue.jobs WHERE queue = 'smtp' AND state <> 'completed'`).Scan(&left))
					if left == 0 {
						return
					}
					time.Sleep(2 * time.Millisecond)
					continue
				}
				time.Sleep(3 * time.Millisecond)
				finishAll(t, r, jobs)
			}
		})
	}
	wg.Wait()
	require.Equal(t, 60, b.count(t, `SELECT count(*) FROM queue.jobs WHERE state = 'completed'`))
	require.Equal(t, 3, maxOverlap(t, b, "smtp", false), "3 at once at most, and 3 used")
}

// A rate limit counts starts within a sliding window, not per fixed second: in any
// window of the period no more than the limit start, and a held claim learns when the
// window has room again.
func TestRateLimitHoldsInEveryWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	b.setLimits(t, "api", queue.QueueLimits{Rate: queue.To(queue.Rate{Limit: 4, Period: 300})})
	b.enqueueIn(t, "api", "", 5, 14)
	r := queue.NewRunner(b.pool, "w1")

	var starts []time.Time
	deadline := time.Now().Add(20 * time.Second)
	for len(starts) < 14 && time.Now().Before(deadline) {
		jobs, err := r.ClaimLimited(ctx, "api", anyType, 10, time.Minute)
		require.NoError(t, err)
		for _, j := range jobs {
			starts = append(starts, j.StartedAt.Time)
		}
		finishAll(t, r, jobs)
		if len(starts) < 14 {
			hold, err := r.Hold(ctx, "api")
			require.NoError(t, err)
			require.Equal(t, queue.LimitRate, hold.By)
			require.LessOrEqual(t, hold.NextStart, 300*time.Millisecond)
			time.Sleep(max(hold.NextStart, time.Millisecond))
		}
	}
	require.Len(t, starts, 14)
	sort.Slice(starts, func(i, j int) bool { return starts[i].Before(starts[j]) })
	for i := range starts {
		in := 0
		for _, s := range starts[i:] {
			if s.Sub(starts[i]) < 300*time.Millisecond {
				in++
			}
		}
		require.LessOrEqual(t, in, 4, "starts in the 300 ms from %s", starts[i])
	}
	// 14 starts at 4 per 300 ms need three full windows: about 900 ms, not much more.
	took := starts[13].Sub(starts[0])
	require.GreaterOrEqual(t, took, 900*time.Millisecond)
	require.Less(t, took, 3*time.Second)
}

// Group concurrency: one job per group at a time, every group served, and the claim
// reports the group limit as what held it back.
func TestGroupConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	b.setLimits(t, "tenants", queue.QueueLimits{GroupConcurrency: queue.To(1)})
	for _, g := range []string{"acme", "globex", "initech"} {
		b.enqueueIn(t, "tenants", g, 5, 5)
	}
	r := queue.NewRunner(b.pool, "w1")
	jobs, err := r.ClaimLimited(ctx, "tenants", anyType, 10, time.Minute)
	require.NoError(t, err)
	var groups []string
	for _, j := range jobs {
		groups = append(groups, *j.Group)
	}
	slices.Sort(groups)
	require.Equal(t, []string{"acme", "globex", "initech"}, groups)
	hold, err := r.Hold(ctx, "tenants")
	require.NoError(t, err)
	require.Equal(t, queue.LimitGroupConcurrency, hold.By)

	more, err := queue.NewRunner(b.pool, "w2").ClaimLimited(ctx, "tenants", anyType, 10, time.Minute)
	require.NoError(t, err)
	require.Empty(t, more, "every group is at its limit, whichever worker asks")
	finishAll(t, r, jobs[:1])
	more, err = queue.NewRunner(b.pool, "w2").ClaimLimited(ctx, "tenants", anyType, 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, more, 1)
	require.Equal(t, *jobs[0].Group, *more[0].Group, "the group whose job finished gets the slot")
}

// Fairness: ten jobs of a group submitted behind 1,000 of another all start within the
// next 20 starts, one claim at a time; priority still comes first.
func TestFairQueueTakesTurns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	b.setLimits(t, "fair", queue.QueueLimits{Fair: queue.To(true)})
	b.enqueueIn(t, "fair", "big", 5, 1000)
	r := queue.NewRunner(b.pool, "w1")
	first, err := r.ClaimLimited(ctx, "fair", anyType, 3, time.Minute)
	require.NoError(t, err)
	require.Len(t, first, 3, "one group alone gets every slot")
	finishAll(t, r, first)

	b.enqueueIn(t, "fair", "small", 5, 10)
	var order []string
	for range 20 {
		jobs, err := r.ClaimLimited(ctx, "fair", anyType, 1, time.Minute)
		require.NoError(t, err)
		require.Len(t, jobs, 1)
		order = append(order, *jobs[0].Group)
		finishAll(t, r, jobs)
	}
	small := 0
	for _, g := range order {
		if g == "small" {
			small++
		}
	}
	require.Equal(t, 10, small, "all of small's jobs in the next 20 starts: %v", order)

	b.enqueueIn(t, "fair", "vip", 20, 2)
	jobs, err := r.ClaimLimited(ctx, "fair", anyType, 3, time.Minute)
	require.NoError(t, err)
	require.Len(t, jobs, 3)
	require.Equal(t, "vip", *jobs[0].Group)
	require.Equal(t, "vip", *jobs[1].Group, "a higher priority goes before taking turns")
	require.Equal(t, "big", *jobs[2].Group)
}

// A queue with limits is left alone by the plain claim (a worker that has not yet read
// the new settings cannot exceed them), and one without limits pays nothing: its claim
// reads the settings row it always read.
func TestPlainClaimLeavesLimitedQueuesAlone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	b.enqueueIn(t, "default", "", 5, 3)
	b.setLimits(t, "default", queue.QueueLimits{Concurrency: queue.To(1)})
	r := queue.NewRunner(b.pool, "w1")
	jobs, err := r.Claim(ctx, queue.DefaultQueue, anyType, 10, time.Minute)
	require.NoError(t, err)
	require.Empty(t, jobs)
	limits, err := r.Limits(ctx, []string{"default", "other"})
	require.NoError(t, err)
	require.Equal(t, map[string]queue.Limits{"default": {Limited: true, Slots: true}}, limits)

	q := b.setLimits(t, "default", queue.QueueLimits{Concurrency: queue.Clear[int]()})
	require.Nil(t, q.Concurrency)
	jobs, err = r.Claim(ctx, queue.DefaultQueue, anyType, 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, jobs, 3, "limits cleared: the plain claim takes the queue again")
}

// Settings are checked field by field; a change names only what it changes.
func TestQueueLimitsAreValidated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	_, err := b.client.SetQueueLimits(ctx, "Bad Name", queue.QueueLimits{
		Concurrency: queue.To(0), Rate: queue.To(queue.Rate{Limit: 100001, Period: 0}),
		GroupConcurrency: queue.To(-1), GroupRate: queue.To(queue.Rate{Limit: 1, Period: 86400001}),
	})
	var v *queue.ValidationError
	require.ErrorAs(t, err, &v)
	var fields []string
	for _, p := range v.Problems {
		fields = append(fields, p.Field)
	}
	require.ElementsMatch(t, []string{"name", "concurrency", "rate.limit", "rate.period", "groupConcurrency",
		"groupRate.period"}, fields)

	q := b.setLimits(t, "emails", queue.QueueLimits{Concurrency: queue.To(2), Rate: queue.To(queue.Rate{Limit: 10, Period: 1000})})
	require.Equal(t, 2, *q.Concurrency)
	require.Equal(t, queue.Rate{Limit: 10, Period: 1000}, *q.Rate)
	q = b.setLimits(t, "emails", queue.QueueLimits{Fair: queue.To(true)})
	require.Equal(t, 2, *q.Concurrency, "a field the change does not name keeps its value")
	require.True(t, q.Fair)
	q = b.setLimits(t, "emails", queue.QueueLimits{Rate: queue.Clear[queue.Rate]()})
	require.Nil(t, q.Rate)
	require.Equal(t, 2, *q.Concurrency)
	q = b.setLimits(t, "emails", queue.QueueLimits{Fair: queue.Clear[bool]()})
	require.False(t, q.Fair, "cleared: the default")
}

// The settings and what they did are plain SQL: an auditor reads queue.queues.
func TestLimitsAreReadableInSQL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	b.setLimits(t, "emails", queue.QueueLimits{Concurrency: queue.To(1), GroupRate: queue.To(queue.Rate{Limit: 5, Period: 1000})})
	b.enqueueIn(t, "emails", "", 5, 2)
	_, err := queue.NewRunner(b.pool, "w1").ClaimLimited(ctx, "emails", anyType, 5, time.Minute)
	require.NoError(t, err)
	var conc, grl, grp int
	var limited bool
	var held string
	require.NoError(t, b.pool.QueryRow(ctx, `
		SELECT concurrency, group_rate_limit, group_rate_period_ms, limited, held_by
		FROM queue.queues WHERE name = 'emails'`).Scan(&conc, &grl, &grp, &limited, &held))
	require.Equal(t, []any{1, 5, 1000, true, "concurrency"}, []any{conc, grl, grp, limited, held})
}

// waitingJob is a waiting job as the model of a grouped claim sees it.
type waitingJob struct {
	seq      int64
	group    string
	priority int
	runAt    time.Time
	last     *time.Time // the group's last start (fair queues)
}

// modelPick is what a grouped claim must take: jobs in the queue's order, each group
// within its room; fair queues order equal priorities by round (a group's 1st job, then
// every group's 2nd, ...) and, within a round, by the group's last start, oldest first.
func modelPick(jobs []waitingJob, room map[string]int, allowed int, fair bool) []int64 {
	slices.SortFunc(jobs, func(a, b waitingJob) int {
		if a.group != b.group {
			return strings.Compare(a.group, b.group)
		}
		if a.priority != b.priority {
			return b.priority - a.priority
		}
		if c := a.runAt.Compare(b.runAt); c != 0 {
			return c
		}
		return int(a.seq - b.seq)
	})
	type cand struct {
		waitingJob
		round int
	}
	var cands []cand
	rounds := map[string]int{}
	for _, j := range jobs {
		rounds[j.group]++
		if rounds[j.group] <= room[j.group] {
			cands = append(cands, cand{j, rounds[j.group]})
		}
	}
	slices.SortFunc(cands, func(a, b cand) int {
		if a.priority != b.priority {
			return b.priority - a.priority
		}
		if fair {
			if a.round != b.round {
				return a.round - b.round
			}
			switch {
			case a.last == nil && b.last != nil:
				return -1
			case a.last != nil && b.last == nil:
				return 1
			case a.last != nil && !a.last.Equal(*b.last):
				return a.last.Compare(*b.last)
			}
		}
		if c := a.runAt.Compare(b.runAt); c != 0 {
			return c
		}
		return int(a.seq - b.seq)
	})
	out := []int64{}
	for _, c := range cands[:min(allowed, len(cands))] {
		out = append(out, c.seq)
	}
	slices.Sort(out)
	return out
}

// A grouped claim takes exactly the jobs the model says, whatever the mix of groups (and
// of jobs without one), priorities, group limits and claim sizes: checked against random
// queues, claim after claim, with some runs finishing in between.
func TestGroupedClaimMatchesModel(t *testing.T) {
	t.Parallel()
	for _, fair := range []bool{false, true} {
		for seed := range 4 {
			t.Run(fmt.Sprintf("fair=%v/seed=%d", fair, seed), func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				b := setup(t)
				rng := rand.New(rand.NewPCG(uint64(seed), 7))
				limit := 1 + rng.IntN(3)
				l := queue.QueueLimits{Fair: queue.To(fair), GroupConcurrency: queue.To(limit)}
				if rng.IntN(2) == 0 {
					l.GroupConcurrency = queue.Clear[int]() // fairness or priorities alone
					l.Fair = queue.To(true)
					limit = 1 << 20
				}
				b.setLimits(t, "mix", l)
				for g := range 7 {
					group := fmt.Sprintf("g%d", g)
					if g == 0 {
						group = "" // jobs without a group are one group of their own
					}
					for range rng.IntN(9) {
						b.enqueueIn(t, "mix", group, []int{1, 5, 5, 10}[rng.IntN(4)], 1)
					}
				}
				r := queue.NewRunner(b.pool, "w1")
				var running []queue.Job
				for round := range 12 {
					want := b.modelState(t, "mix", limit, l.Fair.Value != nil && *l.Fair.Value)
					max := 1 + rng.IntN(12)
					got, err := r.ClaimLimited(ctx, "mix", anyType, max, time.Minute)
					require.NoError(t, err)
					gotSeqs := make([]int64, len(got))
					for i, j := range got {
						gotSeqs[i] = j.Seq
					}
					slices.Sort(gotSeqs)
					require.Equal(t, want(max), gotSeqs, "round %d, claim of %d", round, max)
					running = append(running, got...)
					// Finish a random share of what runs.
					rng.Shuffle(len(running), func(i, j int) { running[i], running[j] = running[j], running[i] })
					k := rng.IntN(len(running) + 1)
					finishAll(t, r, running[:k])
					running = running[k:]
				}
			})
		}
	}
}

// modelState reads the waiting jobs, the leases and the fair order of a queue, and
// returns the model's pick for a claim of n.
func (b *bundle) modelState(t *testing.T, q string, groupLimit int, fair bool) func(n int) []int64 {
	t.Helper()
	ctx := context.Background()
	rows, err := b.pool.Query(ctx, `
		SELECT j.seq, j.group_key, j.priority, j.run_at, g.last_started_at
		FROM queue.jobs j LEFT JOIN queue.queue_groups g ON g.queue = j.queue AND g.group_key = j.group_key
		WHERE j.queue = $1 AND j.state = 'waiting'`, q)
	require.NoError(t, err)
	var jobs []waitingJob
	for rows.Next() {
		var j waitingJob
		require.NoError(t, rows.Scan(&j.seq, &j.group, &j.priority, &j.runAt, &j.last))
		jobs = append(jobs, j)
	}
	require.NoError(t, rows.Err())
	room := map[string]int{}
	for _, j := range jobs {
		room[j.group] = groupLimit
	}
	rows, err = b.pool.Query(ctx, `SELECT group_key, count(*) FROM queue.jobs WHERE queue = $1 AND lease_owner IS NOT NULL GROUP BY 1`, q)
	require.NoError(t, err)
	for rows.Next() {
		var g string
		var n int
		require.NoError(t, rows.Scan(&g, &n))
		room[g] -= n
	}
	require.NoError(t, rows.Err())
	return func(n int) []int64 { return modelPick(jobs, room, n, fair) }
}
