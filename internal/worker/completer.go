package worker

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgqueue/queue/internal/queue"
)

// finishLoop persists outcomes in batches: whatever arrived while the previous batch was
// being written goes in the next statement.
func (w *Worker) finishLoop() {
	defaults := w.retentionDefaults()
	for first := range w.outcomes {
		batch := []finished{first}
	collect:
		for len(batch) < maxFinishBatch {
			select {
			case f, ok := <-w.outcomes:
				if !ok {
					break collect
				}
				batch = append(batch, f)
			default:
				break collect
			}
		}
		w.flush(defaults, batch)
	}
}

func (w *Worker) retentionDefaults() queue.RetentionDefaults {
	return queue.RetentionDefaults{RemoveOnComplete: w.cfg.RemoveOnComplete, RemoveOnFail: w.cfg.RemoveOnFail}
}

// removeAtOnce reports whether a job's final outcome removes it (retention 0).
func removeAtOnce(job *queue.Job, o *queue.Outcome, defaults queue.RetentionDefaults) bool {
	if !o.Final() {
		return false
	}
	keep, def := job.RemoveOnFail, defaults.RemoveOnFail
	if o.OK {
		keep, def = job.RemoveOnComplete, defaults.RemoveOnComplete
	}
	if keep != nil {
		return *keep == queue.RemoveAtOnce
	}
	return def == queue.RemoveAtOnce
}

// markRemovals decides which outcomes delete their job as they are recorded. A job
// removed at once must stay readable until RESULT_TTL, so its snapshot is stored first;
// when that fails (Redis down or full) the job is kept finished, and the leader's
// retention removes it once its snapshot is stored.
func (w *Worker) markRemovals(defaults queue.RetentionDefaults, batch []finished, outcomes []queue.Outcome) {
	var snaps []queue.Job
	var idx []int
	for i, f := range batch {
		if !removeAtOnce(&f.run.job, &outcomes[i], defaults) {
			continue
		}
		if w.cfg.Snapshots == nil {
			outcomes[i].Remove = true // nowhere to keep it: removed as before
			continue
		}
		snaps = append(snaps, queue.FinishedJob(f.run.job, outcomes[i], time.Now()))
		idx = append(idx, i)
	}
	if len(snaps) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.cfg.Snapshots.Store(ctx, snaps); err != nil {
		w.log.Warn("could not store snapshots of jobs removed as they finish; they stay until retention can store them", "jobs", len(snaps), "err", err)
		return
	}
	for _, i := range idx {
		outcomes[i].Remove = true
	}
}

// flush writes one batch, retrying while the database is unreachable: an outcome is
// never dropped while its lease may still hold (a retry after the job changed hands is a
// harmless no-op, since the statement is guarded by the claim's token).
func (w *Worker) flush(defaults queue.RetentionDefaults, batch []finished) {
	outcomes := make([]queue.Outcome, len(batch))
	for i, f := range batch {
		outcomes[i] = f.outcome
	}
	w.markRemovals(defaults, batch, outcomes)
	removed := map[int64]bool{}
	for _, o := range outcomes {
		if o.Remove {
			removed[o.Seq] = true
		}
	}
	var states map[int64]string
	recorded := map[int64]string{} // outcomes written one by one after a data error
	deadline := time.Now().Add(w.cfg.Lease + w.cfg.ShutdownTimeout)
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var err error
		states, err = w.runner.FinishAndWake(ctx, defaults, outcomes, w.slotQueues(batch))
		cancel()
		if err == nil {
			break
		}
		if unstorable(err) {
			// One outcome Postgres refuses must not sink the batch: fail it alone.
			outcomes = w.isolateUnstorable(defaults, outcomes, recorded)
			continue
		}
		if time.Now().After(deadline) {
			w.log.Error("could not record job outcomes; their leases expired and they will be rescued", "jobs", len(batch), "err", err)
			states = nil
			break
		}
		w.log.Warn("recording job outcomes failed; retrying", "jobs", len(batch), "err", err)
		time.Sleep(min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second))
	}
	if len(recorded) > 0 {
		if states == nil {
			states = map[int64]string{}
		}
		maps.Copy(states, recorded)
	}
	w.mu.Lock()
	for _, f := range batch {
		w.forgetLocked(f.run)
	}
	w.mu.Unlock()
	// Slots held until the outcome was recorded are freed together, then their queues
	// claim once for all of them (the limit has room now: no need to wait for the
	// notification to come back).
	var freed []*producer
	for _, f := range batch {
		if p := f.run.producer; f.run.slotUntilRecorded {
			<-p.slots
			if !slices.Contains(freed, p) {
				freed = append(freed, p)
			}
		}
	}
	for _, p := range freed {
		signal(p.slotFreed)
		signal(p.wake)
	}
	for _, f := range batch {
		// Stored only when a snapshot store took it (without one, Remove means "no
		// snapshot anywhere", and observers should keep theirs).
		w.report(f, states, removed[f.outcome.Seq] && w.cfg.Snapshots != nil)
	}
}

func (w *Worker) report(f finished, states map[int64]string, stored bool) {
	job, o := &f.run.job, f.outcome
	took := time.Since(f.run.started)
	log := w.jobLog(job)
	state, ok := states[o.Seq]
	switch {
	case !ok:
		log.Warn("job outcome not recorded: this run's claim no longer holds the job (its lease expired and it was rescued)", "ok", o.OK)
		return
	case state == queue.StateCompleted:
		log.Info("job completed", "took", took)
	case state == queue.StateFailed:
		log.Error("job failed", "err", o.Message, "took", took)
	case state == queue.StateCancelled:
		log.Info("cancelled job stopped", "took", took)
	default:
		log.Warn("job attempt failed; will retry", "err", o.Message, "retry_in", o.RetryIn, "took", took)
		if state == queue.StateWaiting {
			signal(f.run.producer.wake)
		}
	}
	w.observe(queue.Event{Kind: queue.EventFinished, Job: job, State: state, Result: o.Result, Error: o.Message, Took: took,
		Stored: stored && queue.Finished(state)})
}

// unstorable reports a data error (SQLSTATE class 22): retrying the same values cannot
// succeed.
func unstorable(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && strings.HasPrefix(pg.Code, "22")
}

// isolateUnstorable writes the outcomes one by one and returns those still to write: an
// outcome Postgres refuses becomes a permanent failure of its job, without result.
func (w *Worker) isolateUnstorable(defaults queue.RetentionDefaults, outcomes []queue.Outcome, recorded map[int64]string) []queue.Outcome {
	var rest []queue.Outcome
	for _, o := range outcomes {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		states, err := w.runner.Finish(ctx, defaults, []queue.Outcome{o})
		cancel()
		switch {
		case err == nil:
			maps.Copy(recorded, states)
			continue
		case unstorable(err):
			w.log.Error("job outcome cannot be stored; failing the job", "seq", o.Seq, "err", err)
			rest = append(rest, queue.Outcome{Claim: o.Claim, Attempt: o.Attempt, RetryIn: -1,
				Message: "the job's outcome could not be stored: " + queue.StorableMessage(err.Error())})
		default:
			rest = append(rest, o)
		}
	}
	return rest
}
