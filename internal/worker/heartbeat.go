package worker

import (
	"context"
	"os"
	"time"

	"github.com/pgqueue/queue/internal/queue"
)

// heartbeatInterval is how often a worker extends its leases and tells the registry of
// live workers that it is alive: three times per lease.
func (w *Worker) heartbeatInterval() time.Duration {
	return max(w.cfg.Lease/3, 10*time.Millisecond)
}

// heartbeatLoop extends the leases of running jobs in one statement per tick, stops
// handlers whose job was cancelled or whose lease was lost (should a notification be
// missed), and keeps this worker in the registry of live workers.
func (w *Worker) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(w.heartbeatInterval())
	defer t.Stop()
	failures := &throttledLog{every: 10 * time.Second}
	w.seen(ctx, 0, failures)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		runs := w.snapshot()
		w.seen(ctx, len(runs), failures)
		if len(runs) == 0 {
			continue
		}
		claims := make([]queue.Claim, len(runs))
		for i, r := range runs {
			claims[i] = r.claim()
		}
		hbCtx, cancel := context.WithTimeout(ctx, w.cfg.Lease/2)
		states, err := w.runner.Heartbeat(hbCtx, claims, w.cfg.Lease)
		cancel()
		if err != nil {
			failures.warn(w.log, "heartbeat failed; leases expire unless the next one succeeds", "jobs", len(claims), "err", err)
			continue
		}
		for _, r := range runs {
			switch state, ok := states[r.job.Seq]; {
			case !ok:
				r.cancel(ErrLeaseLost)
			case state == queue.StateCancelled:
				r.cancel(ErrJobCancelled)
			}
		}
	}
}

// seen refreshes this worker's row in the registry of live workers.
func (w *Worker) seen(ctx context.Context, running int, failures *throttledLog) {
	host, _ := os.Hostname()
	queues := make(map[string]int, len(w.cfg.Queues))
	for _, q := range w.cfg.Queues {
		queues[q.Name] = q.Concurrency
	}
	sctx, cancel := context.WithTimeout(ctx, w.cfg.Lease/2)
	defer cancel()
	err := w.runner.Seen(sctx, queue.WorkerInfo{Host: host, PID: os.Getpid(), Queues: queues, Types: w.types, Running: running},
		3*w.heartbeatInterval())
	if err != nil && ctx.Err() == nil {
		failures.warn(w.log, "could not update the registry of live workers", "err", err)
	}
}

// progressLoop writes the latest progress of running jobs, coalesced, in one statement.
func (w *Worker) progressLoop(ctx context.Context) {
	t := time.NewTicker(progressFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed := map[queue.Claim]int{}
		for _, r := range w.snapshot() {
			if p := r.progress.Swap(-1); p >= 0 {
				changed[r.claim()] = int(p)
			}
		}
		if len(changed) == 0 {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := w.runner.SetProgress(pctx, changed); err != nil {
			w.log.Warn("writing progress failed", "err", err)
		}
		cancel()
	}
}
