package results

import (
	"time"

	"github.com/pgqueue/queue/internal/queue"
)

// WorkerObserver publishes what happens in a worker: an event for every state a job
// enters there, and a snapshot of each finished job (and of progress) for the API.
type WorkerObserver struct{ p *Publisher }

// NewWorkerObserver publishes through p.
func NewWorkerObserver(p *Publisher) *WorkerObserver { return &WorkerObserver{p: p} }

// JobStarted publishes the active state.
func (o *WorkerObserver) JobStarted(j *queue.Job) {
	o.p.Publish(JobEvent(j.ID, j.Type, queue.StateActive), nil)
}

// JobProgress publishes progress and refreshes the snapshot.
func (o *WorkerObserver) JobProgress(j *queue.Job, progress int) {
	snap := *j
	snap.Progress = progress
	o.p.Publish(ProgressEvent(j.ID, j.Type, progress), &snap)
}

// JobFinished publishes the state the attempt left the job in, with a snapshot when it
// is final. A cancelled job's event and snapshot were published by whoever cancelled it.
func (o *WorkerObserver) JobFinished(j *queue.Job, state string, result []byte, errMsg string, _ time.Duration) {
	if state == queue.StateCancelled {
		return
	}
	var snap *queue.Job
	if queue.Finished(state) {
		s := *j
		now := queue.Timestamp{Time: time.Now()}
		s.State, s.FinishedAt, s.LeaseOwner = state, &now, nil
		if state == queue.StateCompleted {
			s.Result, s.Progress = result, 100
		} else {
			msg := queue.StorableMessage(errMsg)
			s.Error = &msg
			s.Errors = append(append([]queue.AttemptError(nil), j.Errors...),
				queue.AttemptError{Attempt: j.AttemptsMade, Message: msg, At: now.UTC().Format(queue.TimeFormat)})
		}
		snap = &s
	}
	o.p.Publish(JobEvent(j.ID, j.Type, state), snap)
}

// JobRescued publishes the state a rescue left a job in; a job it failed also gets its
// snapshot, as any finished job does.
func (o *WorkerObserver) JobRescued(j *queue.Job) {
	var snap *queue.Job
	if queue.Finished(j.State) {
		s := *j
		snap = &s
	}
	o.p.Publish(JobEvent(j.ID, j.Type, j.State), snap)
}

// JobEntered publishes a state a job entered outside a run (promotion, hand-back).
func (o *WorkerObserver) JobEntered(id, typ, state string) {
	o.p.Publish(JobEvent(id, typ, state), nil)
}
