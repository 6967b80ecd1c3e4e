package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/store"
)

// NotifyChannel is the LISTEN/NOTIFY channel that announces new runnable jobs; the
// payload names the queue (an empty payload wakes every queue).
const NotifyChannel = "queue_jobs"

// MaxBulk is the most jobs one EnqueueMany call takes.
const MaxBulk = 1000

// DBTX is what statements run on: a pool, a connection, or a caller's transaction.
type DBTX = store.DBTX

// ClientConfig holds what a client checks submissions against and the defaults it fixes
// on the jobs it submits.
type ClientConfig struct {
	// Kinds are the job types a submission may name, with their data rules. Required.
	Kinds *kinds.Registry
	// RemoveOnComplete and RemoveOnFail are written into jobs that do not say; nil leaves
	// the choice to the worker that finishes the job.
	RemoveOnComplete *int
	RemoveOnFail     *int
	// OnEnqueued, when set, hears how many jobs of a type this client created (metrics).
	OnEnqueued func(jobType string, n int)
}

// Client enqueues jobs and performs the operations of the API on them. It is safe for
// concurrent use.
type Client struct {
	pool   *pgxpool.Pool
	cfg    ClientConfig
	notify *notifier
}

// NewClient returns a client; Close stops its background notifier.
func NewClient(pool *pgxpool.Pool, cfg ClientConfig) (*Client, error) {
	if cfg.Kinds == nil {
		return nil, errors.New("queue: ClientConfig.Kinds is required")
	}
	return &Client{pool: pool, cfg: cfg, notify: newNotifier(pool)}, nil
}

// Close stops the client's background notifier.
func (c *Client) Close() { c.notify.close() }

// Kinds are the job types this client accepts.
func (c *Client) Kinds() *kinds.Registry { return c.cfg.Kinds }

// Enqueued is the outcome of one enqueue: the job, and whether this call created it
// (false when options.jobId named an existing job).
type Enqueued struct {
	Job     Job
	Created bool
}

// Enqueue inserts one job through tx: a caller's pgx.Tx (the job exists if and only if
// that transaction commits), or a pool or connection.
func (c *Client) Enqueue(ctx context.Context, tx DBTX, job NewJob) (Enqueued, error) {
	out, err := c.EnqueueMany(ctx, tx, []NewJob{job})
	if err != nil {
		var v *ValidationError
		if errors.As(err, &v) {
			for i := range v.Problems {
				v.Problems[i].Field = trimIndex(v.Problems[i].Field)
			}
		}
		return Enqueued{}, err
	}
	return out[0], nil
}

func trimIndex(field string) string {
	const p = "jobs[0]."
	if len(field) > len(p) && field[:len(p)] == p {
		return field[len(p):]
	}
	return field
}

// EnqueueMany inserts up to MaxBulk jobs in one statement, all or nothing. Results are in
// input order. Problems are named "jobs[i].field".
func (c *Client) EnqueueMany(ctx context.Context, tx DBTX, jobs []NewJob) ([]Enqueued, error) {
	if err := c.validate(jobs); err != nil {
		return nil, err
	}
	_, inTx := tx.(pgx.Tx)
	// Inside a caller's transaction the statement notifies (delivered at its commit).
	// Outside, an enqueue after a quiet spell notifies in its own statement too, saving
	// the workers a round trip; the rest of a stream is left to the notifier.
	notify := inTx || c.notify.claimLeadingEdge()
	rows, err := c.insert(ctx, tx, jobs, notify)
	if err != nil {
		return nil, fmt.Errorf("insert jobs: %w", err)
	}
	out := make([]Enqueued, len(jobs))
	// Rows come back in input order; jobs whose id existed are missing.
	next := 0
	var existing []string
	for i, j := range jobs {
		if next < len(rows) && (j.Options.JobID == nil || rows[next].ID == *j.Options.JobID) {
			out[i] = Enqueued{Job: jobFromRow(rows[next]), Created: true}
			next++
			continue
		}
		if j.Options.JobID == nil {
			return nil, fmt.Errorf("enqueue: insert returned rows out of order")
		}
		existing = append(existing, *j.Options.JobID)
	}
	if next != len(rows) {
		return nil, fmt.Errorf("enqueue: insert returned %d rows for %d new jobs", len(rows), next)
	}
	if len(existing) > 0 {
		found, err := store.New(tx).JobGetManyByID(ctx, existing)
		if err != nil {
			return nil, fmt.Errorf("read existing jobs: %w", err)
		}
		byID := make(map[string]store.QueueJob, len(found))
		for _, r := range found {
			byID[r.ID] = r
		}
		for i, j := range jobs {
			if out[i].Job.ID != "" {
				continue
			}
			r, ok := byID[*j.Options.JobID]
			if !ok {
				// Removed between our insert and read: the caller may simply retry.
				return nil, fmt.Errorf("enqueue: job %q was removed while it was being submitted", *j.Options.JobID)
			}
			out[i] = Enqueued{Job: jobFromRow(r)}
		}
	}
	if !inTx && !notify && next > 0 {
		for _, r := range out {
			if r.Created && r.Job.State == StateWaiting {
				c.notify.poke(r.Job.Queue)
			}
		}
	}
	if c.cfg.OnEnqueued != nil && next > 0 {
		created := map[string]int{}
		for _, r := range out {
			if r.Created {
				created[r.Job.Type]++
			}
		}
		for t, n := range created {
			c.cfg.OnEnqueued(t, n)
		}
	}
	return out, nil
}

func (c *Client) validate(jobs []NewJob) error {
	v := &ValidationError{}
	if len(jobs) == 0 || len(jobs) > MaxBulk {
		v.Add("jobs", "must hold 1..%d jobs", MaxBulk)
		return v
	}
	prefixes := make([]string, len(jobs))
	for i := range jobs {
		prefixes[i] = "jobs[" + strconv.Itoa(i) + "]."
	}
	c.ValidateBatch(jobs, prefixes, nil, v)
	return v.Err()
}

// ValidateBatch checks each job (NewJob.Validate against this client's kinds, named
// after prefixes[i]) and that no jobId repeats within the batch. Jobs marked in skip
// (already refused) are passed over.
func (c *Client) ValidateBatch(jobs []NewJob, prefixes []string, skip []bool, v *ValidationError) {
	seen := make(map[string]int)
	for i := range jobs {
		if skip != nil && skip[i] {
			continue
		}
		j, prefix := &jobs[i], prefixes[i]
		j.Validate(prefix, c.cfg.Kinds, v)
		if id := j.Options.JobID; id != nil {
			if first, dup := seen[*id]; dup {
				v.Add(prefix+"options.jobId", "repeats the jobId of jobs[%d]", first)
			} else {
				seen[*id] = i
			}
		}
	}
}

// insert runs the insert statement: the scalar one for a single job, the array one for
// a batch. Rows come back in input order, without the jobs whose id existed.
func (c *Client) insert(ctx context.Context, tx DBTX, jobs []NewJob, notify bool) ([]store.QueueJob, error) {
	q := store.New(tx)
	p := c.insertParams(jobs)
	p.Notify = notify
	if len(jobs) == 1 {
		var id *string
		if p.JobIds[0] != "" {
			id = &p.JobIds[0]
		}
		rows, err := q.JobInsertOne(ctx, store.JobInsertOneParams{
			JobID: id, Type: p.Types[0], Queue: p.Queues[0], GroupKey: p.Groups[0], DelayMs: p.DelaysMs[0], Priority: p.Priorities[0],
			Data: p.Data[0], MaxAttempts: p.MaxAttempts[0], BackoffType: p.BackoffTypes[0],
			BackoffDelayMs: p.BackoffDelaysMs[0], TimeoutMs: nullInt32(p.TimeoutsMs[0], 0),
			RemoveOnComplete: nullInt32(p.RemoveOnCompletes[0], -2),
			RemoveOnFail:     nullInt32(p.RemoveOnFails[0], -2),
			Notify:           notify,
		})
		out := make([]store.QueueJob, len(rows))
		for i, r := range rows {
			out[i] = store.QueueJob(r)
		}
		return out, err
	}
	rows, err := q.JobInsertMany(ctx, p)
	if err != nil {
		return nil, err
	}
	// Each row is the next job whose id did not exist; the statement returns only the
	// columns the database decides, and the rest are what we sent (and the columns'
	// defaults), as TestBatchInsertReturnsTheStoredJobs checks.
	out := make([]store.QueueJob, 0, len(rows))
	for i := range jobs {
		if len(out) == len(rows) {
			break
		}
		r := rows[len(out)]
		if p.JobIds[i] != "" && r.ID != p.JobIds[i] {
			continue // that id existed
		}
		out = append(out, store.QueueJob{
			Seq: r.Seq, ID: r.ID, Type: p.Types[i], Queue: p.Queues[i], GroupKey: p.Groups[i], State: r.State, Priority: p.Priorities[i],
			Data: r.Data, MaxAttempts: p.MaxAttempts[i], BackoffType: p.BackoffTypes[i],
			BackoffDelayMs: p.BackoffDelaysMs[i], TimeoutMs: nullInt32(p.TimeoutsMs[i], 0),
			RemoveOnComplete: nullInt32(p.RemoveOnCompletes[i], -2),
			RemoveOnFail:     nullInt32(p.RemoveOnFails[i], -2),
			RunAt:            r.RunAt, CreatedAt: r.CreatedAt, Errors: emptyErrors,
		})
	}
	if len(out) != len(rows) {
		return nil, fmt.Errorf("enqueue: insert returned %d rows that match no job", len(rows)-len(out))
	}
	return out, nil
}

// emptyErrors is queue.jobs.errors' default.
var emptyErrors = []byte("[]")

// nullInt32 maps the batch statement's "not given" sentinel to NULL.
func nullInt32(v, sentinel int32) *int32 {
	if v == sentinel {
		return nil
	}
	return &v
}

func (c *Client) insertParams(jobs []NewJob) store.JobInsertManyParams {
	n := len(jobs)
	p := store.JobInsertManyParams{
		Types: make([]string, n), Queues: make([]string, n), Groups: make([]string, n), Data: make([][]byte, n), Priorities: make([]int32, n),
		DelaysMs: make([]int64, n), MaxAttempts: make([]int32, n), JobIds: make([]string, n),
		BackoffTypes: make([]string, n), BackoffDelaysMs: make([]int32, n), TimeoutsMs: make([]int32, n),
		RemoveOnCompletes: make([]int32, n), RemoveOnFails: make([]int32, n),
	}
	for i, j := range jobs {
		o := j.Options
		p.Types[i] = j.Type
		p.Queues[i] = valueOr(o.Queue, DefaultQueue)
		p.Groups[i] = valueOr(o.Group, "")
		p.Data[i] = j.Data
		p.Priorities[i] = int32(valueOr(o.Priority, DefaultPriority))
		p.DelaysMs[i] = valueOr(o.Delay, 0)
		p.MaxAttempts[i] = int32(valueOr(o.Attempts, DefaultAttempts))
		p.JobIds[i] = valueOr(o.JobID, "")
		b := o.Backoff.resolve()
		p.BackoffTypes[i] = b.Type
		p.BackoffDelaysMs[i] = int32(b.Delay)
		p.TimeoutsMs[i] = int32(valueOr(o.Timeout, 0))
		p.RemoveOnCompletes[i] = retentionParam(o.RemoveOnComplete, c.cfg.RemoveOnComplete)
		p.RemoveOnFails[i] = retentionParam(o.RemoveOnFail, c.cfg.RemoveOnFail)
	}
	return p
}

func valueOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// retentionParam encodes "not given and no default" as -2, the query's NULL sentinel.
func retentionParam(given *Retention, def *int) int32 {
	switch {
	case given != nil:
		return int32(*given)
	case def != nil:
		return int32(*def)
	}
	return -2
}
