package db_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/db"
	"github.com/pgqueue/queue/internal/jobs"
	"github.com/pgqueue/queue/internal/testutil"
	"github.com/pgqueue/queue/internal/worker"
)

// outsideMain is an application in a module of its own: it imports only the public
// package, limits its queue, enqueues a grouped job in a transaction it commits and one
// in a transaction it rolls back, and shows a field error.
const outsideMain = `package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgqueue/queue/db"
)

type Cleanup struct {
	TargetType string ` + "`json:\"targetType\"`" + `
	OlderThan  int64  ` + "`json:\"olderThan\"`" + `
}

func (Cleanup) Kind() string { return "CLEANUP" }

func main() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	client := db.NewClient(pool, db.Config{})
	defer client.Close()

	q, err := client.SetQueueLimits(ctx, "maintenance", db.Limits{
		Concurrency: db.Concurrency(1), Rate: db.Rate(5, time.Second), GroupConcurrency: db.Concurrency(1), Fair: db.On(),
	})
	if err != nil {
		panic(err)
	}
	fmt.Printf("limited %d/%d/%d/%t\n", *q.Concurrency, q.Rate.Limit, q.Rate.Period, q.Fair)

	for _, commit := range []bool{true, false} {
		tx, err := pool.Begin(ctx)
		if err != nil {
			panic(err)
		}
		res, err := client.Enqueue(ctx, tx, Cleanup{TargetType: "temp_files", OlderThan: 3600000}, db.Options{Queue: "maintenance", Group: "tenant-1"})
		if err != nil {
			panic(err)
		}
		if commit {
			err = tx.Commit(ctx)
			fmt.Println("committed", res.Job.ID)
		} else {
			err = tx.Rollback(ctx)
			fmt.Println("rolled-back", res.Job.ID)
		}
		if err != nil {
			panic(err)
		}
	}
	_, err = client.Enqueue(ctx, pool, Cleanup{TargetType: "everything"}, db.Options{})
	var v *db.ValidationError
	if errors.As(err, &v) {
		fmt.Println("refused", v.Problems[0].Field)
	}
}
`

func TestOutsideModuleEnqueuesInItsOwnTransaction(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds a program in a module of its own")
	}
	_, here, _, _ := runtime.Caller(0)
	repo := filepath.Dir(filepath.Dir(here))
	dir := t.TempDir()

	// The application's go.mod: it requires this module, replaced by the checkout, and
	// pgx at this module's version; go.sum is this module's (the same versions).
	ours, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	require.NoError(t, err)
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(ours)
	pgx := regexp.MustCompile(`(?m)^\s*github\.com/jackc/pgx/v5 (\S+)`).FindSubmatch(ours)
	require.NotNil(t, goVersion)
	require.NotNil(t, pgx)
	pgxVersion := string(pgx[1])
	goMod := "module example.com/outside\n\ngo " + string(goVersion[1]) + "\n\n" +
		"require (\n\tgithub.com/jackc/pgx/v5 " + pgxVersion + "\n\tgithub.com/pgqueue/queue v0.0.0\n)\n\n" +
		"replace github.com/pgqueue/queue => " + repo + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte(goMod), 0o644))
	sum, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(outsideMain), 0o644))

	build := exec.Command("go", "build", "-o", "outside", ".")
	build.Dir = dir
	// Everything comes from the module cache this module's own build filled.
	build.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "build the outside program:\n%s", out)

	env := testutil.NewEnv(t)
	run := exec.Command(filepath.Join(dir, "outside"))
	run.Env = append(os.Environ(), "DATABASE_URL="+env.URL)
	out, err = run.CombinedOutput()
	require.NoError(t, err, "%s", out)
	ids := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		what, id, _ := strings.Cut(sc.Text(), " ")
		ids[what] = id
	}
	require.Equal(t, "data.targetType", ids["refused"], "the built-in type's rules ran in the application")
	require.Equal(t, "1/5/1000/true", ids["limited"])
	require.NotEmpty(t, ids["committed"])
	require.NotEmpty(t, ids["rolled-back"])
	require.Zero(t, env.Count(t, "SELECT count(*) FROM queue.job_events WHERE job_id = $1", ids["rolled-back"]),
		"the rolled-back job never existed")

	// A worker serving the application's queue runs the committed job, within the
	// limits the application set.
	settings := jobs.Settings{CleanupTempRoot: t.TempDir(), CleanupLogsRoot: t.TempDir()}
	w, err := worker.New(env.Pool, jobs.Builtin(jobs.Deps{Settings: settings}), worker.Config{
		Queues: []worker.QueueConfig{{Name: "maintenance", Concurrency: 1}}, PollInterval: 50 * time.Millisecond,
		RemoveOnComplete: -1, RemoveOnFail: -1,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	client := db.NewClient(env.Pool, db.Config{})
	t.Cleanup(client.Close)
	require.Eventually(t, func() bool {
		j, err := client.Get(context.Background(), ids["committed"])
		return err == nil && j.State == "completed"
	}, 30*time.Second, 20*time.Millisecond)
	j, err := client.Get(context.Background(), ids["committed"])
	require.NoError(t, err)
	require.Equal(t, "tenant-1", j.Group)
	_, err = client.Get(context.Background(), ids["rolled-back"])
	require.ErrorIs(t, err, db.ErrNotFound)
}
