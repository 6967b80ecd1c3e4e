package worker

import (
	"context"
	"time"

	"github.com/pgqueue/queue/internal/queue"
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

// release frees one slot of this queue in this worker.
func (p *producer) release() {
	<-p.slots
	signal(p.slotFreed)
}

// fetchLoop claims jobs while slots are free: at once after a notification or when the
// last claim filled every slot (more are likely waiting), else at the poll interval. A
// claim of a limited queue that its limits cut short waits for a notification (a finish
// that frees a slot anywhere sends one) or, when a rate held it, until the rate's
// window has room again.
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
		limited := w.limitsOf(p.queue).Limited
		claim := w.runner.Claim
		if limited {
			claim = w.runner.ClaimLimited
		}
		claimed, err := claim(claimCtx, p.queue, w.types, free, w.cfg.Lease)
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
		wait := w.cfg.PollInterval
		if limited {
			wait = p.held(ctx, wait)
		}
		poll.Reset(wait)
		select {
		case <-p.wake:
		case <-poll.C:
		case <-ctx.Done():
		}
	}
}

// held reads what cut the last claim short and returns how long to wait at most before
// claiming again: until a rate window has room, else the poll interval (a slot freed
// anywhere wakes the producer sooner).
func (p *producer) held(ctx context.Context, poll time.Duration) time.Duration {
	hold, err := p.w.runner.Hold(ctx, p.queue)
	if err != nil || hold.By == "" {
		return poll
	}
	p.w.observe(queue.Event{Kind: queue.EventHeld, Queue: p.queue, Limit: hold.By})
	if hold.By == queue.LimitRate || hold.By == queue.LimitGroupRate {
		return min(max(hold.NextStart, time.Millisecond), poll)
	}
	return poll
}
