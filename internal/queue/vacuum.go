package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Statements sqlc cannot express (VACUUM is a utility statement) live in this file.

// vacuumTables are the update-heavy tables whose dead tuples slow the claim.
var vacuumTables = []string{"jobs", "job_counts", "queue_starts", "queue_groups", "queues"}

// Vacuum thresholds: a table is vacuumed by the leader when it has this many dead
// tuples and more than a fifth of its live ones, and was not vacuumed in the interval.
const (
	vacuumMinDead  = 5000
	vacuumInterval = 10 * time.Second
)

// VacuumIfNeeded vacuums the queue's hot tables when dead tuples pile up and nothing
// vacuumed them lately. Autovacuum normally does this (the migrations make it eager on
// queue.jobs); this covers servers where it is off or lagging, since every claim and
// finish leaves a dead tuple and the claim slows as they accumulate. It returns the
// tables it vacuumed.
func (m *Maintenance) VacuumIfNeeded(ctx context.Context) ([]string, error) {
	var done []string
	for _, table := range vacuumTables {
		var dead, live int64
		var last time.Time
		err := m.pool.QueryRow(ctx, `
			SELECT n_dead_tup, n_live_tup, coalesce(greatest(last_vacuum, last_autovacuum), 'epoch')
			FROM pg_stat_user_tables WHERE schemaname = 'queue' AND relname = $1`, table).Scan(&dead, &live, &last)
		if err != nil {
			return done, fmt.Errorf("read vacuum statistics of queue.%s: %w", table, err)
		}
		if dead < vacuumMinDead || dead*5 < live || time.Since(last) < vacuumInterval {
			continue
		}
		// SKIP_LOCKED: never queue behind a lock someone else holds on the table.
		if _, err := m.pool.Exec(ctx, "VACUUM (SKIP_LOCKED) "+pgx.Identifier{"queue", table}.Sanitize()); err != nil {
			return done, fmt.Errorf("vacuum queue.%s: %w", table, err)
		}
		done = append(done, table)
	}
	return done, nil
}

// Statistics thresholds: queue.jobs is analyzed by the leader when it never was, or when
// this many rows (and a tenth of the table) changed since, and not within the interval.
const (
	analyzeMinChanges = 1000
	analyzeInterval   = 30 * time.Second
)

// AnalyzeIfNeeded refreshes the planner's statistics of queue.jobs when they are missing
// or stale and nothing (autovacuum) refreshed them lately, and reports whether it did.
// Without statistics the planner guesses that a queue holds a handful of rows, and may
// claim with a bitmap scan that sorts the queue's whole backlog instead of walking the
// claim index in order (tens of milliseconds per claim at 100,000 waiting jobs). ANALYZE
// samples a bounded number of rows and blocks no reader or writer.
func (m *Maintenance) AnalyzeIfNeeded(ctx context.Context) (bool, error) {
	var never bool
	var changed, live int64
	var last time.Time
	err := m.pool.QueryRow(ctx, `
		SELECT last_analyze IS NULL AND last_autoanalyze IS NULL, n_mod_since_analyze, n_live_tup,
		       coalesce(greatest(last_analyze, last_autoanalyze), 'epoch')
		FROM pg_stat_user_tables WHERE schemaname = 'queue' AND relname = 'jobs'`).Scan(&never, &changed, &live, &last)
	if err != nil {
		return false, fmt.Errorf("read statistics of queue.jobs: %w", err)
	}
	stale := changed >= analyzeMinChanges && changed*10 >= live && time.Since(last) >= analyzeInterval
	if !(never && changed > 0) && !stale {
		return false, nil
	}
	if _, err := m.pool.Exec(ctx, "ANALYZE (SKIP_LOCKED) "+pgx.Identifier{"queue", "jobs"}.Sanitize()); err != nil {
		return false, fmt.Errorf("analyze queue.jobs: %w", err)
	}
	return true, nil
}
