package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Statements sqlc cannot express (VACUUM is a utility statement) live in this file.

// vacuumTables are the update-heavy tables whose dead tuples slow the claim.
var vacuumTables = []string{"jobs", "job_counts"}

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
