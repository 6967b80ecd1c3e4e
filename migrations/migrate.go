package migrations

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// VersionTable records applied migrations. It has its own name so that an application
// sharing the database can keep goose's default table for its own migrations.
const VersionTable = "queue_migrations"

// NewProvider returns goose on the embedded migrations. A session advisory lock keeps
// two concurrent `migrate up` runs (several containers starting) from colliding.
func NewProvider(db *sql.DB) (*goose.Provider, error) {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, err
	}
	return goose.NewProvider(goose.DialectPostgres, db, FS,
		goose.WithTableName(VersionTable), goose.WithSessionLocker(locker))
}

// Latest is the highest migration version this build embeds.
func Latest() int64 {
	names, _ := fs.Glob(FS, "*.sql")
	var latest int64
	for _, n := range names {
		v, err := strconv.ParseInt(strings.SplitN(n, "_", 2)[0], 10, 64)
		if err == nil && v > latest {
			latest = v
		}
	}
	return latest
}

// ErrSchemaOutdated means the database needs `migrate up` before this build can run.
var ErrSchemaOutdated = errors.New("database schema is older than this build needs")

// Check returns ErrSchemaOutdated (wrapped, naming `migrate up`) unless the database is
// at Latest or newer.
func Check(ctx context.Context, pool *pgxpool.Pool) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, FS, goose.WithTableName(VersionTable))
	if err != nil {
		return err
	}
	current, err := p.GetDBVersion(ctx)
	if err != nil {
		// goose reports a missing version table as an error: nothing was ever migrated.
		var exists bool
		if qerr := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", VersionTable).Scan(&exists); qerr == nil && !exists {
			current = 0
		} else {
			return fmt.Errorf("read schema version: %w", err)
		}
	}
	if current < Latest() {
		return fmt.Errorf("%w: it is at version %d, this build needs %d; run `go run ./cmd/migrate up` (or `migrate up`)",
			ErrSchemaOutdated, current, Latest())
	}
	return nil
}
