package queue

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgqueue/queue/internal/store"
)

// The API's admin operations: list, retry, remove, clean.

// List limits.
const (
	DefaultListLimit = 50
	MaxListLimit     = 500
)

// cleanBatch bounds each DELETE of a clean, so none holds many row locks for long.
const cleanBatch = 1000

// ErrBadCursor means a list cursor was not one this package made.
var ErrBadCursor = errors.New("malformed cursor")

// ListFilter selects and pages jobs. Empty strings do not filter.
type ListFilter struct {
	State  string
	Type   string
	Queue  string
	Group  string
	Limit  int    // 1..MaxListLimit; 0 means DefaultListLimit
	Cursor string // from a previous page's NextCursor
}

// Page is one page of jobs, newest first. NextCursor is empty on the last page.
type Page struct {
	Jobs       []Job
	NextCursor string
}

// cursorPrefix versions the opaque cursor, so its encoding can change later.
const cursorPrefix = "v1:"

func encodeCursor(seq int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.FormatInt(seq, 10)))
}

func decodeCursor(s string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return 0, ErrBadCursor
	}
	rest, ok := strings.CutPrefix(string(b), cursorPrefix)
	if !ok {
		return 0, ErrBadCursor
	}
	seq, err := strconv.ParseInt(rest, 10, 64)
	if err != nil || seq < 1 {
		return 0, ErrBadCursor
	}
	return seq, nil
}

// MaxPageBytes bounds a page of jobs (its JSON): a page stops there, and its cursor goes
// on from the last job it holds. 500 jobs of 256 KiB data would otherwise be a 125 MB
// answer.
const MaxPageBytes = 8 << 20

// Chunks of a scan: the first is small, the next ones are sized to about chunkBytes by
// the rows seen so far, so a scan holds a bounded number of bytes whatever the jobs hold.
const (
	firstChunk = 8
	maxChunk   = 128
	chunkBytes = 1 << 20
)

// rowBytes estimates a job's size in a page (its JSON): the stored JSON plus the rest.
func rowBytes(r *store.QueueJob) int { return len(r.Data) + len(r.Result) + len(r.Errors) + 300 }

// ListScan hands the jobs of a list to each, newest first (by submission), fetching them
// from Postgres in chunks so that memory stays bounded whatever the jobs hold. each
// returns false to end the page before that job (it is not part of the page). ListScan
// returns the cursor that goes on after the last job of the page, or "" when no job
// follows. Jobs inserted meanwhile never shift later pages.
func (c *Client) ListScan(ctx context.Context, f ListFilter, each func(*Job) bool) (string, error) {
	limit := f.Limit
	if limit == 0 {
		limit = DefaultListLimit
	}
	if limit < 1 || limit > MaxListLimit {
		return "", fmt.Errorf("list limit %d outside 1..%d", limit, MaxListLimit)
	}
	p := store.JobListParams{}
	if f.State != "" {
		p.State = &f.State
	}
	if f.Type != "" {
		p.Type = &f.Type
	}
	if f.Queue != "" {
		p.Queue = &f.Queue
	}
	if f.Group != "" {
		p.GroupKey = &f.Group
	}
	if f.Cursor != "" {
		seq, err := decodeCursor(f.Cursor)
		if err != nil {
			return "", err
		}
		p.BeforeSeq = &seq
	}
	taken, chunk, seen, seenBytes := 0, firstChunk, 0, 0
	var last int64
	for {
		p.Max = int32(min(chunk, limit-taken+1)) // one more tells whether a next page exists
		rows, err := store.New(c.pool).JobList(ctx, p)
		if err != nil {
			return "", fmt.Errorf("list jobs: %w", err)
		}
		for i := range rows {
			if taken == limit {
				return encodeCursor(last), nil
			}
			j := jobFromRow(rows[i])
			if !each(&j) {
				return encodeCursor(last), nil
			}
			taken, last = taken+1, j.Seq
			seen, seenBytes = seen+1, seenBytes+rowBytes(&rows[i])
		}
		if len(rows) < int(p.Max) {
			return "", nil
		}
		p.BeforeSeq = &rows[len(rows)-1].Seq
		chunk = min(max(chunkBytes/max(seenBytes/seen, 1), 1), maxChunk)
	}
}

// List returns a page of jobs, newest first (by submission), of at most f.Limit jobs
// and about MaxPageBytes of JSON. The cursor is the position after the last job
// returned, so jobs inserted meanwhile never shift later pages.
func (c *Client) List(ctx context.Context, f ListFilter) (Page, error) {
	page := Page{Jobs: []Job{}}
	size := 0
	next, err := c.ListScan(ctx, f, func(j *Job) bool {
		n := len(j.Data) + len(j.Result) + 300
		for _, e := range j.Errors {
			n += len(e.Message) + 60
		}
		if len(page.Jobs) > 0 && size+n > MaxPageBytes {
			return false
		}
		size += n
		page.Jobs = append(page.Jobs, *j)
		return true
	})
	page.NextCursor = next
	return page, err
}

// Retry puts a failed job, or a cancelled one whose handler has stopped, back to waiting
// with attemptsMade 0 and its error, result and progress reset; earlier errors are kept.
// ErrNotFound when it does not exist, ErrConflict in any other state.
func (c *Client) Retry(ctx context.Context, id string) (Job, error) {
	// A job that changed state between the update and the read is tried again.
	for range 3 {
		r, err := store.New(c.pool).JobRetry(ctx, id)
		if err == nil {
			return jobFromRow(store.QueueJob(r)), nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return Job{}, fmt.Errorf("retry job: %w", err)
		}
		j, err := c.Get(ctx, id)
		if err != nil {
			return Job{}, err
		}
		switch {
		case j.State == StateCancelled && j.LeaseOwner != nil:
			return Job{}, fmt.Errorf("%w: the cancelled job's handler is still running", ErrConflict)
		case j.State != StateFailed && j.State != StateCancelled:
			return Job{}, fmt.Errorf("%w: only a failed or cancelled job can be retried, this one is %s", ErrConflict, j.State)
		}
	}
	return Job{}, fmt.Errorf("%w: the job keeps changing state", ErrConflict)
}

// Remove deletes a job. ErrNotFound when it does not exist; ErrConflict while it is
// active, or cancelled with its handler still running. Its audit rows stay.
func (c *Client) Remove(ctx context.Context, id string) error {
	for range 3 {
		_, err := store.New(c.pool).JobRemove(ctx, id)
		if err == nil {
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("remove job: %w", err)
		}
		j, err := c.Get(ctx, id)
		if err != nil {
			return err
		}
		switch {
		case j.State == StateActive:
			return fmt.Errorf("%w: the job is active", ErrConflict)
		case j.State == StateCancelled && j.LeaseOwner != nil:
			return fmt.Errorf("%w: the cancelled job's handler is still running", ErrConflict)
		}
	}
	return fmt.Errorf("%w: the job keeps changing state", ErrConflict)
}

// CleanTarget names what a clean removes.
type CleanTarget string

// Clean targets: completed jobs; failed and cancelled jobs.
const (
	CleanCompleted CleanTarget = "completed"
	CleanFailed    CleanTarget = "failed"
)

// Default ages of clean.
const (
	DefaultCleanCompletedAge = 24 * time.Hour
	DefaultCleanFailedAge    = 48 * time.Hour
)

func (t CleanTarget) states() ([]string, error) {
	switch t {
	case CleanCompleted:
		return []string{StateCompleted}, nil
	case CleanFailed:
		return []string{StateFailed, StateCancelled}, nil
	}
	return nil, fmt.Errorf("unknown clean target %q", string(t))
}

// CleanOptions tune a clean; the zero value uses the database clock.
type CleanOptions struct {
	Now *time.Time // instead of the database's now(), for tests
	// Removed, when set, is called with the ids of each batch once it is deleted (to drop
	// cached results). It runs outside any transaction and cannot undo the batch.
	Removed func(ctx context.Context, ids []string)
}

// Clean removes the jobs of target that finished more than olderThan ago, in bounded
// batches, and returns how many it removed. Cancelled jobs whose handler still runs are
// left for a later clean.
func (c *Client) Clean(ctx context.Context, target CleanTarget, olderThan time.Duration, opts CleanOptions) (int64, error) {
	states, err := target.states()
	if err != nil {
		return 0, err
	}
	if olderThan < 0 {
		return 0, fmt.Errorf("clean: negative age %s", olderThan)
	}
	var total int64
	for {
		ids, err := store.New(c.pool).JobCleanFinished(ctx, store.JobCleanFinishedParams{
			States: states, Now: opts.Now, OlderThanMs: olderThan.Milliseconds(), Max: cleanBatch,
		})
		if err != nil {
			return total, fmt.Errorf("clean %s jobs: %w", target, err)
		}
		total += int64(len(ids))
		if len(ids) > 0 && opts.Removed != nil {
			opts.Removed(ctx, ids)
		}
		if len(ids) < cleanBatch {
			return total, nil
		}
	}
}

// LastEvent is the newest audit row of a job id.
type LastEvent struct {
	State   string
	At      time.Time
	Attempt int
	Message *string
}

// LastEvent reads how a job id last changed state, also after the job was removed (the
// audit trail outlives jobs). ErrNotFound when the id has no audit rows.
func (c *Client) LastEvent(ctx context.Context, id string) (LastEvent, error) {
	r, err := store.New(c.pool).JobLastEvent(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return LastEvent{}, ErrNotFound
	}
	if err != nil {
		return LastEvent{}, fmt.Errorf("read last event: %w", err)
	}
	return LastEvent{State: r.State, At: r.At, Attempt: int(r.Attempt), Message: r.Message}, nil
}
