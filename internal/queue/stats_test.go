package queue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/testutil"
)

// countsByScan is the truth the trigger-maintained counts must equal.
func (b *bundle) countsByScan(t *testing.T) map[string]int64 {
	t.Helper()
	rows, err := b.pool.Query(context.Background(), "SELECT state || '/' || type, count(*) FROM queue.jobs GROUP BY 1")
	require.NoError(t, err)
	out := map[string]int64{}
	for rows.Next() {
		var k string
		var n int64
		require.NoError(t, rows.Scan(&k, &n))
		out[k] = n
	}
	require.NoError(t, rows.Err())
	return out
}

func flatten(s queue.Stats) map[string]int64 {
	out := map[string]int64{}
	for typ, c := range s.ByType {
		for state, n := range map[string]int64{"waiting": c.Waiting, "active": c.Active, "completed": c.Completed,
			"failed": c.Failed, "delayed": c.Delayed, "cancelled": c.Cancelled} {
			if n != 0 {
				out[state+"/"+typ] = n
			}
		}
	}
	return out
}

func (b *bundle) requireCountsExact(t *testing.T, step string) {
	t.Helper()
	s, err := b.client.Stats(context.Background())
	require.NoError(t, err)
	require.Equal(t, b.countsByScan(t), flatten(s), "after %s", step)
	var total int64
	for _, n := range b.countsByScan(t) {
		total += n
	}
	require.Equal(t, total, s.Waiting+s.Active+s.Completed+s.Failed+s.Delayed+s.Cancelled, "after %s", step)
}

// Every kind of statement that changes jobs keeps the stats exact.
func TestStatsStayExactThroughEveryStateChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	defaults := queue.RetentionDefaults{RemoveOnComplete: -1, RemoveOnFail: -1}
	b.requireCountsExact(t, "nothing")

	var batch []queue.NewJob
	for i := range 40 {
		typ := testutil.AnyName
		if i%3 == 0 {
			typ = testutil.KindName
		}
		j := queue.NewJob{Type: typ, Data: json.RawMessage(`{}`)}
		if i%10 == 0 {
			j.Options.Delay = ptr(int64(60_000))
		}
		if i%4 == 0 {
			j.Options.RemoveOnComplete = ptr(queue.Retention(0))
		}
		batch = append(batch, j)
	}
	_, err := b.client.EnqueueMany(ctx, b.pool, batch)
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `SELECT queue.enqueue('TEST_ANY', '{}') FROM generate_series(1, 5)`)
	require.NoError(t, err)
	b.requireCountsExact(t, "enqueue")

	r := queue.NewRunner(b.pool, "w1")
	claimed, err := r.Claim(ctx, queue.DefaultQueue, []string{testutil.AnyName, testutil.KindName}, 30, time.Minute)
	require.NoError(t, err)
	require.Len(t, claimed, 30)
	b.requireCountsExact(t, "claim")

	var outcomes []queue.Outcome
	for i, j := range claimed[:20] {
		o := queue.Outcome{Claim: claimOf(j), Attempt: j.AttemptsMade, OK: i%2 == 0, Remove: i%4 == 0}
		if !o.OK {
			o.Message = fmt.Sprintf("err %d", i)
			o.RetryIn = []time.Duration{-1, 0, time.Minute}[i%3]
		}
		outcomes = append(outcomes, o)
	}
	_, err = r.Finish(ctx, defaults, outcomes)
	require.NoError(t, err)
	b.requireCountsExact(t, "finish (complete, remove at once, retry, fail)")

	_, err = b.client.Cancel(ctx, claimed[25].ID)
	require.NoError(t, err)
	_, err = r.Heartbeat(ctx, []queue.Claim{claimOf(claimed[20]), claimOf(claimed[21])}, time.Minute)
	require.NoError(t, err)
	_, err = r.HandBack(ctx, []queue.Claim{claimOf(claimed[22]), claimOf(claimed[23]), claimOf(claimed[25])})
	require.NoError(t, err)
	b.requireCountsExact(t, "cancel, heartbeat, hand back")

	m := b.leader(t, defaults)
	future := time.Now().Add(time.Hour)
	_, err = m.Promote(ctx, &future)
	require.NoError(t, err)
	_, err = m.Rescue(ctx, &future)
	require.NoError(t, err)
	_, err = m.Trim(ctx)
	require.NoError(t, err)
	b.requireCountsExact(t, "promote, rescue, trim")

	require.NoError(t, m.CompactCounts(ctx))
	b.requireCountsExact(t, "compaction")
	var rows int
	require.NoError(t, b.pool.QueryRow(ctx, "SELECT count(*) FROM queue.job_counts").Scan(&rows))
	require.LessOrEqual(t, rows, 6*2, "one row per queue, state and type after compaction")

	_, err = b.pool.Exec(ctx, "TRUNCATE queue.jobs")
	require.NoError(t, err)
	b.requireCountsExact(t, "truncate")
}

func claimOf(j queue.Job) queue.Claim { return queue.Claim{Seq: j.Seq, Token: j.LeaseToken} }
