package db

import (
	"time"

	"github.com/pgqueue/queue/internal/queue"
)

// Options are a job's submission options. Every zero field means its default, so
// Options{} is a job of priority 5 in the default queue, run at once, with 3 attempts
// and an exponential backoff from 1 s. A value out of range is a *ValidationError
// naming it ("options.priority"); it is never clamped.
type Options struct {
	// Queue is the job's queue: 1..64 characters of [a-z0-9_-]. Default "default".
	Queue string
	// Group is the unit of the queue's per-group limits and of its fairness (a tenant, a
	// customer): 1..128 characters, no control characters. Default: none (jobs without a
	// group count as one group).
	Group string
	// Priority is 1..20, higher first (PriorityLow 1, PriorityNormal 5, PriorityHigh 10,
	// PriorityUrgent 20). Default 5.
	Priority int
	// Delay postpones the first attempt: 0..365 days, in whole milliseconds.
	Delay time.Duration
	// Attempts is how many attempts the job gets: 1..100. Default 3.
	Attempts int
	// Backoff is the wait before each retry. Default exponential from 1 s.
	Backoff Backoff
	// JobID is a custom id: 1..255 characters of [A-Za-z0-9_.:-], starting with a letter
	// or digit, not all digits. While a job with that id exists, enqueueing it again
	// creates nothing and returns that job (Enqueued.Created is false). Default: a
	// generated id.
	JobID string
	// RemoveOnComplete and RemoveOnFail say what becomes of the job once it completed or
	// failed (or was cancelled). Default: the client's Config, else the worker's.
	RemoveOnComplete Retention
	RemoveOnFail     Retention
	// Timeout bounds one attempt: 1 ms..24 h. Default: the worker's QUEUE_JOB_TIMEOUT.
	Timeout time.Duration
}

// Priority names; the field itself is an integer.
const (
	PriorityLow    = queue.PriorityLow
	PriorityNormal = queue.PriorityNormal
	PriorityHigh   = queue.PriorityHigh
	PriorityUrgent = queue.PriorityUrgent
)

// Backoff types.
const (
	BackoffFixed       = "fixed"
	BackoffExponential = "exponential"
)

// Backoff is the wait before a retry: fixed waits Delay every time; exponential waits
// Delay·2^(n-1)·U(0.8, 1.0) before attempt n+1, capped at 7 days. A zero Type means
// exponential; a zero Delay means 1 s (for retries without a pause, use a millisecond).
type Backoff struct {
	Type  string
	Delay time.Duration
}

// Retention says what becomes of a finished job. The zero value means "the default";
// use RemoveAtOnce, KeepAll or KeepLast.
type Retention struct {
	set  bool
	last int
}

// RemoveAtOnce removes the job as it finishes (it stays readable from the result cache
// for RESULT_TTL).
func RemoveAtOnce() Retention { return Retention{set: true, last: queue.RemoveAtOnce} }

// KeepAll keeps the job until it is cleaned or deleted.
func KeepAll() Retention { return Retention{set: true, last: queue.RetainForever} }

// KeepLast keeps the job while it is among the n most recent finished jobs of its state
// (n >= 1; KeepLast(0) is RemoveAtOnce).
func KeepLast(n int) Retention { return Retention{set: true, last: n} }

// keep is the engine's value: nil for the default.
func (r Retention) keep() *int {
	if !r.set {
		return nil
	}
	v := r.last
	return &v
}

// engine maps value options onto the engine's (nil: not given).
func (o Options) engine() queue.Options {
	var e queue.Options
	if o.Queue != "" {
		e.Queue = &o.Queue
	}
	if o.Group != "" {
		e.Group = &o.Group
	}
	if o.Priority != 0 {
		e.Priority = &o.Priority
	}
	if o.Delay != 0 {
		ms := o.Delay.Milliseconds()
		if ms == 0 {
			ms = 1 // shorter than a millisecond still means "later"
		}
		e.Delay = &ms
	}
	if o.Attempts != 0 {
		e.Attempts = &o.Attempts
	}
	if o.Backoff != (Backoff{}) {
		b := &queue.BackoffOption{Type: o.Backoff.Type}
		if o.Backoff.Delay != 0 {
			ms := o.Backoff.Delay.Milliseconds()
			b.Delay = &ms
		}
		e.Backoff = b
	}
	if o.JobID != "" {
		e.JobID = &o.JobID
	}
	if k := o.RemoveOnComplete.keep(); k != nil {
		r := queue.Retention(*k)
		e.RemoveOnComplete = &r
	}
	if k := o.RemoveOnFail.keep(); k != nil {
		r := queue.Retention(*k)
		e.RemoveOnFail = &r
	}
	if o.Timeout != 0 {
		ms := o.Timeout.Milliseconds()
		if o.Timeout > 0 && ms == 0 {
			ms = 1
		}
		e.Timeout = &ms
	}
	return e
}
