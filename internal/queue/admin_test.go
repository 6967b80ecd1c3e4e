package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/testutil"
)

// enqueueN submits n EMAIL_SEND jobs and returns their ids in submission order.
func (b *bundle) enqueueN(t *testing.T, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		res, err := b.client.Enqueue(context.Background(), b.pool, emailJob())
		require.NoError(t, err)
		ids[i] = res.Job.ID
	}
	return ids
}

// claimOne claims the next job for worker w.
func (b *bundle) claimOne(t *testing.T, w string) queue.Job {
	t.Helper()
	jobs, err := queue.NewRunner(b.pool, w).Claim(context.Background(), queue.DefaultQueue, []string{testutil.AnyName}, 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, jobs, 1)
	return jobs[0]
}

// finish records one outcome for a claimed job: ok, or a final failure.
func (b *bundle) finish(t *testing.T, w string, j queue.Job, ok bool) {
	t.Helper()
	o := queue.Outcome{Claim: queue.Claim{Seq: j.Seq, Token: j.LeaseToken}, Attempt: j.AttemptsMade, OK: ok, RetryIn: -1}
	if ok {
		o.Result = []byte(`{"sent":true}`)
	} else {
		o.Message = "smtp refused"
	}
	_, err := queue.NewRunner(b.pool, w).Finish(context.Background(), queue.RetentionDefaults{RemoveOnComplete: -1, RemoveOnFail: -1}, []queue.Outcome{o})
	require.NoError(t, err)
}

func ids(jobs []queue.Job) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = j.ID
	}
	return out
}

func TestListPagesNewestFirstAndIsStableUnderInserts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	all := b.enqueueN(t, 5)

	p1, err := b.client.List(ctx, queue.ListFilter{Limit: 2})
	require.NoError(t, err)
	require.Equal(t, []string{all[4], all[3]}, ids(p1.Jobs))
	require.NotEmpty(t, p1.NextCursor)

	// A job inserted between pages is newer than the cursor: later pages do not move.
	b.enqueueN(t, 1)
	p2, err := b.client.List(ctx, queue.ListFilter{Limit: 2, Cursor: p1.NextCursor})
	require.NoError(t, err)
	require.Equal(t, []string{all[2], all[1]}, ids(p2.Jobs))
	p3, err := b.client.List(ctx, queue.ListFilter{Limit: 2, Cursor: p2.NextCursor})
	require.NoError(t, err)
	require.Equal(t, []string{all[0]}, ids(p3.Jobs))
	require.Empty(t, p3.NextCursor)

	def, err := b.client.List(ctx, queue.ListFilter{})
	require.NoError(t, err)
	require.Len(t, def.Jobs, 6)
	require.Empty(t, def.NextCursor)

	// Exactly limit jobs left: no cursor to an empty page.
	exact, err := b.client.List(ctx, queue.ListFilter{Limit: 6})
	require.NoError(t, err)
	require.Len(t, exact.Jobs, 6)
	require.Empty(t, exact.NextCursor)

	for _, bad := range []string{"garbage!", "djE6", "eDox", "djE6LTE"} { // "v1:", "x:1", "v1:-1"
		_, err = b.client.List(ctx, queue.ListFilter{Cursor: bad})
		require.ErrorIs(t, err, queue.ErrBadCursor, bad)
	}
	_, err = b.client.List(ctx, queue.ListFilter{Limit: queue.MaxListLimit + 1})
	require.Error(t, err)
}

func TestListFiltersByStateTypeAndQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.enqueueN(t, 3)
	other, err := b.client.Enqueue(ctx, b.pool, queue.NewJob{Type: testutil.KindName, Data: json.RawMessage(`{}`),
		Options: queue.Options{Queue: ptr("other")}})
	require.NoError(t, err)
	require.Equal(t, "other", other.Job.Queue)
	claimed := b.claimOne(t, "w1")

	active, err := b.client.List(ctx, queue.ListFilter{State: queue.StateActive})
	require.NoError(t, err)
	require.Equal(t, []string{claimed.ID}, ids(active.Jobs))

	waiting, err := b.client.List(ctx, queue.ListFilter{State: queue.StateWaiting, Type: testutil.AnyName})
	require.NoError(t, err)
	require.Len(t, waiting.Jobs, 2)
	for _, j := range waiting.Jobs {
		require.Equal(t, testutil.AnyName, j.Type)
		require.Equal(t, queue.StateWaiting, j.State)
	}

	byType, err := b.client.List(ctx, queue.ListFilter{Type: testutil.KindName})
	require.NoError(t, err)
	require.Equal(t, []string{other.Job.ID}, ids(byType.Jobs))

	byQueue, err := b.client.List(ctx, queue.ListFilter{Queue: "other"})
	require.NoError(t, err)
	require.Equal(t, []string{other.Job.ID}, ids(byQueue.Jobs))
	inDefault, err := b.client.List(ctx, queue.ListFilter{Queue: queue.DefaultQueue})
	require.NoError(t, err)
	require.Len(t, inDefault.Jobs, 3)
}

func TestRetryFailedJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	id := b.enqueueN(t, 1)[0]

	_, err := b.client.Retry(ctx, id)
	require.ErrorIs(t, err, queue.ErrConflict, "a waiting job cannot be retried")

	j := b.claimOne(t, "w1")
	_, err = b.client.Retry(ctx, id)
	require.ErrorIs(t, err, queue.ErrConflict, "an active job cannot be retried")
	b.finish(t, "w1", j, false)

	got, err := b.client.Retry(ctx, id)
	require.NoError(t, err)
	require.Equal(t, queue.StateWaiting, got.State)
	require.Zero(t, got.AttemptsMade)
	require.Nil(t, got.Error)
	require.Nil(t, got.Result)
	require.Nil(t, got.FinishedAt)
	require.Zero(t, got.Progress)
	require.Len(t, got.Errors, 1, "errors of earlier attempts are kept")
	require.Equal(t, "smtp refused", got.Errors[0].Message)
	require.WithinDuration(t, time.Now(), got.RunAt.Time, time.Minute)
	require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.job_events WHERE job_id = $1 AND message = 'retried by request' AND state = 'waiting'", id))

	// It runs again.
	again := b.claimOne(t, "w2")
	require.Equal(t, id, again.ID)
	require.Equal(t, 1, again.AttemptsMade)

	_, err = b.client.Retry(ctx, "nope")
	require.ErrorIs(t, err, queue.ErrNotFound)
}

func TestRetryCancelledJobOnlyAfterItsHandlerStopped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	id := b.enqueueN(t, 1)[0]
	j := b.claimOne(t, "w1")
	_, err := b.client.Cancel(ctx, id)
	require.NoError(t, err)

	_, err = b.client.Retry(ctx, id)
	require.ErrorIs(t, err, queue.ErrConflict, "its handler still holds the lease")

	b.finish(t, "w1", j, true) // the handler returned: the lease is released
	got, err := b.client.Retry(ctx, id)
	require.NoError(t, err)
	require.Equal(t, queue.StateWaiting, got.State)

	// A cancelled waiting job (never ran) can be retried at once.
	other := b.enqueueN(t, 1)[0]
	_, err = b.client.Cancel(ctx, other)
	require.NoError(t, err)
	_, err = b.client.Retry(ctx, other)
	require.NoError(t, err)
}

func TestRemove(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	jobIDs := b.enqueueN(t, 2)

	j := b.claimOne(t, "w1") // the older job
	require.ErrorIs(t, b.client.Remove(ctx, j.ID), queue.ErrConflict)
	_, err := b.client.Cancel(ctx, j.ID)
	require.NoError(t, err)
	require.ErrorIs(t, b.client.Remove(ctx, j.ID), queue.ErrConflict, "cancelled, handler still running")
	b.finish(t, "w1", j, false)
	require.NoError(t, b.client.Remove(ctx, j.ID))

	require.NoError(t, b.client.Remove(ctx, jobIDs[1]))
	_, err = b.client.Get(ctx, jobIDs[1])
	require.ErrorIs(t, err, queue.ErrNotFound)
	require.ErrorIs(t, b.client.Remove(ctx, jobIDs[1]), queue.ErrNotFound)
	require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.job_events WHERE job_id = $1", jobIDs[1]), "audit rows outlive the job")

	// The id can be reused once the job is removed.
	custom := emailJob()
	custom.Options.JobID = ptr("order-1")
	_, err = b.client.Enqueue(ctx, b.pool, custom)
	require.NoError(t, err)
	require.NoError(t, b.client.Remove(ctx, "order-1"))
	res, err := b.client.Enqueue(ctx, b.pool, custom)
	require.NoError(t, err)
	require.True(t, res.Created)
}

func TestCleanByAgeInBatches(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	// 2500 completed jobs (more than two batches), finished two hours ago.
	for range 3 {
		jobs := make([]queue.NewJob, 1000)
		for i := range jobs {
			jobs[i] = emailJob()
		}
		_, err := b.client.EnqueueMany(ctx, b.pool, jobs)
		require.NoError(t, err)
	}
	_, err := b.pool.Exec(ctx, `UPDATE queue.jobs SET state = 'completed', finished_at = now() - interval '2 hours'
		WHERE seq IN (SELECT seq FROM queue.jobs ORDER BY seq LIMIT 2500)`)
	require.NoError(t, err)

	var batches [][]string
	removed := func(_ context.Context, ids []string) { batches = append(batches, ids) }

	n, err := b.client.Clean(ctx, queue.CleanCompleted, 3*time.Hour, queue.CleanOptions{Removed: removed})
	require.NoError(t, err)
	require.Zero(t, n, "nothing finished more than 3 hours ago")

	n, err = b.client.Clean(ctx, queue.CleanFailed, time.Hour, queue.CleanOptions{Removed: removed})
	require.NoError(t, err)
	require.Zero(t, n, "clean/failed leaves completed jobs alone")

	n, err = b.client.Clean(ctx, queue.CleanCompleted, time.Hour, queue.CleanOptions{Removed: removed})
	require.NoError(t, err)
	require.EqualValues(t, 2500, n)
	require.Len(t, batches, 3)
	require.Len(t, batches[0], 1000)
	require.Equal(t, 500, b.count(t, "SELECT count(*) FROM queue.jobs"))
	require.Equal(t, 500, b.count(t, "SELECT count(*) FROM queue.jobs WHERE state = 'waiting'"))
}

func TestCleanFailedIncludesCancelledButNotRunningHandlers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	all := b.enqueueN(t, 4)

	failed := b.claimOne(t, "w1")
	b.finish(t, "w1", failed, false)
	running := b.claimOne(t, "w1")
	_, err := b.client.Cancel(ctx, running.ID) // its handler still runs
	require.NoError(t, err)
	_, err = b.client.Cancel(ctx, all[2]) // never ran
	require.NoError(t, err)

	later := time.Now().Add(time.Hour)
	n, err := b.client.Clean(ctx, queue.CleanFailed, time.Minute, queue.CleanOptions{Now: &later})
	require.NoError(t, err)
	require.EqualValues(t, 2, n)

	left, err := b.client.List(ctx, queue.ListFilter{})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{running.ID, all[3]}, ids(left.Jobs))

	_, err = b.client.Clean(ctx, queue.CleanTarget("bogus"), 0, queue.CleanOptions{})
	require.Error(t, err)
}

func TestLastEventOutlivesTheJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	id := b.enqueueN(t, 1)[0]
	j := b.claimOne(t, "w1")
	_, err := queue.NewRunner(b.pool, "w1").Finish(ctx, queue.RetentionDefaults{RemoveOnComplete: 0, RemoveOnFail: 0},
		[]queue.Outcome{{Claim: claimOf(j), Attempt: 1, OK: true, Remove: true, Result: []byte(`1`)}})
	require.NoError(t, err)
	_, err = b.client.Get(ctx, id)
	require.True(t, errors.Is(err, queue.ErrNotFound), "removed at once")

	ev, err := b.client.LastEvent(ctx, id)
	require.NoError(t, err)
	require.Equal(t, queue.StateCompleted, ev.State)
	require.Equal(t, 1, ev.Attempt)

	_, err = b.client.LastEvent(ctx, fmt.Sprintf("missing-%d", time.Now().UnixNano()))
	require.ErrorIs(t, err, queue.ErrNotFound)
}
