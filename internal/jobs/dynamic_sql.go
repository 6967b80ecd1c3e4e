package jobs

// The statements sqlc cannot express: the export's chosen columns and optional filters,
// and the batched delete from a table named by configuration. Identifiers come only from
// the allow-lists below or from SESSIONS_TABLE (checked by config) and always pass through
// pgx.Identifier.Sanitize; values are always parameters.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// execer runs a statement: a pool or a connection.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

type columnKind int

const (
	kindText columnKind = iota
	kindInt
	kindTime
	kindJSON
)

type exportColumn struct {
	name string
	kind columnKind
}

// exportSource is a table the export may read, with the columns it may show.
type exportSource struct {
	table      pgx.Identifier
	timeColumn string // what filters.from/to compare
	orderBy    string // a stable order of insertion
	columns    []exportColumn
}

var exportSources = map[string]exportSource{
	"jobs": {
		table:      pgx.Identifier{"queue", "jobs"},
		timeColumn: "created_at",
		orderBy:    "seq",
		columns: []exportColumn{
			{"id", kindText}, {"type", kindText}, {"state", kindText}, {"priority", kindInt},
			{"data", kindJSON}, {"result", kindJSON}, {"progress", kindInt},
			{"attempts_made", kindInt}, {"max_attempts", kindInt}, {"error", kindText},
			{"errors", kindJSON}, {"run_at", kindTime}, {"created_at", kindTime},
			{"started_at", kindTime}, {"finished_at", kindTime},
		},
	},
	"job_events": {
		table:      pgx.Identifier{"queue", "job_events"},
		timeColumn: "at",
		orderBy:    "id",
		columns: []exportColumn{
			{"id", kindInt}, {"job_id", kindText}, {"type", kindText}, {"state", kindText},
			{"at", kindTime}, {"attempt", kindInt}, {"message", kindText}, {"worker", kindText},
		},
	},
}

func (s exportSource) column(name string) (exportColumn, bool) {
	for _, c := range s.columns {
		if c.name == name {
			return c, true
		}
	}
	return exportColumn{}, false
}

// exportQuery is the SELECT of an export and the count that gives its progress a total.
type exportQuery struct {
	selectSQL, countSQL string
	args                []any
}

// buildExportQuery assembles the statement; cols are already checked against the source.
func buildExportQuery(src exportSource, cols []exportColumn, f exportFilters, from, to *time.Time) exportQuery {
	list := make([]string, len(cols))
	for i, c := range cols {
		ident := pgx.Identifier{c.name}.Sanitize()
		if c.kind == kindJSON {
			// jsonb as its text form: written as-is, never decoded and re-encoded.
			list[i] = ident + "::text"
		} else {
			list[i] = ident
		}
	}
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	timeCol := pgx.Identifier{src.timeColumn}.Sanitize()
	if f.Type != "" {
		add(pgx.Identifier{"type"}.Sanitize()+" = $%d", f.Type)
	}
	if f.State != "" {
		add(pgx.Identifier{"state"}.Sanitize()+" = $%d", f.State)
	}
	if from != nil {
		add(timeCol+" >= $%d", *from)
	}
	if to != nil {
		add(timeCol+" < $%d", *to)
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	table := src.table.Sanitize()
	return exportQuery{
		selectSQL: "SELECT " + strings.Join(list, ", ") + " FROM " + table + cond +
			" ORDER BY " + pgx.Identifier{src.orderBy}.Sanitize(),
		countSQL: "SELECT count(*) FROM " + table + cond,
		args:     args,
	}
}

// sessionsDeleteBatch deletes at most batch rows of table whose expires_at is more than
// olderThanMs milliseconds before now(), skipping rows another transaction holds. ctid lets it work on any
// table, whatever its key.
func sessionsDeleteBatch(ctx context.Context, conn execer, table string, olderThanMs int64, batch int) (int64, error) {
	ident := pgx.Identifier(strings.Split(table, ".")).Sanitize()
	tag, err := conn.Exec(ctx,
		"DELETE FROM "+ident+" WHERE ctid = ANY (ARRAY("+
			"SELECT ctid FROM "+ident+" WHERE "+pgx.Identifier{"expires_at"}.Sanitize()+" < now() - $1::bigint * interval '1 millisecond'"+
			" LIMIT $2 FOR UPDATE SKIP LOCKED))",
		olderThanMs, batch)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}
