package testutil

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgqueue/queue/migrations"
)

// PGBinDir holds initdb and pg_ctl on the development and CI machines.
const PGBinDir = "/usr/lib/postgresql/15/bin"

// PostgresServer is a private Postgres cluster a test can stop, kill and start again on
// the same port, to inject database outages.
type PostgresServer struct {
	t    testing.TB
	Port int
	dir  string
	opts []string // extra server settings, name=value
}

// StartPostgres initialises a cluster in a temporary folder on a free port, starts it,
// creates a migrated database `queue`, and stops it when the test ends. It skips the
// test where the server binaries are missing.
func StartPostgres(t testing.TB) *PostgresServer {
	t.Helper()
	return StartPostgresWith(t)
}

// StartPostgresWith is StartPostgres with extra server settings ("wal_writer_delay=10s").
func StartPostgresWith(t testing.TB, settings ...string) *PostgresServer {
	t.Helper()
	if _, err := os.Stat(filepath.Join(PGBinDir, "initdb")); err != nil {
		t.Skipf("no Postgres server binaries in %s; this test needs a private cluster it can restart", PGBinDir)
	}
	port := FreePort(t)
	dir, err := os.MkdirTemp("", "pgfault-")
	if err != nil {
		t.Fatal(err)
	}
	s := &PostgresServer{t: t, Port: port, dir: dir, opts: settings}
	t.Cleanup(func() {
		s.Stop()
		_ = os.RemoveAll(dir)
	})
	data := filepath.Join(dir, "data")
	// initdb refuses to run as root; run it (and the server) as the postgres user then.
	if out, err := s.command("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	s.Start()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE queue"); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", s.URL("queue"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p, err := migrations.NewProvider(db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// command runs a server binary, as the postgres user when we are root.
func (s *PostgresServer) command(name string, args ...string) *exec.Cmd {
	bin := filepath.Join(PGBinDir, name)
	if os.Geteuid() != 0 {
		return exec.Command(bin, args...)
	}
	_ = exec.Command("chown", "-R", "postgres:postgres", s.dir).Run()
	return exec.Command("runuser", append([]string{"-u", "postgres", "--", bin}, args...)...)
}

// URL of a database on this server.
func (s *PostgresServer) URL(database string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, database)
}

// Start starts the server and waits until it accepts connections.
func (s *PostgresServer) Start() {
	s.t.Helper()
	opts := "-p " + strconv.Itoa(s.Port) + " -k " + s.dir + " -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
	for _, o := range s.opts {
		opts += " -c " + o
	}
	cmd := s.command("pg_ctl", "-D", filepath.Join(s.dir, "data"), "-l", filepath.Join(s.dir, "log"), "-o", opts, "-w", "-t", "60", "start")
	if out, err := cmd.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		s.t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
}

// Stop stops the server: "fast" ends sessions cleanly, "immediate" is a crash.
func (s *PostgresServer) Stop() { s.stop("fast") }

// Crash stops the server without a clean shutdown (recovery runs at the next start).
func (s *PostgresServer) Crash() { s.stop("immediate") }

func (s *PostgresServer) stop(mode string) {
	cmd := s.command("pg_ctl", "-D", filepath.Join(s.dir, "data"), "-m", mode, "-w", "-t", "60", "stop")
	_ = cmd.Run()
}

// Restart stops the server, waits pause, and starts it again.
func (s *PostgresServer) Restart(pause time.Duration) {
	s.Stop()
	time.Sleep(pause)
	s.Start()
}
