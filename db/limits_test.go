package db_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/db"
	"github.com/pgqueue/queue/internal/testutil"
)

// A group travels with the caller's transaction and reads back through Get and List.
func TestGroupInTheCallersTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, env := newClient(t, db.Config{Kinds: testutil.Kinds(nil)})

	tx, err := env.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	res, err := c.Enqueue(ctx, tx, testutil.Data{N: 1}, db.Options{Queue: "emails", Group: "tenant-7"})
	require.NoError(t, err)
	require.Equal(t, "tenant-7", res.Job.Group)
	var inside string
	require.NoError(t, tx.QueryRow(ctx, "SELECT group_key FROM queue.jobs WHERE id = $1", res.Job.ID).Scan(&inside))
	require.Equal(t, "tenant-7", inside)
	require.Zero(t, env.Count(t, "SELECT count(*) FROM queue.jobs"), "not visible before the commit")
	require.NoError(t, tx.Commit(ctx))

	got, err := c.Get(ctx, res.Job.ID)
	require.NoError(t, err)
	require.Equal(t, "tenant-7", got.Group)

	many, err := c.EnqueueMany(ctx, env.Pool, []db.Insert{
		{Args: testutil.Data{N: 2}, Options: db.Options{Queue: "emails", Group: "tenant-8"}},
		{Args: testutil.Data{N: 3}, Options: db.Options{Queue: "emails"}},
		{Args: testutil.Data{N: 4}, Options: db.Options{Queue: "emails", Group: "tenant-7"}},
	})
	require.NoError(t, err)
	require.Empty(t, many[1].Job.Group, "no group reads as empty")

	page, err := c.List(ctx, db.ListFilter{Group: "tenant-7"})
	require.NoError(t, err)
	var ids []string
	for _, j := range page.Jobs {
		ids = append(ids, j.ID)
		require.Equal(t, "tenant-7", j.Group)
	}
	require.Equal(t, []string{many[2].Job.ID, res.Job.ID}, ids, "newest first, that group only")
	page, err = c.List(ctx, db.ListFilter{Queue: "emails", Group: "tenant-8"})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 1)
	require.Equal(t, many[0].Job.ID, page.Jobs[0].ID)
}

func TestBadGroupIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, env := newClient(t, db.Config{Kinds: testutil.Kinds(nil)})
	for _, g := range []string{strings.Repeat("g", 129), "line\nbreak", "nul\x00", "\xff"} {
		_, err := c.Enqueue(ctx, env.Pool, testutil.Data{N: 1}, db.Options{Group: g})
		var v *db.ValidationError
		require.ErrorAs(t, err, &v, "%q", g)
		require.Len(t, v.Problems, 1)
		require.Equal(t, "options.group", v.Problems[0].Field)
	}
	_, err := c.EnqueueMany(ctx, env.Pool, []db.Insert{
		{Args: testutil.Data{N: 1}, Options: db.Options{Group: "ok"}},
		{Args: testutil.Data{N: 2}, Options: db.Options{Group: "\t"}},
	})
	var v *db.ValidationError
	require.ErrorAs(t, err, &v)
	require.Equal(t, "jobs[1].options.group", v.Problems[0].Field)
	require.Zero(t, env.Count(t, "SELECT count(*) FROM queue.jobs"))

	res, err := c.Enqueue(ctx, env.Pool, testutil.Data{N: 3}, db.Options{Group: strings.Repeat("é", 128)})
	require.NoError(t, err, "128 characters is the limit, whatever their bytes")
	require.Equal(t, strings.Repeat("é", 128), res.Job.Group)
}

// Limits are set, kept and cleared field by field, and read back alike from the client
// and the table.
func TestSetKeepAndClearLimits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, env := newClient(t, db.Config{})
	settings := func() []any {
		return env.Row(t, `SELECT concurrency, rate_limit, rate_period_ms, group_concurrency,
			group_rate_limit, group_rate_period_ms, fair FROM queue.queues WHERE name = 'smtp'`)
	}

	_, err := c.Queue(ctx, "smtp")
	require.ErrorIs(t, err, db.ErrNotFound)

	q, err := c.SetQueueLimits(ctx, "smtp", db.Limits{
		Concurrency: db.Concurrency(2), Rate: db.Rate(10, time.Second),
		GroupConcurrency: db.Concurrency(1), GroupRate: db.Rate(3, time.Minute), Fair: db.On(),
	})
	require.NoError(t, err)
	require.Equal(t, "smtp", q.Name)
	require.Equal(t, 2, *q.Concurrency)
	require.Equal(t, 10, q.Rate.Limit)
	require.EqualValues(t, 1000, q.Rate.Period)
	require.Equal(t, 1, *q.GroupConcurrency)
	require.Equal(t, 3, q.GroupRate.Limit)
	require.EqualValues(t, 60000, q.GroupRate.Period)
	require.True(t, q.Fair)
	require.Nil(t, q.HeldBy)
	require.Equal(t, []any{int32(2), int32(10), int32(1000), int32(1), int32(3), int32(60000), true}, settings())

	read, err := c.Queue(ctx, "smtp")
	require.NoError(t, err)
	require.Equal(t, q, read)

	// The zero value keeps everything.
	q, err = c.SetQueueLimits(ctx, "smtp", db.Limits{})
	require.NoError(t, err)
	require.Equal(t, read, q)
	require.Equal(t, []any{int32(2), int32(10), int32(1000), int32(1), int32(3), int32(60000), true}, settings())

	// One field changes, the others keep.
	q, err = c.SetQueueLimits(ctx, "smtp", db.Limits{Rate: db.Rate(50, 250*time.Millisecond), Fair: db.Off()})
	require.NoError(t, err)
	require.Equal(t, 2, *q.Concurrency)
	require.Equal(t, 50, q.Rate.Limit)
	require.False(t, q.Fair)
	require.Equal(t, []any{int32(2), int32(50), int32(250), int32(1), int32(3), int32(60000), false}, settings())

	// Clearing is explicit, one limit at a time.
	q, err = c.SetQueueLimits(ctx, "smtp", db.Limits{Concurrency: db.NoConcurrencyLimit(), GroupRate: db.NoRateLimit()})
	require.NoError(t, err)
	require.Nil(t, q.Concurrency)
	require.Nil(t, q.GroupRate)
	require.Equal(t, 50, q.Rate.Limit)
	require.Equal(t, 1, *q.GroupConcurrency)
	require.Equal(t, []any{nil, int32(50), int32(250), int32(1), nil, nil, false}, settings())

	q, err = c.SetQueueLimits(ctx, "smtp", db.Limits{Rate: db.NoRateLimit(), GroupConcurrency: db.NoConcurrencyLimit()})
	require.NoError(t, err)
	require.Nil(t, q.Rate)
	require.Nil(t, q.GroupConcurrency)
	require.Equal(t, []any{nil, nil, nil, nil, nil, nil, false}, settings())

	// The extremes of each range are accepted.
	q, err = c.SetQueueLimits(ctx, "smtp", db.Limits{
		Concurrency: db.Concurrency(100000), Rate: db.Rate(1, time.Millisecond),
		GroupConcurrency: db.Concurrency(1), GroupRate: db.Rate(100000, 24*time.Hour),
	})
	require.NoError(t, err)
	require.EqualValues(t, 86400000, q.GroupRate.Period)

	queues, err := c.Queues(ctx)
	require.NoError(t, err)
	require.Len(t, queues, 1)
	require.Equal(t, q, queues[0], "the list shows the same settings")
}

// Every invalid field is named at once, and nothing is written.
func TestLimitsValidationNamesEachField(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, env := newClient(t, db.Config{})
	fieldsOf := func(err error) []string {
		t.Helper()
		var v *db.ValidationError
		require.ErrorAs(t, err, &v)
		var fields []string
		for _, p := range v.Problems {
			require.NotEmpty(t, p.Message)
			fields = append(fields, p.Field)
		}
		return fields
	}

	_, err := c.SetQueueLimits(ctx, "No Caps", db.Limits{
		Concurrency: db.Concurrency(0), Rate: db.Rate(0, 1500*time.Microsecond),
		GroupConcurrency: db.Concurrency(100001), GroupRate: db.Rate(100001, 25*time.Hour),
	})
	require.ElementsMatch(t, []string{"name", "concurrency", "rate.limit", "rate.period",
		"groupConcurrency", "groupRate.limit", "groupRate.period"}, fieldsOf(err))

	for _, per := range []time.Duration{0, -time.Second, time.Nanosecond, 24*time.Hour + time.Millisecond, 1<<63 - 1} {
		_, err = c.SetQueueLimits(ctx, "smtp", db.Limits{GroupRate: db.Rate(5, per)})
		fields := fieldsOf(err)
		require.NotEmpty(t, fields, "%v", per)
		for _, f := range fields {
			require.Equal(t, "groupRate.period", f, "%v", per)
		}
	}
	_, err = c.SetQueueLimits(ctx, "smtp", db.Limits{Rate: db.Rate(5, 1500*time.Microsecond)})
	require.Equal(t, []string{"rate.period"}, fieldsOf(err), "never rounded to 1 or 2 ms")
	require.ErrorContains(t, err, "whole number of milliseconds")

	require.Zero(t, env.Count(t, "SELECT count(*) FROM queue.queues WHERE name = 'smtp'"), "nothing written")
}
