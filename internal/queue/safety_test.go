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

// The same worker can claim the same job at the same attempt number twice (rescued,
// failed, retried by request, claimed again): the claim token tells the runs apart, so
// the old run's heartbeat, progress and outcome never touch the new claim.
func TestOldRunCannotTouchANewClaim(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	w := queue.NewRunner(b.pool, "w1")
	res, err := b.client.Enqueue(ctx, b.pool, queue.NewJob{Type: testutil.AnyName, Data: json.RawMessage(`{}`),
		Options: queue.Options{Attempts: ptr(1)}})
	require.NoError(t, err)

	first := claimOnly(t, w)
	m := b.leader(t, queue.RetentionDefaults{RemoveOnComplete: -1, RemoveOnFail: -1})
	later := time.Now().Add(time.Hour)
	rescued, err := m.Rescue(ctx, &later)
	require.NoError(t, err)
	require.Len(t, rescued, 1)
	require.Equal(t, queue.StateFailed, rescued[0].State, "no attempt left")
	_, err = b.client.Retry(ctx, res.Job.ID)
	require.NoError(t, err)
	second := claimOnly(t, w)
	require.Equal(t, first.AttemptsMade, second.AttemptsMade, "same worker, same attempt number")
	require.NotEqual(t, first.LeaseToken, second.LeaseToken)

	states, err := w.Heartbeat(ctx, []queue.Claim{claimOf(first)}, time.Minute)
	require.NoError(t, err)
	require.Empty(t, states, "the old run no longer holds the job")
	require.NoError(t, w.SetProgress(ctx, map[queue.Claim]int{claimOf(first): 77}))
	states, err = w.Finish(ctx, queue.RetentionDefaults{RemoveOnComplete: -1, RemoveOnFail: -1}, []queue.Outcome{{
		Claim: claimOf(first), Attempt: first.AttemptsMade, Message: "job lease lost", RetryIn: -1,
	}})
	require.NoError(t, err)
	require.Empty(t, states, "the old run's outcome is not recorded")
	back, err := w.HandBack(ctx, []queue.Claim{claimOf(first)})
	require.NoError(t, err)
	require.Empty(t, back)

	j, err := b.client.Get(ctx, res.Job.ID)
	require.NoError(t, err)
	require.Equal(t, queue.StateActive, j.State)
	require.Equal(t, 0, j.Progress)
	require.Equal(t, second.LeaseToken, j.LeaseToken)

	states, err = w.Finish(ctx, queue.RetentionDefaults{RemoveOnComplete: -1, RemoveOnFail: -1}, []queue.Outcome{{
		Claim: claimOf(second), Attempt: second.AttemptsMade, OK: true, Result: []byte(`"done"`),
	}})
	require.NoError(t, err)
	require.Equal(t, map[int64]string{second.Seq: queue.StateCompleted}, states)
}

// A heartbeat that comes after the lease expired does not extend it: from its expiry
// the job belongs to the rescuer, even before the rescuer ran.
func TestHeartbeatNeverRevivesAnExpiredLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	w := queue.NewRunner(b.pool, "w1")
	_, err := b.client.Enqueue(ctx, b.pool, queue.NewJob{Type: testutil.AnyName, Data: json.RawMessage(`{}`)})
	require.NoError(t, err)
	fresh := claimOnly(t, w)
	states, err := w.Heartbeat(ctx, []queue.Claim{claimOf(fresh)}, time.Minute)
	require.NoError(t, err)
	require.Equal(t, map[int64]string{fresh.Seq: queue.StateActive}, states, "an unexpired lease is extended")

	// The worker froze past its lease.
	_, err = b.pool.Exec(ctx, `UPDATE queue.jobs SET lease_expires_at = now() - interval '1 second' WHERE seq = $1`, fresh.Seq)
	require.NoError(t, err)
	states, err = w.Heartbeat(ctx, []queue.Claim{claimOf(fresh)}, time.Minute)
	require.NoError(t, err)
	require.Empty(t, states, "the expired lease is lost, not revived")
	require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.jobs WHERE seq = $1 AND lease_expires_at < now()", fresh.Seq))

	m := b.leader(t, queue.RetentionDefaults{RemoveOnComplete: -1, RemoveOnFail: -1})
	rescued, err := m.Rescue(ctx, nil)
	require.NoError(t, err)
	require.Len(t, rescued, 1)
	require.Equal(t, queue.StateWaiting, rescued[0].State)
}

// Leadership is a lease with an expiry. While it holds, nobody else leads; once it
// expires (the leader froze), another worker takes it, and the old leader's maintenance
// statements change nothing even though it still believes it leads.
func TestLeaderLeaseExpires(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	cfg := queue.MaintenanceConfig{LeaseTTL: time.Minute, Defaults: queue.RetentionDefaults{RemoveOnComplete: -1, RemoveOnFail: -1}, EventsRetention: time.Hour}
	old := queue.NewMaintenance(b.pool, "old", cfg)
	next := queue.NewMaintenance(b.pool, "next", cfg)
	lead, err := old.Lead(ctx)
	require.NoError(t, err)
	require.True(t, lead)
	lead, err = next.Lead(ctx)
	require.NoError(t, err)
	require.False(t, lead, "the lease holds")
	lead, err = old.Lead(ctx)
	require.NoError(t, err)
	require.True(t, lead, "the holder renews it")

	_, err = b.client.Enqueue(ctx, b.pool, queue.NewJob{Type: testutil.AnyName, Data: json.RawMessage(`{}`),
		Options: queue.Options{Delay: ptr(int64(1))}})
	require.NoError(t, err)
	time.Sleep(5 * time.Millisecond)

	// The old leader freezes; its lease runs out.
	_, err = b.pool.Exec(ctx, `UPDATE queue.leaders SET expires_at = now() - interval '1 second'`)
	require.NoError(t, err)
	promoted, err := old.Promote(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, promoted, "an expired lease changes nothing")
	lead, err = next.Lead(ctx)
	require.NoError(t, err)
	require.True(t, lead, "another worker takes the expired lease")
	promoted, err = old.Promote(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, promoted, "the old leader, awake again, still changes nothing")
	lead, err = old.Lead(ctx)
	require.NoError(t, err)
	require.False(t, lead)
	promoted, err = next.Promote(ctx, nil)
	require.NoError(t, err)
	require.Len(t, promoted, 1)

	require.NoError(t, next.Resign(ctx))
	lead, err = old.Lead(ctx)
	require.NoError(t, err)
	require.True(t, lead, "a resigned lease is free at once")
}

func claimOnly(t *testing.T, r *queue.Runner) queue.Job {
	t.Helper()
	jobs, err := r.Claim(context.Background(), queue.DefaultQueue, []string{testutil.AnyName}, 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, jobs, 1)
	return jobs[0]
}
