package results

import (
	"time"

	"github.com/pgqueue/queue/internal/queue"
)

// WorkerObserver publishes what happens in a worker: an event for every state a job
// enters there and for its progress, and a snapshot of each finished job for the API.
type WorkerObserver struct{ p *Publisher }

// NewWorkerObserver publishes through p.
func NewWorkerObserver(p *Publisher) *WorkerObserver { return &WorkerObserver{p: p} }

// Observe publishes one event of a worker.
func (o *WorkerObserver) Observe(e queue.Event) {
	j := e.Job
	switch e.Kind {
	case queue.EventStarted:
		o.p.Publish(JobEvent(j, queue.StateActive), nil)
	case queue.EventProgress:
		// No snapshot: the API reads a snapshot only for a job Postgres no longer has, and
		// a late progress write would overwrite the finished job's.
		o.p.Publish(ProgressEvent(j, e.Progress), nil)
	case queue.EventFinished:
		// A cancelled job's event and snapshot were published by whoever cancelled it.
		if e.State == queue.StateCancelled {
			return
		}
		var snap *queue.Job
		if queue.Finished(e.State) && !e.Stored {
			s := queue.FinishedJob(*j, queue.Outcome{OK: e.State == queue.StateCompleted, Result: e.Result,
				Message: e.Error, RetryIn: -1}, time.Now())
			snap = &s
		}
		o.p.Publish(JobEvent(j, e.State), snap)
	case queue.EventRescued:
		// A job the rescue failed gets its snapshot, as any finished job does.
		var snap *queue.Job
		if queue.Finished(j.State) {
			s := *j
			snap = &s
		}
		o.p.Publish(JobEvent(j, j.State), snap)
	case queue.EventEntered:
		o.p.Publish(JobEvent(j, e.State), nil)
	}
}
