package migrations_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/testutil"
	"github.com/pgqueue/queue/migrations"
)

func queueObjects(t *testing.T, pool *pgxpool.Pool) int {
	var n int
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'queue'`).Scan(&n))
	return n
}

func TestUpDownUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u := testutil.NewDatabase(t)
	pool := testutil.Pool(t, u)
	db, err := sql.Open("pgx", u)
	require.NoError(t, err)
	defer db.Close()
	p, err := migrations.NewProvider(db)
	require.NoError(t, err)

	require.ErrorIs(t, migrations.Check(ctx, pool), migrations.ErrSchemaOutdated, "an empty database is outdated")

	_, err = p.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, migrations.Check(ctx, pool))
	require.Positive(t, queueObjects(t, pool))
	var id string
	require.NoError(t, pool.QueryRow(ctx, `SELECT queue.enqueue('CLEANUP', '{}')`).Scan(&id))

	// up again is a no-op
	res, err := p.Up(ctx)
	require.NoError(t, err)
	require.Empty(t, res)

	_, err = p.DownTo(ctx, 0)
	require.NoError(t, err)
	require.Zero(t, queueObjects(t, pool), "down to zero leaves nothing of the schema")
	var schemas int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = 'queue'`).Scan(&schemas))
	require.Zero(t, schemas)
	var funcs int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_proc WHERE proname IN ('enqueue', 'job_types')`).Scan(&funcs))
	require.Zero(t, funcs)
	require.ErrorIs(t, migrations.Check(ctx, pool), migrations.ErrSchemaOutdated)

	_, err = p.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, migrations.Check(ctx, pool))
	v, err := p.GetDBVersion(ctx)
	require.NoError(t, err)
	require.Equal(t, migrations.Latest(), v)
}

// Job types are not listed in the schema: any well-formed name is accepted (a new type
// needs no migration); the table refuses only a name of the wrong length, and
// queue.enqueue a malformed one.
func TestTypesNeedNoMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.Pool(t, testutil.NewMigratedDatabase(t))
	var id string
	require.NoError(t, pool.QueryRow(ctx, `SELECT queue.enqueue('INVOICE_PDF', '{}')`).Scan(&id))
	var typ, q string
	require.NoError(t, pool.QueryRow(ctx, `SELECT type, queue FROM queue.jobs WHERE id = $1`, id).Scan(&typ, &q))
	require.Equal(t, "INVOICE_PDF", typ)
	require.Equal(t, "default", q)

	for _, bad := range []string{"", "T" + strings.Repeat("x", 128)} {
		_, err := pool.Exec(ctx, `INSERT INTO queue.jobs (id, type, state) VALUES ('custom-x', $1, 'waiting')`, bad)
		var pg *pgconn.PgError
		require.ErrorAs(t, err, &pg, "%q", bad)
		require.Equal(t, "jobs_type_length", pg.ConstraintName)
	}
	for _, bad := range []string{"has space", "9STARTS_WITH_A_DIGIT"} {
		_, err := pool.Exec(ctx, `SELECT queue.enqueue($1, '{}')`, bad)
		var pg *pgconn.PgError
		require.ErrorAs(t, err, &pg, "%q", bad)
		require.Equal(t, "22023", pg.Code)
	}
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_proc WHERE proname IN ('job_types', 'job_type_known')`).Scan(&n))
	require.Zero(t, n, "no list of types left in the schema")
}
