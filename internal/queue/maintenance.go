package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgqueue/queue/db"
)

// maintenanceLockKey is the advisory lock whose holder is the one maintenance leader.
const maintenanceLockKey int64 = 0x7175657565_01 // "queue" + 1

// maintenanceBatch bounds each statement of a pass, so none holds many row locks.
const maintenanceBatch = 1000

// Maintenance is the leader's side of the engine: promotion of due delayed jobs, rescue
// of expired leases, retention of finished jobs and audit rows. Only the worker that
// holds the advisory lock runs it; the lock lives on a connection kept for that purpose,
// so it is released by Postgres if the worker dies.
type Maintenance struct {
	client          *Client
	worker          string
	defaults        RetentionDefaults
	eventsRetention time.Duration
	conn            *pgxpool.Conn
	trimCursors     map[string]trimCursor
	trimPasses      int
}

// NewMaintenance prepares (but does not lead) the maintenance of one worker.
func (c *Client) NewMaintenance(worker string, defaults RetentionDefaults, eventsRetention time.Duration) *Maintenance {
	return &Maintenance{client: c, worker: worker, defaults: defaults, eventsRetention: eventsRetention}
}

// TryLead takes the lead when nobody holds it.
func (m *Maintenance) TryLead(ctx context.Context) (bool, error) {
	if m.conn != nil {
		return true, nil
	}
	conn, err := m.client.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	ok, err := db.New(conn).MaintenanceTryLead(ctx, maintenanceLockKey)
	if err != nil || !ok {
		conn.Release()
		return false, err
	}
	m.conn = conn
	return true, nil
}

// Resign gives up the lead. After an error on the leader's connection, the connection is
// closed instead, which frees the lock whatever state it was in.
func (m *Maintenance) Resign(ctx context.Context, broken bool) {
	if m.conn == nil {
		return
	}
	if broken {
		_ = m.conn.Conn().Close(ctx)
	} else if err := db.New(m.conn).MaintenanceUnlock(ctx, maintenanceLockKey); err != nil {
		_ = m.conn.Conn().Close(ctx)
	}
	m.conn.Release()
	m.conn = nil
}

// Entered is a job that entered a state in a background pass (for events).
type Entered struct {
	ID    string
	Type  string
	State string
}

// Promote makes due delayed jobs waiting, in batches; now nil means the database clock.
func (m *Maintenance) Promote(ctx context.Context, now *time.Time) ([]Entered, error) {
	var out []Entered
	for {
		rows, err := db.New(m.conn).JobPromoteDue(ctx, db.JobPromoteDueParams{Now: now, Max: maintenanceBatch, Worker: m.worker})
		if err != nil {
			return out, fmt.Errorf("promote delayed jobs: %w", err)
		}
		for _, r := range rows {
			out = append(out, Entered{ID: r.ID, Type: r.Type, State: StateWaiting})
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
		rows, err := db.New(m.conn).JobRescueExpired(ctx, db.JobRescueExpiredParams{
			Now: now, Max: maintenanceBatch, DefaultRemoveOnFail: int32(m.defaults.RemoveOnFail), Worker: m.worker,
		})
		if err != nil {
			return out, fmt.Errorf("rescue expired jobs: %w", err)
		}
		for _, r := range rows {
			out = append(out, jobFromRow(db.QueueJob(r)))
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
// are not walked again every pass.
func (m *Maintenance) Trim(ctx context.Context) (int64, error) {
	if m.trimCursors == nil || m.trimPasses%trimFullEvery == 0 {
		m.trimCursors = map[string]trimCursor{}
	}
	m.trimPasses++
	epoch := time.Unix(0, 0)
	var total int64
	for _, state := range []string{StateCompleted, StateFailed, StateCancelled} {
		after, ok := m.trimCursors[state]
		if !ok {
			after = trimCursor{finishedAt: epoch}
		}
		var next *trimCursor
		var last trimCursor
		var dbNow time.Time
		for {
			r, err := db.New(m.conn).JobTrimFinished(ctx, db.JobTrimFinishedParams{
				State: state, Max: maintenanceBatch, AfterFinishedAt: after.finishedAt, AfterSeq: after.seq,
				DefaultRemoveOnComplete: int32(m.defaults.RemoveOnComplete),
				DefaultRemoveOnFail:     int32(m.defaults.RemoveOnFail),
			})
			if err != nil {
				delete(m.trimCursors, state)
				return total, fmt.Errorf("trim %s jobs: %w", state, err)
			}
			total += r.Removed
			dbNow = r.DbNow
			if next == nil && r.KeptSeq != 0 {
				// Resume just before the oldest row that may still go.
				next = &trimCursor{finishedAt: r.KeptFinishedAt, seq: r.KeptSeq - 1}
			}
			if r.LastSeq != 0 {
				last = trimCursor{finishedAt: r.LastFinishedAt, seq: r.LastSeq}
			}
			if r.Examined < maintenanceBatch {
				break
			}
			after = trimCursor{finishedAt: r.LastFinishedAt, seq: r.LastSeq}
		}
		cursor := after
		switch {
		case next != nil:
			cursor = *next
		case last.seq != 0:
			cursor = last
		}
		if limit := dbNow.Add(-trimMargin); cursor.finishedAt.After(limit) {
			cursor = trimCursor{finishedAt: limit}
		}
		m.trimCursors[state] = cursor
	}
	return total, nil
}

// TrimEvents deletes audit rows older than the events retention, in batches.
func (m *Maintenance) TrimEvents(ctx context.Context) (int64, error) {
	var total int64
	for {
		n, err := db.New(m.conn).JobEventsTrim(ctx, db.JobEventsTrimParams{
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

// CompactCounts folds the per-statement count deltas into one row per state and type.
func (m *Maintenance) CompactCounts(ctx context.Context) error {
	if err := db.New(m.conn).JobCountsCompact(ctx); err != nil {
		return fmt.Errorf("compact job counts: %w", err)
	}
	return nil
}
