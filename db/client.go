// Package db is the Go client of the queue for applications: enqueue jobs inside your own
// transaction (a job exists if and only if your transaction commits), read, list,
// cancel, retry and remove them, read stats, and pause, resume or limit queues. It
// applies the same checks as the HTTP API, the job's data included, and its errors name
// the field (options.priority, data.to).
//
// Options are plain values whose zero fields mean the defaults, so a job is one line:
//
//	res, err := client.Enqueue(ctx, tx, Welcome{To: "a@example.com"}, db.Options{})
//
// where Welcome is any struct that marshals to the job type's data and names its type
// with a Kind method (or use Raw). Running jobs is the worker's business: nothing here
// claims, finishes or otherwise moves a job through a worker's protocol.
//
// Flow control is a queue's setting, changed with SetQueueLimits: how many of its jobs
// run at once, how many start per period, the same for each group of jobs
// (Options.Group), and fair turns between groups. Settings live in Postgres, so a limit
// holds across every worker together, not per process; workers apply a change within
// their poll interval. A job held back by a limit just keeps waiting.
package db

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgqueue/queue/internal/jobs"
	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/queue"
)

// DBTX is what an enqueue runs on: your pgx.Tx (the job is part of your transaction),
// or a *pgxpool.Pool or *pgx.Conn (the job is committed at once).
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Config holds a client's defaults; the zero value is a good one.
type Config struct {
	// RemoveOnComplete and RemoveOnFail are written into jobs whose options leave them
	// zero. Zero here leaves the choice to the worker that finishes the job
	// (QUEUE_REMOVE_ON_COMPLETE, QUEUE_REMOVE_ON_FAIL).
	RemoveOnComplete Retention
	RemoveOnFail     Retention

	// Kinds are the job types the client accepts, with their data rules. Nil means the
	// built-in types; code inside this module may pass a registry of its own.
	Kinds *kinds.Registry
}

// Client is safe for concurrent use. Close it when done: it owns a small background
// notifier that wakes workers after enqueues outside a transaction.
type Client struct {
	q *queue.Client
}

// NewClient returns a client over pool. Reads run on pool; an enqueue runs on whatever
// you pass it.
func NewClient(pool *pgxpool.Pool, cfg Config) *Client {
	reg := cfg.Kinds
	if reg == nil {
		reg = jobs.Builtin(jobs.Deps{})
	}
	qc, err := queue.NewClient(pool, queue.ClientConfig{
		Kinds:            reg,
		RemoveOnComplete: cfg.RemoveOnComplete.keep(),
		RemoveOnFail:     cfg.RemoveOnFail.keep(),
	})
	if err != nil {
		panic(err) // only a nil registry fails, and reg is never nil
	}
	return &Client{q: qc}
}

// Close stops the client's notifier, sending a notification still pending.
func (c *Client) Close() { c.q.Close() }

// Args is a job's data: a value that marshals to the data object of its job type and
// names that type.
type Args interface {
	Kind() string
}

// Raw is data given as JSON, for a type named at run time.
type Raw struct {
	Type string
	Data json.RawMessage
}

// Kind is the job type.
func (r Raw) Kind() string { return r.Type }

// MarshalJSON is the data as given.
func (r Raw) MarshalJSON() ([]byte, error) { return r.Data, nil }

// Insert is one job of EnqueueMany.
type Insert struct {
	Args    Args
	Options Options
}

// Enqueued is the outcome of one enqueue: the job, and whether this call created it
// (false when Options.JobID named a job that exists; nothing new was created).
type Enqueued struct {
	Job     Job
	Created bool
}

// Enqueue inserts one job through tx. Inside your transaction, the job exists if and
// only if it commits, and workers are woken at the commit. Invalid data or options are
// a *ValidationError naming each field; nothing is inserted then.
func (c *Client) Enqueue(ctx context.Context, tx DBTX, args Args, opts Options) (Enqueued, error) {
	if tx == nil {
		return Enqueued{}, errNoExecutor
	}
	nj, err := newJob(args, opts)
	if err != nil {
		return Enqueued{}, err
	}
	r, err := c.q.Enqueue(ctx, tx, nj)
	if err != nil {
		return Enqueued{}, err
	}
	return Enqueued{Job: jobFrom(r.Job), Created: r.Created}, nil
}

// EnqueueMany inserts up to 1,000 jobs in one statement, all or nothing. Results are in
// input order; problems are named after the index (jobs[3].data.to).
func (c *Client) EnqueueMany(ctx context.Context, tx DBTX, inserts []Insert) ([]Enqueued, error) {
	if tx == nil {
		return nil, errNoExecutor
	}
	njs := make([]queue.NewJob, len(inserts))
	v := &ValidationError{}
	for i, in := range inserts {
		nj, err := newJob(in.Args, in.Options)
		var bad *ValidationError
		if errors.As(err, &bad) {
			for _, p := range bad.Problems {
				v.Add(fmt.Sprintf("jobs[%d].%s", i, p.Field), "%s", p.Message)
			}
			continue
		}
		njs[i] = nj
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	rs, err := c.q.EnqueueMany(ctx, tx, njs)
	if err != nil {
		return nil, err
	}
	out := make([]Enqueued, len(rs))
	for i, r := range rs {
		out[i] = Enqueued{Job: jobFrom(r.Job), Created: r.Created}
	}
	return out, nil
}

var errNoExecutor = errors.New("db: enqueue needs a transaction, pool or connection (tx is nil)")

func newJob(args Args, opts Options) (queue.NewJob, error) {
	if args == nil {
		v := &ValidationError{}
		v.Add("data", "is required")
		return queue.NewJob{}, v
	}
	data, err := json.Marshal(args)
	if err != nil {
		v := &ValidationError{}
		v.Add("data", "does not marshal to JSON: %v", err)
		return queue.NewJob{}, v
	}
	return queue.NewJob{Type: args.Kind(), Data: data, Options: opts.engine()}, nil
}

// Get reads one job; ErrNotFound when no job has that id.
func (c *Client) Get(ctx context.Context, id string) (Job, error) {
	j, err := c.q.Get(ctx, id)
	if err != nil {
		return Job{}, err
	}
	return jobFrom(j), nil
}

// ListFilter selects and pages jobs. Empty fields do not filter.
type ListFilter struct {
	State  string
	Type   string
	Queue  string
	Group  string
	Limit  int    // 1..500; 0 means 50
	Cursor string // a previous page's NextCursor
}

// Page is one page of jobs, newest first. NextCursor is empty on the last page.
type Page struct {
	Jobs       []Job
	NextCursor string
}

// List returns a page of jobs, newest first by submission; jobs submitted meanwhile
// never shift the pages that follow.
func (c *Client) List(ctx context.Context, f ListFilter) (Page, error) {
	p, err := c.q.List(ctx, queue.ListFilter{
		State: f.State, Type: f.Type, Queue: f.Queue, Group: f.Group, Limit: f.Limit, Cursor: f.Cursor,
	})
	if err != nil {
		return Page{}, err
	}
	out := Page{Jobs: make([]Job, len(p.Jobs)), NextCursor: p.NextCursor}
	for i, j := range p.Jobs {
		out.Jobs[i] = jobFrom(j)
	}
	return out, nil
}

// Cancel cancels a waiting, delayed or active job: a waiting or delayed one never runs,
// a running one's handler is told to stop. ErrConflict when it has finished already.
func (c *Client) Cancel(ctx context.Context, id string) (Job, error) {
	j, err := c.q.Cancel(ctx, id)
	if err != nil {
		return Job{}, err
	}
	return jobFrom(j), nil
}

// Retry puts a failed or cancelled job (whose handler has stopped) back to waiting with
// a fresh set of attempts. ErrConflict in any other state.
func (c *Client) Retry(ctx context.Context, id string) (Job, error) {
	j, err := c.q.Retry(ctx, id)
	if err != nil {
		return Job{}, err
	}
	return jobFrom(j), nil
}

// Remove deletes a job that is not running (its audit trail stays). ErrConflict while
// it runs.
func (c *Client) Remove(ctx context.Context, id string) error { return c.q.Remove(ctx, id) }

// Stats counts the jobs that exist now, overall, by type and by queue.
func (c *Client) Stats(ctx context.Context) (Stats, error) { return c.q.Stats(ctx) }

// Pause stops every worker from claiming jobs of any queue; running jobs finish and
// submissions are still accepted.
func (c *Client) Pause(ctx context.Context) error {
	_, err := c.q.SetPaused(ctx, true)
	return err
}

// Resume undoes Pause (each queue's own pause stays as it is).
func (c *Client) Resume(ctx context.Context) error {
	_, err := c.q.SetPaused(ctx, false)
	return err
}

// PauseQueue stops every worker from claiming jobs of one queue.
func (c *Client) PauseQueue(ctx context.Context, name string) error {
	return c.q.SetQueuePaused(ctx, name, true)
}

// ResumeQueue undoes PauseQueue.
func (c *Client) ResumeQueue(ctx context.Context, name string) error {
	return c.q.SetQueuePaused(ctx, name, false)
}

// Queues lists every queue that has jobs, settings, or a live worker, by name.
func (c *Client) Queues(ctx context.Context) ([]Queue, error) { return c.q.Queues(ctx) }

// Queue reads one queue; ErrNotFound when it has no jobs, settings or live worker.
func (c *Client) Queue(ctx context.Context, name string) (Queue, error) { return c.q.Queue(ctx, name) }

// Workers lists the live worker processes.
func (c *Client) Workers(ctx context.Context) ([]Worker, error) { return c.q.Workers(ctx) }

// Read-only views, as the HTTP API shows them.
type (
	// Stats are exact counts of the jobs that exist, overall (Counts), by type and by
	// queue, and whether everything is paused.
	Stats = queue.Stats
	// Counts are jobs by state.
	Counts = queue.Counts
	// Queue is a queue: its pause switch, its flow control, its counts, its live
	// workers, and the types with jobs that no live worker serving it handles.
	// Concurrency, Rate, GroupConcurrency and GroupRate are nil when there is no such
	// limit; a rate is Limit starts in any Period milliseconds. HeldBy names the limit
	// that held back the queue's last claim ("concurrency", "rate", "groupConcurrency",
	// "groupRate"; nil when none did), HeldSince since when, and NextStartAt when a full
	// rate window has room again. See Limits for what each limit means.
	Queue = queue.Queue
	// Worker is a live worker process: its queues with their concurrency, its types and
	// how many jobs it runs now.
	Worker = queue.Worker
)

// Errors. Test them with errors.Is and errors.As.
var (
	// ErrNotFound: no job has that id, or no queue that name.
	ErrNotFound = queue.ErrNotFound
	// ErrConflict: the job's state does not allow the operation (the message says why).
	ErrConflict = queue.ErrConflict
)

type (
	// ValidationError lists each invalid field of a submission (Problems), named as the
	// HTTP API names them: "type", "data.to", "options.priority", "jobs[3].data.to".
	ValidationError = queue.ValidationError
	// FieldError is one problem with one field.
	FieldError = queue.FieldError
)

// Job is a job as it is stored.
type Job struct {
	ID           string
	Type         string
	Queue        string
	Group        string // "" when none
	State        string // waiting, delayed, active, completed, failed or cancelled
	Data         json.RawMessage
	Priority     int
	AttemptsMade int // attempts started; a job handed back at shutdown gets its attempt back
	MaxAttempts  int
	Progress     int             // 0..100
	Result       json.RawMessage // what the handler returned; nil before completion
	Error        string          // the last attempt's error; "" when none
	Errors       []AttemptError  // every attempt's error, oldest first
	CreatedAt    time.Time
	RunAt        time.Time
	StartedAt    *time.Time
	FinishedAt   *time.Time
}

// AttemptError is one attempt's error.
type AttemptError struct {
	Attempt int
	Message string
	At      time.Time
}

func jobFrom(j queue.Job) Job {
	out := Job{
		ID: j.ID, Type: j.Type, Queue: j.Queue, State: j.State, Data: j.Data, Priority: j.Priority,
		AttemptsMade: j.AttemptsMade, MaxAttempts: j.MaxAttempts, Progress: j.Progress, Result: j.Result,
		Errors: make([]AttemptError, len(j.Errors)), CreatedAt: j.CreatedAt.Time, RunAt: j.RunAt.Time,
	}
	if j.Error != nil {
		out.Error = *j.Error
	}
	if j.Group != nil {
		out.Group = *j.Group
	}
	for i, e := range j.Errors {
		at, _ := time.Parse(time.RFC3339, e.At)
		out.Errors[i] = AttemptError{Attempt: e.Attempt, Message: e.Message, At: at}
	}
	if j.StartedAt != nil {
		t := j.StartedAt.Time
		out.StartedAt = &t
	}
	if j.FinishedAt != nil {
		t := j.FinishedAt.Time
		out.FinishedAt = &t
	}
	return out
}
