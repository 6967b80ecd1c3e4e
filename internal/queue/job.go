// Package queue is the engine: it enqueues jobs (also inside a caller's transaction),
// claims, completes, retries, rescues, cancels, pauses and cleans them, and leads the
// background maintenance. It is the only package that changes a job's state; every
// change also appends to queue.job_events. It knows job types only through the kinds
// contract, never a particular one.
package queue

import (
	"encoding/json"
	"time"

	"github.com/pgqueue/queue/internal/store"
)

// Job states, as stored in queue.jobs.state and shown by the API.
const (
	StateWaiting   = "waiting"
	StateDelayed   = "delayed"
	StateActive    = "active"
	StateCompleted = "completed"
	StateFailed    = "failed"
	StateCancelled = "cancelled"
)

// States lists every state in the order the API reports them.
var States = []string{StateWaiting, StateActive, StateCompleted, StateFailed, StateDelayed, StateCancelled}

// Finished reports whether a job in this state will not run again by itself.
func Finished(state string) bool {
	return state == StateCompleted || state == StateFailed || state == StateCancelled
}

// Timestamp marshals as RFC 3339 with milliseconds in UTC, the API's time format.
type Timestamp struct{ time.Time }

// TimeFormat is the API's time layout.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// MarshalJSON writes the time in TimeFormat, in UTC.
func (t Timestamp) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.UTC().Format(TimeFormat) + `"`), nil
}

// UnmarshalJSON reads any RFC 3339 time.
func (t *Timestamp) UnmarshalJSON(b []byte) error {
	return t.Time.UnmarshalJSON(b)
}

func timestampPtr(t *time.Time) *Timestamp {
	if t == nil {
		return nil
	}
	return &Timestamp{*t}
}

// AttemptError is one attempt's error, as kept in the job's errors list.
type AttemptError struct {
	Attempt int    `json:"attempt"`
	Message string `json:"message"`
	At      string `json:"at"`
}

// Job is a job as the API shows it, plus the engine's own fields (not serialised).
type Job struct {
	ID           string          `json:"id"`
	Type         string          `json:"type"`
	Queue        string          `json:"queue"`
	Group        *string         `json:"group"` // nil: none
	State        string          `json:"state"`
	Data         json.RawMessage `json:"data"`
	Priority     int             `json:"priority"`
	AttemptsMade int             `json:"attemptsMade"`
	MaxAttempts  int             `json:"maxAttempts"`
	Progress     int             `json:"progress"`
	Result       json.RawMessage `json:"result"`
	Error        *string         `json:"error"`
	Errors       []AttemptError  `json:"errors"`
	CreatedAt    Timestamp       `json:"createdAt"`
	RunAt        Timestamp       `json:"runAt"`
	StartedAt    *Timestamp      `json:"startedAt"`
	FinishedAt   *Timestamp      `json:"finishedAt"`

	Seq              int64         `json:"-"`
	Backoff          Backoff       `json:"-"`
	Timeout          time.Duration `json:"-"` // 0: the worker's default
	RemoveOnComplete *int          `json:"-"` // nil: the worker's default
	RemoveOnFail     *int          `json:"-"`
	LeaseOwner       *string       `json:"-"`
	// LeaseToken identifies the claim a worker runs the job under (0: not claimed).
	LeaseToken int64 `json:"-"`
}

// Backoff says how long to wait before the next attempt.
type Backoff struct {
	Type  string `json:"type"`  // fixed or exponential
	Delay int64  `json:"delay"` // milliseconds
}

func intPtr(p *int32) *int {
	if p == nil {
		return nil
	}
	v := int(*p)
	return &v
}

// groupPtr maps the column's "no group" (”) to nil.
func groupPtr(g string) *string {
	if g == "" {
		return nil
	}
	return &g
}

// jobFromRow converts a queue.jobs row. Rows from different queries share the model's
// layout, so callers convert them with store.QueueJob(row) first.
func jobFromRow(r store.QueueJob) Job {
	j := Job{
		Seq:              r.Seq,
		ID:               r.ID,
		Type:             r.Type,
		Queue:            r.Queue,
		Group:            groupPtr(r.GroupKey),
		State:            r.State,
		Data:             json.RawMessage(r.Data),
		Priority:         int(r.Priority),
		AttemptsMade:     int(r.AttemptsMade),
		MaxAttempts:      int(r.MaxAttempts),
		Progress:         int(r.Progress),
		Error:            r.Error,
		Errors:           []AttemptError{},
		CreatedAt:        Timestamp{r.CreatedAt},
		RunAt:            Timestamp{r.RunAt},
		StartedAt:        timestampPtr(r.StartedAt),
		FinishedAt:       timestampPtr(r.FinishedAt),
		Backoff:          Backoff{Type: r.BackoffType, Delay: int64(r.BackoffDelayMs)},
		RemoveOnComplete: intPtr(r.RemoveOnComplete),
		RemoveOnFail:     intPtr(r.RemoveOnFail),
		LeaseOwner:       r.LeaseOwner,
	}
	if r.Result != nil {
		j.Result = json.RawMessage(r.Result)
	}
	if r.LeaseToken != nil {
		j.LeaseToken = *r.LeaseToken
	}
	if r.TimeoutMs != nil {
		j.Timeout = time.Duration(*r.TimeoutMs) * time.Millisecond
	}
	if len(r.Errors) > 2 { // "[]", the usual value, needs no decoding
		// The column is constrained to a JSON array written by this package.
		_ = json.Unmarshal(r.Errors, &j.Errors)
	}
	return j
}
