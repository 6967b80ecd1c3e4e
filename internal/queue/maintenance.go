package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgqueue/queue/internal/store"
)

// leaderName is the lease row of the maintenance leader.
const leaderName = "maintenance"

// maintenanceBatch bounds each statement of a pass, so none holds many row locks.
const maintenanceBatch = 1000

// Snapshots is where finished jobs are kept for reading after retention removed them
// (Redis). Retention removes a job only once its snapshot is stored, or once ttl has
// passed since it finished (the snapshot would have expired by then anyway).
type Snapshots interface {
	// Missing returns the ids among ids that have no stored snapshot. An error means
	// the store cannot tell (it is down), and nothing is removed.
	Missing(ctx context.Context, ids []string) ([]string, error)
	// Store stores the snapshots of finished jobs; they expire ttl after finishing.
	Store(ctx context.Context, jobs []Job) error
	// TTL is how long a snapshot lives after its job finished.
	TTL() time.Duration
}

// Maintenance is the leader's side of the engine: promotion of due delayed jobs, rescue
// of expired leases, retention of finished jobs and audit rows, forgetting dead workers.
// Only the worker that holds the leader lease runs it. The lease is a row with an
// expiry that the leader renews every pass; a leader that freezes (SIGSTOP, a network
// cut that leaves its connection open) loses it once it expires, and every statement
// that changes jobs checks the lease in itself, so a leader that wakes up after losing it
// changes nothing.
type Maintenance struct {
	pool            *pgxpool.Pool
	worker          string
	ttl             time.Duration
	defaults        RetentionDefaults
	eventsRetention time.Duration
	snapshots       Snapshots
	trimCursors     map[string]trimCursor
	trimPasses      int

	// Lease as last seen: its expiry by the database clock, and our monotonic clock's
	// estimate of it (the lease is certainly gone after localExpiry).
	leading     bool
	localExpiry time.Time
}

// MaintenanceConfig tunes the maintenance of one worker.
type MaintenanceConfig struct {
	// LeaseTTL is how long a lead lasts without renewal; another worker takes over
	// after it. Renew well within it.
	LeaseTTL        time.Duration
	Defaults        RetentionDefaults
	EventsRetention time.Duration
	// Snapshots, when set, makes retention wait for each job's snapshot.
	Snapshots Snapshots
}

// NewMaintenance prepares (but does not lead) the maintenance of one worker.
func NewMaintenance(pool *pgxpool.Pool, worker string, cfg MaintenanceConfig) *Maintenance {
	return &Maintenance{pool: pool, worker: worker, ttl: cfg.LeaseTTL, defaults: cfg.Defaults,
		eventsRetention: cfg.EventsRetention, snapshots: cfg.Snapshots}
}

// Lead takes the lease when it is free or expired, or renews it when this worker holds
// it, and reports whether this worker leads now.
func (m *Maintenance) Lead(ctx context.Context) (bool, error) {
	sent := time.Now()
	r, err := store.New(m.pool).LeaderElect(ctx, store.LeaderElectParams{Name: leaderName, Holder: m.worker, TtlMs: m.ttl.Milliseconds()})
	if errors.Is(err, pgx.ErrNoRows) {
		// Another worker took the lease in a transaction our statement's snapshot does
		// not see: it leads.
		m.leading = false
		return false, nil
	}
	if err != nil {
		m.leading = false
		return false, fmt.Errorf("elect maintenance leader: %w", err)
	}
	m.leading = r.Holder == m.worker && r.ExpiresAt.After(r.DbNow)
	if m.leading {
		// The lease was granted no earlier than we sent the statement.
		m.localExpiry = sent.Add(r.ExpiresAt.Sub(r.DbNow))
	}
	return m.leading, nil
}

// Leading reports whether this worker's lease is certainly still valid by its own
// monotonic clock. It is cheap; statements check the lease in the database anyway.
func (m *Maintenance) Leading() bool {
	return m.leading && time.Now().Before(m.localExpiry)
}

// Resign gives the lease up, so another worker need not wait for it to expire.
func (m *Maintenance) Resign(ctx context.Context) error {
	m.leading = false
	if err := store.New(m.pool).LeaderResign(ctx, store.LeaderResignParams{Name: leaderName, Holder: m.worker}); err != nil {
		return fmt.Errorf("resign maintenance lead: %w", err)
	}
	return nil
}

// Entered is a job that entered a state in a background pass (for events).
type Entered struct {
	ID    string
	Type  string
	Queue string
	State string
}

// Promote makes due delayed jobs waiting, in batches; now nil means the database clock.
func (m *Maintenance) Promote(ctx context.Context, now *time.Time) ([]Entered, error) {
	var out []Entered
	for {
		rows, err := store.New(m.pool).JobPromoteDue(ctx, store.JobPromoteDueParams{Now: now, Max: maintenanceBatch, Worker: m.worker})
		if err != nil {
			return out, fmt.Errorf("promote delayed jobs: %w", err)
		}
		for _, r := range rows {
			out = append(out, Entered{ID: r.ID, Type: r.Type, Queue: r.Queue, State: StateWaiting})
		}
		if len(rows) < maintenanceBatch {
			return out, nil
		}
	}
}

// Rescue returns jobs with expired leases to waiting (or fails them when no attempt is
// left; a cancelled one only loses its lease) and returns them as they are now; now nil
// means the database clock.
func (m *Maintenance) Rescue(ctx context.Context, now *time.Time) ([]Job, error) {
	var out []Job
	for {
		rows, err := store.New(m.pool).JobRescueExpired(ctx, store.JobRescueExpiredParams{
			Now: now, Max: maintenanceBatch, DefaultRemoveOnFail: int32(m.defaults.RemoveOnFail), Worker: m.worker,
		})
		if err != nil {
			return out, fmt.Errorf("rescue expired jobs: %w", err)
		}
		for _, r := range rows {
			out = append(out, jobFromRow(store.QueueJob(r)))
		}
		if len(rows) < maintenanceBatch {
			return out, nil
		}
	}
}

// trimCursor is where the next retention pass of one state starts: every older row was
// removed or is kept for good (retention false), so it is not read again.
type trimCursor struct {
	finishedAt time.Time
	seq        int64
}

// Retention passes re-read rows finished in the last trimMargin (a finishing statement
// may commit after a pass with a finished_at just before the cursor), and every
// trimFullEvery passes start from the oldest row, to catch any such straggler.
const (
	trimMargin    = 200 * time.Millisecond
	trimFullEvery = 60
)

// Trim applies retention to finished jobs (keep last N, remove at once) and returns how
// many rows it removed. It reads only rows that may go: from a per-state cursor kept
// between passes, so jobs kept for good, and the index entries of rows removed before,
// are not walked again every pass. A doomed job whose snapshot is not stored yet gets
// it stored first; when the snapshot store is down, the job stays for a later pass.
func (m *Maintenance) Trim(ctx context.Context) (int64, error) {
	if m.trimCursors == nil || m.trimPasses%trimFullEvery == 0 {
		m.trimCursors = map[string]trimCursor{}
	}
	m.trimPasses++
	var total int64
	for _, state := range []string{StateCompleted, StateFailed, StateCancelled} {
		n, err := m.trimState(ctx, state)
		total += n
		if err != nil {
			delete(m.trimCursors, state)
			return total, err
		}
	}
	return total, nil
}

func (m *Maintenance) trimState(ctx context.Context, state string) (int64, error) {
	after := m.trimCursors[state] // zero: from the start
	var resume *trimCursor        // just before the oldest row that may still go
	var last trimCursor
	var dbNow time.Time
	var total int64
	q := store.New(m.pool)
	for {
		rows, err := q.JobTrimCandidates(ctx, store.JobTrimCandidatesParams{
			State: state, Max: maintenanceBatch, AfterFinishedAt: after.finishedAt, AfterSeq: after.seq,
			DefaultRemoveOnComplete: int32(m.defaults.RemoveOnComplete),
			DefaultRemoveOnFail:     int32(m.defaults.RemoveOnFail),
		})
		if err != nil {
			return total, fmt.Errorf("trim %s jobs: %w", state, err)
		}
		if len(rows) == 0 {
			break
		}
		dbNow = rows[0].DbNow
		var doomed []store.JobTrimCandidatesRow
		for _, r := range rows {
			if r.Doomed {
				doomed = append(doomed, r)
			}
		}
		kept, err := m.removeDoomed(ctx, state, doomed, dbNow)
		total += int64(len(doomed) - len(kept))
		if err != nil {
			return total, err
		}
		if resume == nil {
			// The first row of this batch that stays and may go later: retention false
			// (-1) stays for good, doomed rows the snapshot store refused go later.
			for _, r := range rows {
				if (!r.Doomed && r.Keep != RetainForever) || kept[r.Seq] {
					resume = &trimCursor{finishedAt: r.FinishedAt, seq: r.Seq - 1}
					break
				}
			}
		}
		tail := rows[len(rows)-1]
		last = trimCursor{finishedAt: tail.FinishedAt, seq: tail.Seq}
		if len(rows) < maintenanceBatch {
			break
		}
		after = last
	}
	cursor := m.trimCursors[state]
	switch {
	case resume != nil:
		cursor = *resume
	case last.seq != 0:
		cursor = last
	}
	if limit := dbNow.Add(-trimMargin); !dbNow.IsZero() && cursor.finishedAt.After(limit) {
		cursor = trimCursor{finishedAt: limit}
	}
	m.trimCursors[state] = cursor
	return total, nil
}

// removeDoomed deletes doomed rows whose snapshot is stored (storing it first where it
// is missing), and returns the seqs of those it had to keep.
func (m *Maintenance) removeDoomed(ctx context.Context, state string, doomed []store.JobTrimCandidatesRow, dbNow time.Time) (map[int64]bool, error) {
	kept := map[int64]bool{}
	if len(doomed) == 0 {
		return kept, nil
	}
	ready := make([]int64, 0, len(doomed))
	if m.snapshots == nil {
		for _, r := range doomed {
			ready = append(ready, r.Seq)
		}
	} else {
		var err error
		if ready, err = m.ensureSnapshots(ctx, doomed, dbNow); err != nil {
			return kept, err
		}
	}
	deleted := map[int64]bool{}
	if len(ready) > 0 {
		seqs, err := store.New(m.pool).JobTrimDelete(ctx, store.JobTrimDeleteParams{Seqs: ready, State: state, Worker: m.worker})
		if err != nil {
			return kept, fmt.Errorf("trim %s jobs: %w", state, err)
		}
		for _, s := range seqs {
			deleted[s] = true
		}
	}
	for _, r := range doomed {
		if !deleted[r.Seq] {
			kept[r.Seq] = true
		}
	}
	return kept, nil
}

// ensureSnapshots returns the seqs of doomed rows that may go: those finished longer
// than the snapshot TTL ago, and those whose snapshot is stored (it stores the missing
// ones from the rows). When the store is down, only the old ones.
func (m *Maintenance) ensureSnapshots(ctx context.Context, doomed []store.JobTrimCandidatesRow, dbNow time.Time) ([]int64, error) {
	var ready []int64
	var ids []string
	seqOf := map[string]int64{}
	for _, r := range doomed {
		if r.FinishedAt.Before(dbNow.Add(-m.snapshots.TTL())) {
			ready = append(ready, r.Seq)
			continue
		}
		ids = append(ids, r.ID)
		seqOf[r.ID] = r.Seq
	}
	if len(ids) == 0 {
		return ready, nil
	}
	missing, err := m.snapshots.Missing(ctx, ids)
	if err != nil {
		return ready, nil // the store is down: these wait for a later pass
	}
	absent := map[string]bool{}
	for _, id := range missing {
		absent[id] = true
	}
	if len(missing) > 0 {
		seqs := make([]int64, len(missing))
		for i, id := range missing {
			seqs[i] = seqOf[id]
		}
		rows, err := store.New(m.pool).JobGetManyBySeq(ctx, seqs)
		if err != nil {
			return nil, fmt.Errorf("read jobs to snapshot: %w", err)
		}
		jobs := make([]Job, len(rows))
		for i, r := range rows {
			jobs[i] = jobFromRow(r)
		}
		if err := m.snapshots.Store(ctx, jobs); err != nil {
			return ready, nil // the store refuses (full, down): these wait
		}
		clear(absent)
	}
	for _, id := range ids {
		if !absent[id] {
			ready = append(ready, seqOf[id])
		}
	}
	return ready, nil
}

// TrimLimits deletes what flow control no longer needs: starts older than every rate
// window of their queue, and fair queues' round-robin positions a day old. Both tables
// stay small (a row per claim within a window, a row per recently served group).
func (m *Maintenance) TrimLimits(ctx context.Context) (int64, error) {
	q := store.New(m.pool)
	starts, err := q.QueueStartsTrim(ctx)
	if err != nil {
		return 0, fmt.Errorf("trim queue starts: %w", err)
	}
	groups, err := q.QueueGroupsTrim(ctx)
	if err != nil {
		return starts, fmt.Errorf("trim queue groups: %w", err)
	}
	return starts + groups, nil
}

// TrimEvents deletes audit rows older than the events retention, in batches.
func (m *Maintenance) TrimEvents(ctx context.Context) (int64, error) {
	var total int64
	for {
		n, err := store.New(m.pool).JobEventsTrim(ctx, store.JobEventsTrimParams{
			RetentionMs: m.eventsRetention.Milliseconds(), Max: 5 * maintenanceBatch,
		})
		if err != nil {
			return total, fmt.Errorf("trim audit rows: %w", err)
		}
		total += n
		if n < 5*maintenanceBatch {
			return total, nil
		}
	}
}

// CompactCounts folds the per-statement count deltas into one row per queue, state and
// type.
func (m *Maintenance) CompactCounts(ctx context.Context) error {
	if err := store.New(m.pool).JobCountsCompact(ctx); err != nil {
		return fmt.Errorf("compact job counts: %w", err)
	}
	return nil
}

// ExpireWorkers forgets workers that stopped heartbeating.
func (m *Maintenance) ExpireWorkers(ctx context.Context) (int64, error) {
	n, err := store.New(m.pool).WorkersExpire(ctx)
	if err != nil {
		return 0, fmt.Errorf("expire workers: %w", err)
	}
	return n, nil
}
