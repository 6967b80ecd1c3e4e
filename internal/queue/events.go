package queue

import "time"

// EventKind says what happened to a job in a worker.
type EventKind int

// Event kinds.
const (
	// EventStarted: a run began; the job is active.
	EventStarted EventKind = iota + 1
	// EventProgress: the handler reported Progress.
	EventProgress
	// EventFinished: the run's outcome is persisted; State is completed, failed,
	// waiting or delayed (a retry), or cancelled.
	EventFinished
	// EventRescued: the maintenance leader rescued a job whose lease expired; Job is as
	// the rescue left it (waiting, or failed with no attempt left).
	EventRescued
	// EventEntered: a job entered State outside a run (a due delayed job promoted, a job
	// handed back at shutdown). Only Job's ID, Type and Queue are set.
	EventEntered
	// EventHeld: a limit of Queue (Limit, a Limit* name) held a claim back: jobs were
	// waiting that the limit did not let start yet. Job is nil.
	EventHeld
)

// Event is what happened to one job in a worker, for its observers (the results cache
// and event stream, metrics).
type Event struct {
	Kind     EventKind
	Job      *Job
	State    string        // EventFinished, EventEntered, EventRescued
	Progress int           // EventProgress
	Result   []byte        // EventFinished, completed: the result's JSON
	Error    string        // EventFinished, not completed: the attempt's error
	Took     time.Duration // EventFinished: the run's duration
	// Stored: EventFinished of a job removed as it finished, whose snapshot the worker
	// stored before removing it; an observer need not store it again.
	Stored bool
	Queue  string // EventHeld
	Limit  string // EventHeld
}
