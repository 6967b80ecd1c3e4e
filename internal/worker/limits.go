package worker

import (
	"context"
	"slices"
	"time"

	"github.com/pgqueue/queue/internal/queue"
)

// SettingsChannel carries the name of a queue whose limits changed.
const SettingsChannel = "queue_settings"

// limitsOf says how to claim a queue: through the limited claim when its settings have
// limits. Until the first read succeeds every queue counts as unlimited, which is safe:
// the plain claim leaves a limited queue alone.
func (w *Worker) limitsOf(name string) queue.Limits {
	if m := w.limits.Load(); m != nil {
		return (*m)[name]
	}
	return queue.Limits{}
}

// limitsLoop rereads the limits of this worker's queues every poll interval, and at once
// when a queue's settings change; a change wakes the producers, so a raised limit is
// used without waiting.
func (w *Worker) limitsLoop(ctx context.Context) {
	names := make([]string, 0, len(w.producers))
	for name := range w.producers {
		names = append(names, name)
	}
	failures := &throttledLog{every: 10 * time.Second}
	tick := time.NewTicker(w.cfg.PollInterval)
	defer tick.Stop()
	for {
		m, err := w.runner.Limits(ctx, names)
		switch {
		case err == nil:
			old := w.limits.Swap(&m)
			failures.reset()
			if old == nil || changed(*old, m) {
				w.wakeQueue("")
			}
		case ctx.Err() == nil:
			failures.warn(w.log, "could not read queue limits; keeping the last ones", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-w.limitsChanged:
		}
	}
}

func changed(a, b map[string]queue.Limits) bool {
	if len(a) != len(b) {
		return true
	}
	for k, v := range a {
		if b[k] != v {
			return true
		}
	}
	return false
}

// slotQueues names the queues of a batch whose concurrency is limited: recording its
// outcomes frees slots that other workers may be waiting for.
func (w *Worker) slotQueues(batch []finished) []string {
	var out []string
	for _, f := range batch {
		q := f.run.job.Queue
		if w.limitsOf(q).Slots && !slices.Contains(out, q) {
			out = append(out, q)
		}
	}
	return out
}
