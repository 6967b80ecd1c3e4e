package migrations_test

import (
	"context"
	"database/sql"
	"regexp"
	"testing"

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

// The jobs table's type CHECK lists the types literally (cheap to prepare); the list must
// be exactly queue.job_types(), which enqueue and the clients read.
func TestTypeCheckMatchesJobTypes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.Pool(t, testutil.NewMigratedDatabase(t))
	var def string
	require.NoError(t, pool.QueryRow(ctx, `SELECT pg_get_constraintdef(oid) FROM pg_constraint
		WHERE conrelid = 'queue.jobs'::regclass AND conname = 'jobs_type_known'`).Scan(&def))
	var inCheck []string
	for _, m := range regexp.MustCompile(`'([A-Z_]+)'`).FindAllStringSubmatch(def, -1) {
		inCheck = append(inCheck, m[1])
	}
	var types []string
	require.NoError(t, pool.QueryRow(ctx, `SELECT queue.job_types()`).Scan(&types))
	require.NotEmpty(t, types)
	require.ElementsMatch(t, types, inCheck, "CHECK %s", def)
	require.NotContains(t, def, "job_type_known", "a SQL function in the CHECK is parsed again on every statement")
}
