// Package testutil gives each test its own freshly migrated Postgres database and its own
// Redis key prefix. It uses TEST_DATABASE_URL and TEST_REDIS_URL when set, else starts
// Postgres and Redis containers with testcontainers-go (once per test binary).
package testutil

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"

	"github.com/pgqueue/queue/migrations"
)

var (
	adminOnce sync.Once
	adminURL  string
	adminErr  error

	templateOnce sync.Once
	templateName string
	templateErr  error

	redisOnce sync.Once
	redisURL  string
	redisErr  error
)

// AdminURL is the server every test database lives on: TEST_DATABASE_URL, or a
// container started for this test binary.
func AdminURL(t testing.TB) string {
	t.Helper()
	u, err := adminURLOrErr()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func adminURLOrErr() (string, error) {
	adminOnce.Do(func() {
		if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
			adminURL = u
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		c, err := tcpostgres.Run(ctx, "postgres:15-alpine",
			tcpostgres.WithDatabase("postgres"), tcpostgres.BasicWaitStrategies())
		if err != nil {
			adminErr = fmt.Errorf("TEST_DATABASE_URL is unset and no Postgres container could start: %w", err)
			return
		}
		adminURL, adminErr = c.ConnectionString(ctx, "sslmode=disable")
	})
	return adminURL, adminErr
}

// withDatabase returns u pointing at database name.
func withDatabase(u, name string) string {
	p, err := url.Parse(u)
	if err != nil {
		panic(fmt.Sprintf("testutil: bad database URL: %v", err))
	}
	p.Path = "/" + name
	return p.String()
}

// migrationsHash names the template after the migrations it holds, so a changed
// migration gets a new template and concurrent test binaries share an unchanged one.
func migrationsHash() string {
	h := sha256.New()
	_ = fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := fs.ReadFile(migrations.FS, path)
		h.Write([]byte(path))
		h.Write(b)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// template returns a migrated template database, creating it once across all test
// binaries (an advisory lock serialises the creators).
func template(t testing.TB) string {
	t.Helper()
	name, err := templateOrErr()
	if err != nil {
		t.Fatal(err)
	}
	return name
}

func templateOrErr() (string, error) {
	admin, err := adminURLOrErr()
	if err != nil {
		return "", err
	}
	templateOnce.Do(func() {
		templateName = "queue_tmpl_" + migrationsHash()
		templateErr = createTemplate(admin, templateName)
	})
	return templateName, templateErr
}

func createTemplate(admin, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect to test Postgres: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(7243001)"); err != nil {
		return err
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock(7243001)") //nolint:errcheck
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	build := name + "_build"
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{build}.Sanitize()); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{build}.Sanitize()); err != nil {
		return err
	}
	if err := migrateUp(ctx, withDatabase(admin, build)); err != nil {
		return fmt.Errorf("migrate template: %w", err)
	}
	// Renamed only once complete, so a crashed build is never taken for a template.
	_, err = conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{build}.Sanitize()+" RENAME TO "+pgx.Identifier{name}.Sanitize())
	return err
}

func migrateUp(ctx context.Context, u string) error {
	db, err := sql.Open("pgx", u)
	if err != nil {
		return err
	}
	defer db.Close()
	p, err := migrations.NewProvider(db)
	if err != nil {
		return err
	}
	_, err = p.Up(ctx)
	return err
}

// NewDatabase creates an empty database (no schema) for this test and drops it when the
// test ends. It returns its URL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return createDatabase(t, "")
}

// NewMigratedDatabase creates a database with the queue schema at the latest version,
// cloned from a template, dropped when the test ends. It returns its URL.
func NewMigratedDatabase(t testing.TB) string {
	t.Helper()
	return createDatabase(t, template(t))
}

func createDatabase(t testing.TB, from string) string {
	t.Helper()
	admin := AdminURL(t)
	name, err := cloneDatabase(admin, from)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dropDatabase(admin, name); err != nil {
			t.Errorf("drop test database: %v", err)
		}
	})
	return withDatabase(admin, name)
}

// cloneDatabase creates a database of a random name, from a template when one is named.
func cloneDatabase(admin, from string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", fmt.Errorf("connect to test Postgres: %w", err)
	}
	defer conn.Close(ctx)
	name := "test_" + strings.ToLower(randomHex(8))
	stmt := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if from != "" {
		stmt += " TEMPLATE " + pgx.Identifier{from}.Sanitize()
	}
	// Cloning fails while another session briefly touches the template; try again.
	for attempt := 0; ; attempt++ {
		_, err = conn.Exec(ctx, stmt)
		var pg *pgconn.PgError
		if err == nil || attempt == 50 || !errors.As(err, &pg) || pg.Code != "55006" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return "", fmt.Errorf("create test database: %w", err)
	}
	return name, nil
}

func dropDatabase(admin, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, admin)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}

// MainDatabase is NewMigratedDatabase for a TestMain (runnable examples have no
// testing.T): it returns the database's URL and a function that drops it.
func MainDatabase() (string, func(), error) {
	admin, err := adminURLOrErr()
	if err != nil {
		return "", nil, err
	}
	tmpl, err := templateOrErr()
	if err != nil {
		return "", nil, err
	}
	name, err := cloneDatabase(admin, tmpl)
	if err != nil {
		return "", nil, err
	}
	return withDatabase(admin, name), func() { _ = dropDatabase(admin, name) }, nil
}

// NewPool opens a pool on a fresh migrated database, closed when the test ends.
func NewPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return Pool(t, NewMigratedDatabase(t))
}

// Pool opens a pool on u, closed when the test ends.
func Pool(t testing.TB, u string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), u)
	if err != nil {
		t.Fatalf("open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// RedisURL is TEST_REDIS_URL, or a container started for this test binary.
func RedisURL(t testing.TB) string {
	t.Helper()
	redisOnce.Do(func() {
		if u := os.Getenv("TEST_REDIS_URL"); u != "" {
			redisURL = u
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		c, err := tcredis.Run(ctx, "redis:7-alpine")
		if err != nil {
			redisErr = fmt.Errorf("TEST_REDIS_URL is unset and no Redis container could start: %w", err)
			return
		}
		redisURL, redisErr = c.ConnectionString(ctx)
	})
	if redisErr != nil {
		t.Fatal(redisErr)
	}
	return redisURL
}

// RedisPrefix is a key and channel prefix of this test's own; a Redis DB index would not
// isolate pub/sub.
func RedisPrefix(t testing.TB) string {
	return "test:" + randomHex(6) + ":"
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
