package db_test

import (
	"context"
	"encoding/json"
	"go/doc"
	"go/parser"
	"go/token"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/db"
	"github.com/pgqueue/queue/internal/testutil"
)

// welcome is an application's own type for EMAIL_SEND's data.
type welcome struct {
	To       string `json:"to"`
	Subject  string `json:"subject"`
	Template string `json:"template"`
}

func (welcome) Kind() string { return "EMAIL_SEND" }

func newClient(t *testing.T, cfg db.Config) (*db.Client, *testutil.Env) {
	t.Helper()
	env := testutil.NewEnv(t)
	c := db.NewClient(env.Pool, cfg)
	t.Cleanup(c.Close)
	return c, env
}

// Zero options are the defaults; the built-in types' data rules apply.
func TestEnqueueWithZeroOptions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, env := newClient(t, db.Config{})
	_, err := c.Enqueue(ctx, nil, welcome{To: "a@example.com", Subject: "Hi", Template: "welcome"}, db.Options{})
	require.Error(t, err, "a nil executor is refused, not a crash")

	res, err := c.Enqueue(ctx, env.Pool, welcome{To: "a@example.com", Subject: "Hi", Template: "welcome"}, db.Options{})
	require.NoError(t, err)
	require.True(t, res.Created)
	j := res.Job
	require.Equal(t, "EMAIL_SEND", j.Type)
	require.Equal(t, "default", j.Queue)
	require.Equal(t, db.PriorityNormal, j.Priority)
	require.Equal(t, 3, j.MaxAttempts)
	require.Equal(t, "waiting", j.State)
	require.Equal(t, j.CreatedAt, j.RunAt)
	require.JSONEq(t, `{"to":"a@example.com","subject":"Hi","template":"welcome"}`, string(j.Data))

	got, err := c.Get(ctx, j.ID)
	require.NoError(t, err)
	require.Equal(t, j.ID, got.ID)
	require.Empty(t, got.Errors)
}

func TestEnqueueWithEveryOption(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, env := newClient(t, db.Config{})
	res, err := c.Enqueue(ctx, env.Pool, welcome{To: "a@example.com", Subject: "Hi", Template: "welcome"}, db.Options{
		Queue: "emails", Priority: db.PriorityUrgent, Delay: time.Minute, Attempts: 7,
		Backoff: db.Backoff{Type: db.BackoffFixed, Delay: 250 * time.Millisecond}, JobID: "welcome-42",
		RemoveOnComplete: db.KeepLast(4), RemoveOnFail: db.KeepAll(), Timeout: 9 * time.Second,
	})
	require.NoError(t, err)
	j := res.Job
	require.Equal(t, "welcome-42", j.ID)
	require.Equal(t, "emails", j.Queue)
	require.Equal(t, 20, j.Priority)
	require.Equal(t, "delayed", j.State)
	require.InDelta(t, 60, j.RunAt.Sub(j.CreatedAt).Seconds(), 0.01)
	row := env.Row(t, `SELECT max_attempts, backoff_type, backoff_delay_ms, remove_on_complete, remove_on_fail, timeout_ms
		FROM queue.jobs WHERE id = 'welcome-42'`)
	require.Equal(t, []any{int32(7), "fixed", int32(250), int32(4), int32(-1), int32(9000)}, row)

	again, err := c.Enqueue(ctx, env.Pool, welcome{To: "b@example.com", Subject: "Other", Template: "welcome"}, db.Options{JobID: "welcome-42"})
	require.NoError(t, err)
	require.False(t, again.Created, "an existing job id creates nothing")
	require.JSONEq(t, `{"to":"a@example.com","subject":"Hi","template":"welcome"}`, string(again.Job.Data))
}

// Errors name the field as the HTTP API does, data fields included; nothing is
// inserted.
func TestValidationErrorsNameTheField(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, env := newClient(t, db.Config{})
	_, err := c.Enqueue(ctx, env.Pool, welcome{To: "not-an-address", Template: "Bad Name"}, db.Options{
		Queue: "No Caps", Priority: 21, Delay: -time.Second, Attempts: 101, JobID: "123",
		Backoff: db.Backoff{Type: "linear"}, Timeout: -time.Second,
	})
	var v *db.ValidationError
	require.ErrorAs(t, err, &v)
	fields := map[string]bool{}
	for _, p := range v.Problems {
		fields[p.Field] = true
		require.NotEmpty(t, p.Message)
	}
	require.Equal(t, map[string]bool{
		"data.to": true, "data.subject": true, "data.template": true, "options.queue": true, "options.priority": true,
		"options.delay": true, "options.attempts": true, "options.jobId": true, "options.backoff.type": true,
		"options.timeout": true,
	}, fields)

	_, err = c.Enqueue(ctx, env.Pool, db.Raw{Type: "NO_SUCH_TYPE", Data: json.RawMessage(`{}`)}, db.Options{})
	require.ErrorAs(t, err, &v)
	require.Equal(t, "type", v.Problems[0].Field)
	require.Zero(t, env.Count(t, "SELECT count(*) FROM queue.jobs"), "nothing half-written")
}

func TestEnqueueManyNamesTheIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, env := newClient(t, db.Config{})
	ok := welcome{To: "a@example.com", Subject: "Hi", Template: "welcome"}
	out, err := c.EnqueueMany(ctx, env.Pool, []db.Insert{{Args: ok}, {Args: ok, Options: db.Options{Queue: "emails"}}})
	require.NoError(t, err)
	require.Len(t, out, 2)
	require.Equal(t, []string{"default", "emails"}, []string{out[0].Job.Queue, out[1].Job.Queue})

	_, err = c.EnqueueMany(ctx, env.Pool, []db.Insert{{Args: ok}, {Args: welcome{To: "x"}}})
	var v *db.ValidationError
	require.ErrorAs(t, err, &v)
	require.Equal(t, "jobs[1].data.subject", v.Problems[0].Field)
	_, err = c.EnqueueMany(ctx, env.Pool, []db.Insert{{Args: nil}})
	require.ErrorAs(t, err, &v)
	require.Equal(t, "jobs[0].data", v.Problems[0].Field)
	require.Equal(t, 2, env.Count(t, "SELECT count(*) FROM queue.jobs"))
}

// A custom registry (code in this module) adds a type with no migration; the client
// checks its data by its rules.
func TestCustomKinds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, env := newClient(t, db.Config{Kinds: testutil.Kinds(nil)})
	res, err := c.Enqueue(ctx, env.Pool, testutil.Data{N: 3}, db.Options{})
	require.NoError(t, err)
	require.Equal(t, testutil.KindName, res.Job.Type)
	_, err = c.Enqueue(ctx, env.Pool, db.Raw{Type: testutil.KindName, Data: json.RawMessage(`{"n":"three"}`)}, db.Options{})
	var v *db.ValidationError
	require.ErrorAs(t, err, &v)
	require.Equal(t, "data.n", v.Problems[0].Field)
}

func TestReadAndOperate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, env := newClient(t, db.Config{Kinds: testutil.Kinds(nil)})
	var ids []string
	for i := range 3 {
		res, err := c.Enqueue(ctx, env.Pool, testutil.Data{N: i}, db.Options{Queue: []string{"default", "default", "emails"}[i]})
		require.NoError(t, err)
		ids = append(ids, res.Job.ID)
	}
	page, err := c.List(ctx, db.ListFilter{Queue: "default", Limit: 1})
	require.NoError(t, err)
	require.Equal(t, []string{ids[1]}, []string{page.Jobs[0].ID}, "newest first")
	require.NotEmpty(t, page.NextCursor)
	page, err = c.List(ctx, db.ListFilter{Queue: "default", Limit: 1, Cursor: page.NextCursor})
	require.NoError(t, err)
	require.Equal(t, ids[0], page.Jobs[0].ID)

	cancelled, err := c.Cancel(ctx, ids[0])
	require.NoError(t, err)
	require.Equal(t, "cancelled", cancelled.State)
	_, err = c.Cancel(ctx, ids[0])
	require.ErrorIs(t, err, db.ErrConflict)
	retried, err := c.Retry(ctx, ids[0])
	require.NoError(t, err)
	require.Equal(t, "waiting", retried.State)
	require.NoError(t, c.Remove(ctx, ids[0]))
	_, err = c.Get(ctx, ids[0])
	require.ErrorIs(t, err, db.ErrNotFound)

	stats, err := c.Stats(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, stats.ByQueue["default"].Waiting)
	require.EqualValues(t, 1, stats.ByQueue["emails"].Waiting)

	require.NoError(t, c.PauseQueue(ctx, "emails"))
	queues, err := c.Queues(ctx)
	require.NoError(t, err)
	require.Len(t, queues, 2)
	require.Equal(t, "emails", queues[1].Name)
	require.True(t, queues[1].Paused)
	require.NoError(t, c.ResumeQueue(ctx, "emails"))
	require.NoError(t, c.Pause(ctx))
	stats, err = c.Stats(ctx)
	require.NoError(t, err)
	require.True(t, stats.Paused)
	require.NoError(t, c.Resume(ctx))
	workers, err := c.Workers(ctx)
	require.NoError(t, err)
	require.Empty(t, workers)
}

// The public package exposes nothing of the worker's protocol.
func TestNoWorkerProtocolInThePublicPackage(t *testing.T) {
	t.Parallel()
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi fs.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, parser.ParseComments)
	require.NoError(t, err)
	p := doc.New(pkgs["db"], "github.com/pgqueue/queue/db", 0)
	var names []string
	for _, f := range p.Funcs {
		names = append(names, f.Name)
	}
	for _, typ := range p.Types {
		names = append(names, typ.Name)
		for _, m := range typ.Methods {
			names = append(names, typ.Name+"."+m.Name)
		}
		for _, f := range typ.Funcs {
			names = append(names, f.Name)
		}
	}
	require.Contains(t, names, "Client.Enqueue", "the walk sees the exported API")
	for _, n := range names {
		for _, forbidden := range []string{"Claim", "Finish", "Heartbeat", "Rescue", "Maintenance", "HandBack", "Lease", "Promote", "Trim"} {
			require.NotContains(t, n, forbidden, "db exports %s", n)
		}
	}
}
