package worker

import (
	"time"

	"github.com/pgqueue/queue/internal/queue"
)

// Observers fans events out to several observers (the Redis publisher and metrics).
func Observers(list ...Observer) Observer { return observers(list) }

type observers []Observer

func (o observers) JobStarted(j *queue.Job) {
	for _, x := range o {
		x.JobStarted(j)
	}
}

func (o observers) JobProgress(j *queue.Job, p int) {
	for _, x := range o {
		x.JobProgress(j, p)
	}
}

func (o observers) JobFinished(j *queue.Job, state string, result []byte, errMsg string, took time.Duration) {
	for _, x := range o {
		x.JobFinished(j, state, result, errMsg, took)
	}
}

func (o observers) JobRescued(j *queue.Job) {
	for _, x := range o {
		x.JobRescued(j)
	}
}

func (o observers) JobEntered(id, typ, state string) {
	for _, x := range o {
		x.JobEntered(id, typ, state)
	}
}
