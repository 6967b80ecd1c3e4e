package testutil

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// SyncBuffer collects output written from several goroutines (a process's pipes, a
// server's logs) and reads it back at any time.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Env is a test's own migrated database with a pool on it.
type Env struct {
	URL  string
	Pool *pgxpool.Pool
}

// NewEnv creates the database and the pool, both gone when the test ends.
func NewEnv(t testing.TB) *Env {
	t.Helper()
	u := NewMigratedDatabase(t)
	return &Env{URL: u, Pool: Pool(t, u)}
}

// Count runs a query that returns one integer.
func (e *Env) Count(t testing.TB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := e.Pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// Row runs a query that returns one row and gives its values.
func (e *Env) Row(t testing.TB, query string, args ...any) []any {
	t.Helper()
	rows, err := e.Pool.Query(context.Background(), query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	if !rows.Next() {
		t.Fatalf("%s: no row (%v)", query, rows.Err())
	}
	v, err := rows.Values()
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return v
}
