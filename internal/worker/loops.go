package worker

import (
	"context"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgqueue/queue/internal/queue"
)

// CancelChannel carries the seq of a cancelled active job to the worker that runs it.
const CancelChannel = "queue_cancel"

// listen holds one dedicated connection with LISTEN on the jobs and cancel channels
// (a pooled connection could be handed to someone else), and reconnects with backoff.
func (w *Worker) listen(ctx context.Context) {
	backoff := 100 * time.Millisecond
	failures := &throttledLog{every: 10 * time.Second}
	for ctx.Err() == nil {
		began := time.Now()
		err := w.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > 10*time.Second {
			backoff = 100 * time.Millisecond // it was up for a while: a fresh outage
		}
		failures.warn(w.log, "notification listener lost its connection; polling until it is back", "err", err, "retry_in", backoff)
		sleep(ctx, backoff)
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (w *Worker) listenOnce(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, w.pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, ch := range []string{queue.NotifyChannel, CancelChannel} {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return err
		}
	}
	// Jobs may have arrived while we were not listening.
	signal(w.wake)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		switch n.Channel {
		case queue.NotifyChannel:
			signal(w.wake)
		case CancelChannel:
			if seq, err := strconv.ParseInt(n.Payload, 10, 64); err == nil {
				if r := w.lookup(seq); r != nil {
					r.cancel(ErrJobCancelled)
				}
			}
		}
	}
}

// heartbeatLoop extends the leases of running jobs in one statement per tick, and stops
// handlers whose job was cancelled or rescued away (should a notification be missed).
func (w *Worker) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(max(w.cfg.Lease/3, 10*time.Millisecond))
	defer t.Stop()
	failures := &throttledLog{every: 10 * time.Second}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		runs := w.snapshot()
		if len(runs) == 0 {
			continue
		}
		seqs := make([]int64, len(runs))
		for i, r := range runs {
			seqs[i] = r.job.Seq
		}
		hbCtx, cancel := context.WithTimeout(ctx, w.cfg.Lease/2)
		states, err := w.client.Heartbeat(hbCtx, w.cfg.ID, seqs, w.cfg.Lease)
		cancel()
		if err != nil {
			failures.warn(w.log, "heartbeat failed; leases expire unless the next one succeeds", "jobs", len(seqs), "err", err)
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
		changed := map[int64]int{}
		for _, r := range w.snapshot() {
			if p := r.progress.Swap(-1); p >= 0 {
				changed[r.job.Seq] = int(p)
			}
		}
		if len(changed) == 0 {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := w.client.SetProgress(pctx, w.cfg.ID, changed); err != nil {
			w.log.Warn("writing progress failed", "err", err)
		}
		cancel()
	}
}

// maintenanceLoop competes for the maintenance lead every poll interval; the leader
// promotes due delayed jobs, rescues expired leases and applies retention.
func (w *Worker) maintenanceLoop(ctx context.Context) {
	m := w.client.NewMaintenance(w.cfg.ID,
		queue.RetentionDefaults{RemoveOnComplete: w.cfg.RemoveOnComplete, RemoveOnFail: w.cfg.RemoveOnFail},
		w.cfg.EventsRetention)
	defer m.Resign(context.Background(), false)
	t := time.NewTicker(w.cfg.PollInterval)
	defer t.Stop()
	var lastEventsTrim time.Time
	failures := &throttledLog{every: 30 * time.Second}
	for {
		if lead, err := m.TryLead(ctx); err != nil {
			if ctx.Err() == nil {
				failures.warn(w.log, "maintenance: cannot reach the database", "err", err)
			}
		} else if lead {
			if err := w.maintain(ctx, m, &lastEventsTrim); err != nil && ctx.Err() == nil {
				failures.warn(w.log, "maintenance pass failed; giving up the lead", "err", err)
				m.Resign(ctx, true)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *Worker) maintain(ctx context.Context, m *queue.Maintenance, lastEventsTrim *time.Time) error {
	if promoted, err := m.Promote(ctx, nil); err != nil {
		return err
	} else if len(promoted) > 0 {
		w.log.Debug("promoted delayed jobs", "jobs", len(promoted))
		w.entered(promoted)
	}
	rescued, err := m.Rescue(ctx, nil)
	if err != nil {
		return err
	}
	for i := range rescued {
		r := &rescued[i]
		if r.State == queue.StateCancelled {
			continue // its lease was only dropped
		}
		w.log.Warn("rescued job whose lease expired", "job_id", r.ID, "type", r.Type, "attempt", r.AttemptsMade, "state", r.State)
		if w.cfg.Observer != nil {
			w.cfg.Observer.JobRescued(r)
		}
	}
	if _, err := m.Trim(ctx); err != nil {
		return err
	}
	if err := m.CompactCounts(ctx); err != nil {
		return err
	}
	if vacuumed, err := m.VacuumIfNeeded(ctx); err != nil {
		return err
	} else if len(vacuumed) > 0 {
		w.log.Debug("vacuumed", "tables", vacuumed)
	}
	if time.Since(*lastEventsTrim) >= eventsTrimInterval {
		if _, err := m.TrimEvents(ctx); err != nil {
			return err
		}
		*lastEventsTrim = time.Now()
	}
	return nil
}
