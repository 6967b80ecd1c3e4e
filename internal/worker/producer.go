package worker

import (
	"context"
	"time"
)

// producer claims and starts the jobs of one queue in this worker, within the queue's
// own slots, so a busy queue never takes the slots of another.
type producer struct {
	w         *Worker
	queue     string
	slots     chan struct{} // one token per running handler
	wake      chan struct{} // a notification or a retry: claim now
	slotFreed chan struct{}
}

func newProducer(w *Worker, q QueueConfig) *producer {
	return &producer{
		w: w, queue: q.Name,
		slots:     make(chan struct{}, q.Concurrency),
		wake:      make(chan struct{}, 1),
		slotFreed: make(chan struct{}, 1),
	}
}

// fetchLoop claims jobs while slots are free: at once after a notification or when the
// last claim filled every slot (more are likely waiting), else at the poll interval.
func (p *producer) fetchLoop(ctx context.Context) {
	w := p.w
	poll := time.NewTimer(0)
	defer poll.Stop()
	failures := &throttledLog{every: 10 * time.Second}
	backoff := 100 * time.Millisecond
	log := w.log.With("queue", p.queue)
	for ctx.Err() == nil {
		free := cap(p.slots) - len(p.slots)
		if free == 0 {
			select {
			case <-p.slotFreed:
			case <-ctx.Done():
			}
			continue
		}
		// Not the run context: a claim cut off by SIGTERM may still commit, leaving jobs
		// active under this worker that it would never run, heartbeat or hand back.
		claimCtx, cancelClaim := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.Lease)
		claimed, err := w.runner.Claim(claimCtx, p.queue, w.types, free, w.cfg.Lease)
		cancelClaim()
		if err != nil {
			if ctx.Err() == nil {
				failures.warn(log, "claim failed; retrying", "err", err, "retry_in", backoff)
				sleep(ctx, backoff)
				backoff = min(backoff*2, 5*time.Second)
			}
			continue
		}
		if backoff > 100*time.Millisecond {
			log.Info("claiming again after failures")
			failures.reset()
			backoff = 100 * time.Millisecond
		}
		for i := range claimed {
			w.start(p, claimed[i])
		}
		if len(claimed) == free {
			continue
		}
		poll.Reset(w.cfg.PollInterval)
		select {
		case <-p.wake:
		case <-poll.C:
		case <-ctx.Done():
		}
	}
}
