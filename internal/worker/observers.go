package worker

import "github.com/pgqueue/queue/internal/queue"

// Observer hears of what happens to jobs in this worker (results cache, events,
// metrics). Observe is called from the worker's goroutines and must not block.
type Observer interface {
	Observe(queue.Event)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(queue.Event)

// Observe calls f.
func (f ObserverFunc) Observe(e queue.Event) { f(e) }

// Observers fans events out to several observers.
func Observers(list ...Observer) Observer { return observers(list) }

type observers []Observer

func (o observers) Observe(e queue.Event) {
	for _, x := range o {
		x.Observe(e)
	}
}
