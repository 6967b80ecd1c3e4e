package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/pgqueue/queue/internal/store"
)

// Counts are the jobs in each state.
type Counts struct {
	Waiting   int64 `json:"waiting"`
	Active    int64 `json:"active"`
	Completed int64 `json:"completed"`
	Failed    int64 `json:"failed"`
	Delayed   int64 `json:"delayed"`
	Cancelled int64 `json:"cancelled"`
}

// ByState maps each state to its count.
func (c Counts) ByState() map[string]int64 {
	return map[string]int64{
		StateWaiting: c.Waiting, StateActive: c.Active, StateCompleted: c.Completed,
		StateFailed: c.Failed, StateDelayed: c.Delayed, StateCancelled: c.Cancelled,
	}
}

// NonZero maps each state that has jobs to its count.
func (c Counts) NonZero() map[string]int64 {
	m := c.ByState()
	maps.DeleteFunc(m, func(_ string, n int64) bool { return n == 0 })
	return m
}

// TypesByState maps each type to its non-zero counts by state.
func (s Stats) TypesByState() map[string]map[string]int64 {
	out := make(map[string]map[string]int64, len(s.ByType))
	for t, c := range s.ByType {
		out[t] = c.NonZero()
	}
	return out
}

func (c *Counts) add(state string, n int64) {
	switch state {
	case StateWaiting:
		c.Waiting += n
	case StateActive:
		c.Active += n
	case StateCompleted:
		c.Completed += n
	case StateFailed:
		c.Failed += n
	case StateDelayed:
		c.Delayed += n
	case StateCancelled:
		c.Cancelled += n
	}
}

// Stats are the exact counts of existing jobs, overall, by type and by queue, and the
// global pause switch.
type Stats struct {
	Counts
	Paused  bool              `json:"paused"`
	ByType  map[string]Counts `json:"byType"`
	ByQueue map[string]Counts `json:"byQueue"`
}

// countRow is one (queue, state, type) count.
type countRow = store.JobCountsRow

func addTo(m map[string]Counts, key, state string, n int64) {
	c := m[key]
	c.add(state, n)
	m[key] = c
}

// Stats counts the jobs that exist now.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	q := store.New(c.pool)
	rows, err := q.JobCounts(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("count jobs: %w", err)
	}
	s := Stats{ByType: map[string]Counts{}, ByQueue: map[string]Counts{}}
	for _, r := range rows {
		s.add(r.State, r.Jobs)
		addTo(s.ByType, r.Type, r.State, r.Jobs)
		addTo(s.ByQueue, r.Queue, r.State, r.Jobs)
	}
	if s.Paused, err = q.QueuePaused(ctx); err != nil {
		return Stats{}, fmt.Errorf("read pause state: %w", err)
	}
	return s, nil
}

// Queue is one queue as the API shows it. The limit fields are settings of flow control;
// a queue without them is unlimited (null).
type Queue struct {
	Name             string `json:"name"`
	Paused           bool   `json:"paused"`
	Concurrency      *int   `json:"concurrency"`
	Rate             *Rate  `json:"rate"`
	GroupConcurrency *int   `json:"groupConcurrency"`
	GroupRate        *Rate  `json:"groupRate"`
	Fair             bool   `json:"fair"`
	// HeldBy names the limit that held the queue's last claim back (concurrency, rate,
	// groupConcurrency, groupRate), null when it was not held; HeldSince is when that
	// began, NextStartAt when a full rate window has room again.
	HeldBy      *string    `json:"heldBy"`
	HeldSince   *Timestamp `json:"heldSince"`
	NextStartAt *Timestamp `json:"nextStartAt"`
	Counts      Counts     `json:"counts"`
	// Workers counts the live workers that serve this queue.
	Workers int `json:"workers"`
	// UnhandledTypes are types with waiting or delayed jobs in this queue that no live
	// worker serving it has a handler for: those jobs wait until one starts.
	UnhandledTypes []string `json:"unhandledTypes"`
}

// Rate is a start-rate limit: at most Limit starts in any Period milliseconds.
type Rate struct {
	Limit  int   `json:"limit"`
	Period int64 `json:"period"`
}

// Worker is a live worker process as the API shows it.
type Worker struct {
	ID         string         `json:"id"`
	Host       string         `json:"host"`
	PID        int            `json:"pid"`
	Queues     map[string]int `json:"queues"`
	Types      []string       `json:"types"`
	Running    int            `json:"running"`
	StartedAt  Timestamp      `json:"startedAt"`
	LastSeenAt Timestamp      `json:"lastSeenAt"`
}

// Workers lists the live workers (seen within their last three heartbeats).
func (c *Client) Workers(ctx context.Context) ([]Worker, error) {
	rows, err := store.New(c.pool).WorkerList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	out := make([]Worker, len(rows))
	for i, r := range rows {
		w := Worker{ID: r.ID, Host: r.Host, PID: int(r.Pid), Types: r.Types, Running: int(r.Running),
			StartedAt: Timestamp{r.StartedAt}, LastSeenAt: Timestamp{r.LastSeenAt}, Queues: map[string]int{}}
		if err := json.Unmarshal(r.Queues, &w.Queues); err != nil {
			return nil, fmt.Errorf("worker %s: queues: %w", r.ID, err)
		}
		out[i] = w
	}
	return out, nil
}

// Queues lists every queue that has jobs, settings, or a live worker, by name.
func (c *Client) Queues(ctx context.Context) ([]Queue, error) {
	q := store.New(c.pool)
	counts, err := q.JobCounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	settings, err := q.QueueSettings(ctx)
	if err != nil {
		return nil, fmt.Errorf("read queue settings: %w", err)
	}
	workers, err := c.Workers(ctx)
	if err != nil {
		return nil, err
	}
	return assembleQueues(counts, settings, workers), nil
}

// ErrQueueNotFound means no queue of that name has jobs, settings or a live worker.
var ErrQueueNotFound = fmt.Errorf("queue not found: %w", ErrNotFound)

// Queue returns one queue; ErrQueueNotFound when it has no jobs, settings or worker.
func (c *Client) Queue(ctx context.Context, name string) (Queue, error) {
	all, err := c.Queues(ctx)
	if err != nil {
		return Queue{}, err
	}
	for _, q := range all {
		if q.Name == name {
			return q, nil
		}
	}
	return Queue{}, ErrQueueNotFound
}

func assembleQueues(counts []countRow, settings []store.QueueQueue, workers []Worker) []Queue {
	byName := map[string]*Queue{}
	get := func(name string) *Queue {
		if q, ok := byName[name]; ok {
			return q
		}
		q := &Queue{Name: name, UnhandledTypes: []string{}}
		byName[name] = q
		return q
	}
	// Types each queue's live workers handle.
	handled := map[string]map[string]bool{}
	for _, w := range workers {
		for name := range w.Queues {
			q := get(name)
			q.Workers++
			if handled[name] == nil {
				handled[name] = map[string]bool{}
			}
			for _, t := range w.Types {
				handled[name][t] = true
			}
		}
	}
	unhandled := map[string]map[string]bool{}
	for _, r := range counts {
		q := get(r.Queue)
		q.Counts.add(r.State, r.Jobs)
		if (r.State == StateWaiting || r.State == StateDelayed) && r.Jobs > 0 && !handled[r.Queue][r.Type] {
			if unhandled[r.Queue] == nil {
				unhandled[r.Queue] = map[string]bool{}
			}
			unhandled[r.Queue][r.Type] = true
		}
	}
	for _, s := range settings {
		get(s.Name).applySettings(s)
	}
	for name, types := range unhandled {
		byName[name].UnhandledTypes = slices.Sorted(maps.Keys(types))
	}
	out := make([]Queue, 0, len(byName))
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		out = append(out, *byName[name])
	}
	return out
}
