package main

// The bench's own SQL, which sqlc does not (and should not) know: it builds backlogs
// behind the engine's back, switches the audit trail off in the bench's throwaway
// database, and reads server statistics. Runtime code of the engine never does this.

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// discardAudit drops every row written to queue.job_events, in this database only. The
// engine has no switch for its audit trail yet; this approximates one: the statements
// still build the audit rows, but no heap tuple, index entry or WAL is written for them.
func discardAudit(ctx context.Context, conn *pgx.Conn) error {
	_, err := conn.Exec(ctx, `
CREATE FUNCTION queue.bench_discard_audit() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER bench_discard_audit BEFORE INSERT ON queue.job_events
    FOR EACH ROW EXECUTE FUNCTION queue.bench_discard_audit();`)
	if err != nil {
		return fmt.Errorf("switch the audit trail off: %w", err)
	}
	return nil
}

// addBacklog inserts n waiting no-op jobs of the given priority in one server-side
// statement, without audit rows: the fastest way to a deep queue.
func addBacklog(ctx context.Context, conn *pgx.Conn, n, priority int) error {
	_, err := conn.Exec(ctx, `
INSERT INTO queue.jobs (seq, id, type, state, priority, data)
SELECT s, s::text, 'BENCH_NOOP', 'waiting', $2, '{}'::jsonb
FROM (SELECT nextval('queue.job_seq') AS s FROM generate_series(1, $1::integer)) g`, n, priority)
	if err != nil {
		return fmt.Errorf("build backlog of %d jobs: %w", n, err)
	}
	return nil
}

func countWaiting(ctx context.Context, conn *pgx.Conn) (int, error) {
	var n int
	err := conn.QueryRow(ctx, `SELECT count(*) FROM queue.jobs WHERE state = 'waiting'`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count waiting jobs: %w", err)
	}
	return n, nil
}

func vacuumJobs(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, `VACUUM (ANALYZE) queue.jobs`); err != nil {
		return fmt.Errorf("vacuum queue.jobs: %w", err)
	}
	return nil
}

// commitsSoFar reads this database's committed transactions. Backends publish their
// counts when they go idle or exit, so read it after the workload's pools are closed.
func commitsSoFar(ctx context.Context, conn *pgx.Conn) (int64, error) {
	var n int64
	err := conn.QueryRow(ctx, `SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("read commits: %w", err)
	}
	return n, nil
}

// backendPIDs lists the server processes working on this database (client backends and
// autovacuum workers), whose CPU time the bench reads from /proc.
func backendPIDs(ctx context.Context, conn *pgx.Conn) ([]int, error) {
	rows, err := conn.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)
	if err != nil {
		return nil, fmt.Errorf("list backends: %w", err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, fmt.Errorf("list backends: %w", err)
	}
	return pids, nil
}

// eventRows counts audit rows, to show what the audit switch removed.
func eventRows(ctx context.Context, conn *pgx.Conn) (int64, error) {
	var n int64
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM queue.job_events`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count audit rows: %w", err)
	}
	return n, nil
}

// pickSQL mirrors the "picked" CTE of JobClaim (sql/queries/worker.sql): the index walk
// that must stay flat as the backlog grows. Keep it in step with that query.
const pickSQL = `EXPLAIN (ANALYZE, FORMAT JSON)
SELECT seq FROM queue.jobs
WHERE state = 'waiting' AND queue = 'default' AND type = ANY ($1::text[])
  AND NOT (SELECT paused FROM queue.queue_state)
  AND NOT EXISTS (SELECT 1 FROM queue.queues q WHERE q.name = 'default' AND q.paused)
ORDER BY priority DESC, run_at, seq
LIMIT $2::integer
FOR UPDATE SKIP LOCKED`

// pickExecution runs the claim's pick under EXPLAIN ANALYZE in a transaction that is
// rolled back, so nothing is claimed and no commit is timed: the server's execution
// time of the index walk alone, and whether it used the claim index.
func pickExecution(ctx context.Context, conn *pgx.Conn, limit int) (float64, bool, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var plan []struct {
		Plan          map[string]any `json:"Plan"`
		ExecutionTime float64        `json:"Execution Time"`
	}
	if err := tx.QueryRow(ctx, pickSQL, []string{jobType}, limit).Scan(&plan); err != nil {
		return 0, false, fmt.Errorf("explain the claim: %w", err)
	}
	if len(plan) == 0 {
		return 0, false, fmt.Errorf("explain the claim: empty plan")
	}
	return plan[0].ExecutionTime, strings.Contains(fmt.Sprint(plan[0].Plan), "jobs_claim_idx"), nil
}

// batchSizes reads, from the audit trail, how many jobs each claim and each completion
// statement moved on average: rows of one statement share its transaction's now(), or
// (a limited claim, whose starts are a microsecond apart in pick order) its millisecond.
func batchSizes(ctx context.Context, conn *pgx.Conn) (claim, finish float64, err error) {
	rows, err := conn.Query(ctx, `
SELECT state, avg(n)::float8
FROM (SELECT state, count(*) AS n FROM queue.job_events
      WHERE state IN ('active', 'completed') GROUP BY state, date_trunc('milliseconds', at), worker) s
GROUP BY state`)
	if err != nil {
		return 0, 0, fmt.Errorf("batch sizes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var state string
		var avg float64
		if err := rows.Scan(&state, &avg); err != nil {
			return 0, 0, fmt.Errorf("batch sizes: %w", err)
		}
		if state == "active" {
			claim = avg
		} else {
			finish = avg
		}
	}
	return claim, finish, rows.Err()
}
