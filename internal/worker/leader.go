package worker

import (
	"context"
	"time"

	"github.com/pgqueue/queue/internal/queue"
)

// leaseTTL is how long the maintenance lead lasts without renewal: half a job lease, so
// that a frozen leader is replaced, and the expired job leases it would have rescued are
// rescued, within QUEUE_LEASE.
func (w *Worker) leaseTTL() time.Duration { return max(w.cfg.Lease/2, 50*time.Millisecond) }

// leaderLoop competes for the maintenance lead. The leader renews its lease several
// times per TTL and, every poll interval, promotes due delayed jobs, rescues expired
// leases, applies retention, forgets dead workers and runs the kinds' periodic tasks.
// The others try again when the lease may have expired (or been given up).
func (w *Worker) leaderLoop(ctx context.Context) {
	m := queue.NewMaintenance(w.pool, w.cfg.ID, queue.MaintenanceConfig{
		LeaseTTL: w.leaseTTL(), Defaults: w.retentionDefaults(),
		EventsRetention: w.cfg.EventsRetention, Snapshots: w.cfg.Snapshots,
	})
	tick := min(w.cfg.PollInterval, w.leaseTTL()/3)
	t := time.NewTimer(0)
	defer t.Stop()
	var lastPass, lastEventsTrim time.Time
	tasksRun := map[string]time.Time{}
	failures := &throttledLog{every: 30 * time.Second}
	for {
		select {
		case <-ctx.Done():
			if m.Leading() {
				rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if err := m.Resign(rctx); err != nil {
					w.log.Warn("could not give up the maintenance lead; it expires by itself", "err", err)
				}
				cancel()
			}
			return
		case <-t.C:
		}
		wasLeading := m.Leading()
		lead, err := m.Lead(ctx)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				failures.warn(w.log, "maintenance: cannot reach the database", "err", err)
			}
		case lead && !wasLeading:
			w.log.Info("leading maintenance")
		case !lead && wasLeading:
			w.log.Warn("lost the maintenance lead")
		}
		if lead && time.Since(lastPass) >= w.cfg.PollInterval {
			lastPass = time.Now()
			if err := w.maintain(ctx, m, &lastEventsTrim, tasksRun); err != nil && ctx.Err() == nil {
				failures.warn(w.log, "maintenance pass failed", "err", err)
			}
		}
		t.Reset(tick)
	}
}

func (w *Worker) maintain(ctx context.Context, m *queue.Maintenance, lastEventsTrim *time.Time, tasksRun map[string]time.Time) error {
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
		w.log.Warn("rescued job whose lease expired", "job_id", r.ID, "type", r.Type, "queue", r.Queue, "attempt", r.AttemptsMade, "state", r.State)
		w.observe(queue.Event{Kind: queue.EventRescued, Job: r, State: r.State})
	}
	if !m.Leading() {
		return nil // the rest can wait for the next leader
	}
	if _, err := m.Trim(ctx); err != nil {
		return err
	}
	if err := m.CompactCounts(ctx); err != nil {
		return err
	}
	if _, err := m.ExpireWorkers(ctx); err != nil {
		return err
	}
	if analyzed, err := m.AnalyzeIfNeeded(ctx); err != nil {
		return err
	} else if analyzed {
		w.log.Debug("analyzed queue.jobs")
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
		if _, err := m.TrimLimits(ctx); err != nil {
			return err
		}
		*lastEventsTrim = time.Now()
	}
	for _, task := range w.kinds.Tasks() {
		if !m.Leading() || time.Since(tasksRun[task.Name]) < task.Every {
			continue
		}
		tasksRun[task.Name] = time.Now()
		if err := task.Run(ctx); err != nil {
			w.log.Warn("periodic task failed", "task", task.Name, "err", err)
		}
	}
	return nil
}
