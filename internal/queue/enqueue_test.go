package queue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/testutil"
)

type bundle struct {
	pool   *pgxpool.Pool
	client *queue.Client
	url    string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	u := testutil.NewMigratedDatabase(t)
	pool := testutil.Pool(t, u)
	c, err := queue.NewClient(pool, queue.ClientConfig{Kinds: testutil.Kinds(testutil.Noop)})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return &bundle{pool: pool, client: c, url: u}
}

// listen opens a connection listening on the jobs channel.
func (b *bundle) listen(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, b.url)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	_, err = conn.Exec(ctx, "LISTEN "+queue.NotifyChannel)
	require.NoError(t, err)
	return conn
}

// nextNotification returns the payload of the next notification on conn.
func nextNotification(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := conn.WaitForNotification(ctx)
	require.NoError(t, err, "no notification arrived")
	return n.Payload
}

// requireNoNotification proves that nothing was notified before now: a sentinel sent
// afterwards must be the first notification to arrive.
func (b *bundle) requireNoNotification(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	_, err := b.pool.Exec(context.Background(), "SELECT pg_notify($1, 'sentinel')", queue.NotifyChannel)
	require.NoError(t, err)
	require.Equal(t, "sentinel", nextNotification(t, conn))
}

func (b *bundle) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

func ptr[T any](v T) *T { return &v }

func emailJob() queue.NewJob {
	return queue.NewJob{Type: testutil.AnyName, Data: json.RawMessage(`{"to":"a@example.com","subject":"Hi","template":"test"}`)}
}

func TestEnqueueInCallerTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("rollback leaves no job, no audit row, no notification", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		conn := b.listen(t)
		tx, err := b.pool.Begin(ctx)
		require.NoError(t, err)
		res, err := b.client.Enqueue(ctx, tx, emailJob())
		require.NoError(t, err)
		require.True(t, res.Created)
		require.NoError(t, tx.Rollback(ctx))

		require.Zero(t, b.count(t, "SELECT count(*) FROM queue.jobs"))
		require.Zero(t, b.count(t, "SELECT count(*) FROM queue.job_events"))
		b.requireNoNotification(t, conn)
	})

	t.Run("commit gives job, waiting audit row and a notification", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		conn := b.listen(t)
		tx, err := b.pool.Begin(ctx)
		require.NoError(t, err)
		res, err := b.client.Enqueue(ctx, tx, emailJob())
		require.NoError(t, err)
		// Not visible to others before commit.
		require.Zero(t, b.count(t, "SELECT count(*) FROM queue.jobs"))
		require.NoError(t, tx.Commit(ctx))

		require.Equal(t, queue.DefaultQueue, nextNotification(t, conn), "the payload names the queue")
		job := res.Job
		require.Equal(t, queue.StateWaiting, job.State)
		require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = $1", job.ID))
		require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.job_events WHERE job_id = $1 AND state = 'waiting' AND type = 'TEST_ANY'", job.ID))
	})

	t.Run("delayed job is audited as delayed and wakes nobody", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		conn := b.listen(t)
		tx, err := b.pool.Begin(ctx)
		require.NoError(t, err)
		j := emailJob()
		j.Options.Delay = ptr(int64(60_000))
		res, err := b.client.Enqueue(ctx, tx, j)
		require.NoError(t, err)
		require.NoError(t, tx.Commit(ctx))
		require.Equal(t, queue.StateDelayed, res.Job.State)
		require.InDelta(t, 60, res.Job.RunAt.Sub(res.Job.CreatedAt.Time).Seconds(), 0.01)
		require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.job_events WHERE job_id = $1 AND state = 'delayed'", res.Job.ID))
		b.requireNoNotification(t, conn)
	})

	t.Run("outside a transaction the client notifies after commit", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		conn := b.listen(t)
		_, err := b.client.Enqueue(ctx, b.pool, emailJob())
		require.NoError(t, err)
		require.Equal(t, queue.DefaultQueue, nextNotification(t, conn))
	})
}

func TestSQLEnqueueInCallerTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("rollback", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		conn := b.listen(t)
		tx, err := b.pool.Begin(ctx)
		require.NoError(t, err)
		var id string
		require.NoError(t, tx.QueryRow(ctx, `SELECT queue.enqueue('TEST_ANY', '{"targetType":"temp_files","olderThan":0}')`).Scan(&id))
		require.NotEmpty(t, id)
		require.NoError(t, tx.Rollback(ctx))
		require.Zero(t, b.count(t, "SELECT count(*) FROM queue.jobs"))
		require.Zero(t, b.count(t, "SELECT count(*) FROM queue.job_events"))
		b.requireNoNotification(t, conn)
	})

	t.Run("commit", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		conn := b.listen(t)
		tx, err := b.pool.Begin(ctx)
		require.NoError(t, err)
		var ids [3]string
		for i := range ids {
			require.NoError(t, tx.QueryRow(ctx, `SELECT queue.enqueue('TEST_ANY', '{}')`).Scan(&ids[i]))
		}
		require.NoError(t, tx.Commit(ctx))
		// Three enqueues in one transaction: one notification.
		require.Equal(t, queue.DefaultQueue, nextNotification(t, conn))
		b.requireNoNotification(t, conn)
		for _, id := range ids {
			require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = $1 AND state = 'waiting'", id))
			require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.job_events WHERE job_id = $1 AND state = 'waiting'", id))
		}
	})
}

func TestSQLEnqueueValidatesAndFillsDefaults(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)

	bad := map[string]string{
		"type of a bad shape":  `SELECT queue.enqueue('no spaces please', '{}')`,
		"type too long":        `SELECT queue.enqueue('T' || repeat('x', 128), '{}')`,
		"queue of a bad shape": `SELECT queue.enqueue('TEST_ANY', '{}', 5, '0', 3, NULL, '{"queue": "Emails"}')`,
		"queue not a string":   `SELECT queue.enqueue('TEST_ANY', '{}', 5, '0', 3, NULL, '{"queue": 7}')`,
		"null type":            `SELECT queue.enqueue(NULL, '{}')`,
		"data not an object":   `SELECT queue.enqueue('TEST_ANY', '[]')`,
		"priority 0":           `SELECT queue.enqueue('TEST_ANY', '{}', 0)`,
		"priority 21":          `SELECT queue.enqueue('TEST_ANY', '{}', 21)`,
		"negative delay":       `SELECT queue.enqueue('TEST_ANY', '{}', 5, '-1 second')`,
		"delay over 365 days":  `SELECT queue.enqueue('TEST_ANY', '{}', 5, '366 days')`,
		"attempts 0":           `SELECT queue.enqueue('TEST_ANY', '{}', 5, '0', 0)`,
		"attempts 101":         `SELECT queue.enqueue('TEST_ANY', '{}', 5, '0', 101)`,
		"job id all digits":    `SELECT queue.enqueue('TEST_ANY', '{}', 5, '0', 3, '123')`,
		"job id bad char":      `SELECT queue.enqueue('TEST_ANY', '{}', 5, '0', 3, 'a/b')`,
		"job id leading dash":  `SELECT queue.enqueue('TEST_ANY', '{}', 5, '0', 3, '-ab')`,
		"job id empty":         `SELECT queue.enqueue('TEST_ANY', '{}', 5, '0', 3, '')`,
		"job id too long":      `SELECT queue.enqueue('TEST_ANY', '{}', 5, '0', 3, 'a' || repeat('b', 255))`,
		"unknown option":       `SELECT queue.enqueue('TEST_ANY', '{}', 5, '0', 3, NULL, '{"colour": 1}')`,
		"bad backoff type":     `SELECT queue.enqueue('TEST_ANY', '{}', 5, '0', 3, NULL, '{"backoff": {"type": "linear"}}')`,
		"backoff delay range":  `SELECT queue.enqueue('TEST_ANY', '{}', 5, '0', 3, NULL, '{"backoff": {"delay": 86400001}}')`,
		"timeout 0":            `SELECT queue.enqueue('TEST_ANY', '{}', 5, '0', 3, NULL, '{"timeout": 0}')`,
		"timeout fraction":     `SELECT queue.enqueue('TEST_ANY', '{}', 5, '0', 3, NULL, '{"timeout": 1.5}')`,
		"retention -2":         `SELECT queue.enqueue('TEST_ANY', '{}', 5, '0', 3, NULL, '{"removeOnFail": -2}')`,
		"retention string":     `SELECT queue.enqueue('TEST_ANY', '{}', 5, '0', 3, NULL, '{"removeOnComplete": "yes"}')`,
	}
	for name, stmt := range bad {
		_, err := b.pool.Exec(ctx, stmt)
		require.Error(t, err, name)
		var pg *pgconn.PgError
		require.ErrorAs(t, err, &pg, name)
		require.Equal(t, "22023", pg.Code, "%s: %s", name, pg.Message)
		require.Contains(t, pg.Message, "queue.enqueue:", name)
	}
	require.Zero(t, b.count(t, "SELECT count(*) FROM queue.jobs"), "no half-written job")

	var id string
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT queue.enqueue('TEST_ANY', '{"targetType":"old_logs"}')`).Scan(&id))
	job, err := b.client.Get(ctx, id)
	require.NoError(t, err)
	require.Equal(t, 5, job.Priority)
	require.Equal(t, 3, job.MaxAttempts)
	require.Equal(t, 0, job.AttemptsMade)
	require.Equal(t, queue.Backoff{Type: "exponential", Delay: 1000}, job.Backoff)
	require.Equal(t, time.Duration(0), job.Timeout)
	require.Nil(t, job.RemoveOnComplete, "a SQL enqueue without options takes the finishing worker's default")
	require.Nil(t, job.RemoveOnFail)
	require.Equal(t, queue.StateWaiting, job.State)
	require.JSONEq(t, `{"targetType":"old_logs"}`, string(job.Data))
	require.Empty(t, job.Errors)
	require.Equal(t, job.CreatedAt, job.RunAt)

	require.NoError(t, b.pool.QueryRow(ctx, `SELECT queue.enqueue('TEST_ANY', '{}', 20, '5 seconds', 7, 'custom-1',
		'{"backoff": {"type": "fixed", "delay": 250}, "timeout": 9000, "removeOnComplete": true, "removeOnFail": 4}')`).Scan(&id))
	require.Equal(t, "custom-1", id)
	job, err = b.client.Get(ctx, id)
	require.NoError(t, err)
	require.Equal(t, 20, job.Priority)
	require.Equal(t, 7, job.MaxAttempts)
	require.Equal(t, queue.StateDelayed, job.State)
	require.Equal(t, queue.Backoff{Type: "fixed", Delay: 250}, job.Backoff)
	require.Equal(t, 9*time.Second, job.Timeout)
	require.Equal(t, ptr(0), job.RemoveOnComplete)
	require.Equal(t, ptr(4), job.RemoveOnFail)

	// An existing id returns that id and inserts nothing.
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT queue.enqueue('TEST_ANY', '{"other": true}', 1, '0', 1, 'custom-1')`).Scan(&id))
	require.Equal(t, "custom-1", id)
	require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = 'custom-1' AND type = 'TEST_ANY'"))
	require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.job_events WHERE job_id = 'custom-1'"))
}

func TestGoEnqueueValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)

	_, err := b.client.Enqueue(ctx, b.pool, queue.NewJob{
		Type: "NOPE",
		Data: json.RawMessage(`[1]`),
		Options: queue.Options{
			Priority: ptr(0), Delay: ptr(int64(-1)), Attempts: ptr(101),
			Backoff: &queue.BackoffOption{Type: "linear", Delay: ptr(int64(-5))},
			JobID:   ptr("42"), RemoveOnComplete: ptr(queue.Retention(-2)), Timeout: ptr(int64(0)),
		},
	})
	var v *queue.ValidationError
	require.ErrorAs(t, err, &v)
	fields := map[string]bool{}
	for _, p := range v.Problems {
		fields[p.Field] = true
	}
	require.Equal(t, map[string]bool{
		"type": true, "data": true, "options.priority": true, "options.delay": true, "options.attempts": true,
		"options.backoff.type": true, "options.backoff.delay": true, "options.jobId": true,
		"options.removeOnComplete": true, "options.timeout": true,
	}, fields)
	require.Zero(t, b.count(t, "SELECT count(*) FROM queue.jobs"))
}

func TestEnqueueManyKeepsOrderAndIsAllOrNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)

	existing, err := b.client.Enqueue(ctx, b.pool, queue.NewJob{Type: testutil.AnyName, Data: json.RawMessage(`{"n":0}`), Options: queue.Options{JobID: ptr("dup")}})
	require.NoError(t, err)
	require.True(t, existing.Created)

	var jobs []queue.NewJob
	for i := range 10 {
		j := queue.NewJob{Type: testutil.AnyName, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i+1))}
		switch i {
		case 3:
			j.Options.JobID = ptr("dup") // exists: answered with the existing job
		case 6:
			j.Options.JobID = ptr("fresh-6")
		}
		jobs = append(jobs, j)
	}
	out, err := b.client.EnqueueMany(ctx, b.pool, jobs)
	require.NoError(t, err)
	require.Len(t, out, 10)
	for i, r := range out {
		if i == 3 {
			require.False(t, r.Created)
			require.Equal(t, existing.Job.ID, r.Job.ID)
			require.JSONEq(t, `{"n":0}`, string(r.Job.Data), "the existing job, whatever the new data")
			continue
		}
		require.True(t, r.Created, i)
		require.JSONEq(t, fmt.Sprintf(`{"n":%d}`, i+1), string(r.Job.Data), "result %d is input %d", i, i)
	}
	require.Equal(t, "fresh-6", out[6].Job.ID)
	require.Equal(t, 10, b.count(t, "SELECT count(*) FROM queue.jobs"))

	// One bad job refuses the whole batch, naming its index.
	jobs = []queue.NewJob{emailJob(), emailJob(), {Type: testutil.AnyName, Data: json.RawMessage(`{}`), Options: queue.Options{Priority: ptr(30)}}}
	_, err = b.client.EnqueueMany(ctx, b.pool, jobs)
	var v *queue.ValidationError
	require.ErrorAs(t, err, &v)
	require.Equal(t, "jobs[2].options.priority", v.Problems[0].Field)
	require.Equal(t, 10, b.count(t, "SELECT count(*) FROM queue.jobs"))

	// One jobId twice in a request is refused.
	jobs = []queue.NewJob{emailJob(), emailJob()}
	jobs[0].Options.JobID = ptr("twice")
	jobs[1].Options.JobID = ptr("twice")
	_, err = b.client.EnqueueMany(ctx, b.pool, jobs)
	require.ErrorAs(t, err, &v)
	require.Equal(t, "jobs[1].options.jobId", v.Problems[0].Field)
}

func TestConcurrentEnqueueOfOneJobID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)

	const clients = 50
	var wg sync.WaitGroup
	created := make(chan bool, 2*clients)
	errs := make(chan error, 2*clients)
	start := make(chan struct{})
	for i := range clients {
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			j := queue.NewJob{Type: testutil.AnyName, Data: json.RawMessage(fmt.Sprintf(`{"client":%d}`, i)), Options: queue.Options{JobID: ptr("same-id")}}
			r, err := b.client.Enqueue(ctx, b.pool, j)
			errs <- err
			created <- r.Created
		}()
		go func() {
			defer wg.Done()
			<-start
			var id string
			errs <- b.pool.QueryRow(ctx, `SELECT queue.enqueue('TEST_ANY', '{}', 5, '0', 3, 'same-id')`).Scan(&id)
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	close(created)
	for err := range errs {
		require.NoError(t, err)
	}
	n := 0
	for c := range created {
		if c {
			n++
		}
	}
	require.LessOrEqual(t, n, 1, "at most one Go call created the job")
	require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.jobs WHERE id = 'same-id'"))
	require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.jobs"))
	require.Equal(t, 1, b.count(t, "SELECT count(*) FROM queue.job_events WHERE job_id = 'same-id'"))
}

// A single job goes through JobInsertOne, a batch through JobInsertMany: both must store
// the same row for the same options, defaults included.
func TestSingleAndBatchInsertStoreTheSameJob(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	full := queue.Options{
		Priority: ptr(17), Delay: ptr(int64(60_000)), Attempts: ptr(7),
		Backoff:          &queue.BackoffOption{Type: "fixed", Delay: ptr(int64(250))},
		RemoveOnComplete: ptr(queue.Retention(4)), RemoveOnFail: ptr(queue.Retention(queue.RetainForever)),
		Timeout: ptr(int64(1500)),
	}
	cases := map[string]queue.Options{"defaults": {}, "every option": full}
	for name, opts := range cases {
		t.Run(name, func(t *testing.T) {
			mk := func(id string) queue.NewJob {
				o := opts
				o.JobID = ptr(id)
				return queue.NewJob{Type: testutil.AnyName, Data: json.RawMessage(`{"k":[1,2]}`), Options: o}
			}
			one, err := b.client.Enqueue(ctx, b.pool, mk("one-"+name[:3]))
			require.NoError(t, err)
			many, err := b.client.EnqueueMany(ctx, b.pool, []queue.NewJob{mk("many-" + name[:3]), mk("other-" + name[:3])})
			require.NoError(t, err)
			x, y := one.Job, many[0].Job
			require.True(t, one.Created)
			require.True(t, many[0].Created)
			require.WithinDuration(t, x.RunAt.Time, y.RunAt.Time, 5*time.Second)
			require.WithinDuration(t, x.CreatedAt.Time, y.CreatedAt.Time, 5*time.Second)
			x.ID, x.Seq, x.RunAt, x.CreatedAt = "", 0, y.RunAt, y.CreatedAt
			y.ID, y.Seq = "", 0
			require.Equal(t, y, x)

			// Again with the same ids: nothing is created, the stored jobs come back.
			again, err := b.client.Enqueue(ctx, b.pool, mk("one-"+name[:3]))
			require.NoError(t, err)
			require.False(t, again.Created)
			require.Equal(t, one.Job.Seq, again.Job.Seq)
		})
	}
}

// EnqueueMany builds most of each returned job from what it sent: every field must be
// what the table holds, for defaults, every option, delays and existing ids alike.
func TestBatchInsertReturnsTheStoredJobs(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	r := func(n int) *queue.Retention { v := queue.Retention(n); return &v }
	_, err := b.client.Enqueue(ctx, b.pool, queue.NewJob{Type: testutil.AnyName, Data: json.RawMessage(`{}`),
		Options: queue.Options{JobID: ptr("exists")}})
	require.NoError(t, err)
	batch := []queue.NewJob{
		{Type: testutil.AnyName, Data: json.RawMessage(`{"b": 2,  "a": [1, {"z": null}]}`)},
		{Type: testutil.AnyName, Data: json.RawMessage(`{"to":"a@b.c","subject":"s","body":"x"}`), Options: queue.Options{
			Priority: ptr(20), Delay: ptr(int64(5000)), Attempts: ptr(9), JobID: ptr("custom-1"),
			Backoff: &queue.BackoffOption{Type: "fixed", Delay: ptr(int64(10))}, Timeout: ptr(int64(99)),
			RemoveOnComplete: r(0), RemoveOnFail: r(queue.RetainForever)}},
		{Type: testutil.AnyName, Data: json.RawMessage(`{}`), Options: queue.Options{JobID: ptr("exists")}},
		{Type: testutil.AnyName, Data: json.RawMessage(`{"cacheKey":"k"}`), Options: queue.Options{RemoveOnComplete: r(7)}},
	}
	out, err := b.client.EnqueueMany(ctx, b.pool, batch)
	require.NoError(t, err)
	require.Len(t, out, len(batch))
	require.False(t, out[2].Created)
	ids := make([]string, len(out))
	for i, e := range out {
		ids[i] = e.Job.ID
	}
	stored := map[string]queue.Job{}
	for _, id := range ids {
		j, err := b.client.Get(ctx, id)
		require.NoError(t, err)
		stored[id] = j
	}
	for i, e := range out {
		require.Equal(t, stored[e.Job.ID], e.Job, "job %d", i)
	}
	require.Equal(t, `{"a": [1, {"z": null}], "b": 2}`, string(out[0].Job.Data), "data as jsonb stores it")
}
