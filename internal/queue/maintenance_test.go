package queue_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/testutil"
)

func (b *bundle) leader(t *testing.T, defaults queue.RetentionDefaults) *queue.Maintenance {
	t.Helper()
	m := queue.NewMaintenance(b.pool, "leader", queue.MaintenanceConfig{LeaseTTL: time.Hour, Defaults: defaults, EventsRetention: time.Hour})
	lead, err := m.Lead(context.Background())
	require.NoError(t, err)
	require.True(t, lead)
	t.Cleanup(func() { _ = m.Resign(context.Background()) })
	return m
}

// finishAll claims and completes every waiting job, one statement per job so that each
// has its own finished_at order, as a worker whose default is keep 3.
func (b *bundle) finishAll(t *testing.T, ok bool) {
	t.Helper()
	ctx := context.Background()
	r := queue.NewRunner(b.pool, "w")
	for {
		jobs, err := r.Claim(ctx, queue.DefaultQueue, []string{testutil.AnyName}, 1, time.Minute)
		require.NoError(t, err)
		if len(jobs) == 0 {
			return
		}
		_, err = r.Finish(ctx, queue.RetentionDefaults{RemoveOnComplete: 3, RemoveOnFail: -1},
			[]queue.Outcome{{Claim: queue.Claim{Seq: jobs[0].Seq, Token: jobs[0].LeaseToken}, Attempt: 1, OK: ok, Message: "x", RetryIn: -1}})
		require.NoError(t, err)
	}
}

// Retention stays exact across passes that resume from the leader's cursor: jobs kept
// for good are skipped, keep-N holds as newer jobs arrive, mixed values each hold.
func TestTrimAcrossPasses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	m := b.leader(t, queue.RetentionDefaults{RemoveOnComplete: 3, RemoveOnFail: -1})
	enqueue := func(n int, keep *queue.Retention) []string {
		var ids []string
		for range n {
			r, err := b.client.Enqueue(ctx, b.pool, queue.NewJob{Type: testutil.AnyName, Data: json.RawMessage(`{}`),
				Options: queue.Options{RemoveOnComplete: keep}})
			require.NoError(t, err)
			ids = append(ids, r.Job.ID)
		}
		b.finishAll(t, true)
		// Older than the trim margin, so passes resume from the cursor past them.
		time.Sleep(300 * time.Millisecond)
		return ids
	}
	forever := enqueue(5, ptr(queue.Retention(-1)))
	first := enqueue(4, nil) // the default: keep 3
	_, err := m.Trim(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = ANY($1)", first))
	require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = $1", first[3]), "the newest stays")

	second := enqueue(2, nil)
	_, err = m.Trim(ctx)
	require.NoError(t, err)
	// Keep 3 counts every completed job newer than the row, kept-for-good ones included.
	require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = ANY($1)", first), "only first[3] has fewer than 3 newer")
	require.Equal(t, 2, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = ANY($1)", second))
	require.Equal(t, 5, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = ANY($1)", forever), "retention false keeps")

	ones := enqueue(2, ptr(queue.Retention(1)))
	zero := enqueue(1, ptr(queue.Retention(0)))
	require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = ANY($1)", zero),
		"true, finished without removal (no snapshot stored), waits for retention")
	for range 3 {
		_, err = m.Trim(ctx)
		require.NoError(t, err)
	}
	require.Zero(t, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = ANY($1)", first))
	require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = ANY($1)", second), "two newer now")
	require.Equal(t, 0, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = $1", ones[0]))
	require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = $1", ones[1]))
	require.Equal(t, 5, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = ANY($1)", forever))
	require.Zero(t, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = ANY($1)", zero), "retention removed the job kept at finish")
}

// The leader vacuums the jobs table when dead tuples pile up (autovacuum may be off).
func TestVacuumWhenDeadTuplesPileUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	m := b.leader(t, queue.RetentionDefaults{RemoveOnComplete: -1, RemoveOnFail: -1})
	var batch []queue.NewJob
	for range 1000 {
		batch = append(batch, queue.NewJob{Type: testutil.AnyName, Data: json.RawMessage(`{}`)})
	}
	for range 7 {
		_, err := b.client.EnqueueMany(ctx, b.pool, batch)
		require.NoError(t, err)
	}
	_, err := b.pool.Exec(ctx, "DELETE FROM queue.jobs")
	require.NoError(t, err)
	var vacuumed []string
	require.Eventually(t, func() bool {
		vacuumed, err = m.VacuumIfNeeded(ctx)
		require.NoError(t, err)
		return len(vacuumed) > 0
	}, 20*time.Second, 200*time.Millisecond, "statistics show the dead tuples, then the leader vacuums")
	require.Contains(t, vacuumed, "jobs")
	var vacuumedAt *time.Time
	require.NoError(t, b.pool.QueryRow(ctx, "SELECT greatest(last_vacuum, last_autovacuum) FROM pg_stat_user_tables WHERE relid = 'queue.jobs'::regclass").Scan(&vacuumedAt))
	require.NotNil(t, vacuumedAt)
	again, err := m.VacuumIfNeeded(ctx)
	require.NoError(t, err)
	require.NotContains(t, again, "jobs", "not again within the interval")
}
