package queue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
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
		Fair: queue.Clear[bool](),
	})
	var v *queue.ValidationError
	require.ErrorAs(t, err, &v)
	var fields []string
	for _, p := range v.Problems {
		fields = append(fields, p.Field)
	}
	require.ElementsMatch(t, []string{"name", "concurrency", "rate.limit", "rate.period", "groupConcurrency",
		"groupRate.period", "fair"}, fields)

	q := b.setLimits(t, "emails", queue.QueueLimits{Concurrency: queue.To(2), Rate: queue.To(queue.Rate{Limit: 10, Period: 1000})})
	require.Equal(t, 2, *q.Concurrency)
	require.Equal(t, queue.Rate{Limit: 10, Period: 1000}, *q.Rate)
	q = b.setLimits(t, "emails", queue.QueueLimits{Fair: queue.To(true)})
	require.Equal(t, 2, *q.Concurrency, "a field the change does not name keeps its value")
	require.True(t, q.Fair)
	q = b.setLimits(t, "emails", queue.QueueLimits{Rate: queue.Clear[queue.Rate]()})
	require.Nil(t, q.Rate)
	require.Equal(t, 2, *q.Concurrency)
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
