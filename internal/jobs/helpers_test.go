package jobs

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/config"
	"github.com/pgqueue/queue/internal/testutil"
)

// bundle is one test's world: its own data folder, Redis prefix and (when asked for)
// database.
type bundle struct {
	cfg   *config.Config
	pool  *pgxpool.Pool
	redis *redis.Client
	deps  Deps
}

type setupOpts struct {
	db  bool
	env map[string]string
}

func setup(t *testing.T, o setupOpts) *bundle {
	t.Helper()
	dir := t.TempDir()
	env := map[string]string{"DATA_DIR": dir, "REDIS_PREFIX": testutil.RedisPrefix(t)}
	for k, v := range o.env {
		env[k] = v
	}
	cfg, err := config.LoadFrom(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	require.NoError(t, err)
	require.NoError(t, cfg.EnsureDirs())

	opts, err := redis.ParseURL(testutil.RedisURL(t))
	require.NoError(t, err)
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })

	b := &bundle{cfg: cfg, redis: rdb}
	if o.db {
		b.pool = testutil.NewPool(t)
	}
	b.deps = Deps{Config: cfg, Pool: b.pool, Redis: rdb, Logger: quietLogger()}
	return b
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// progressLog records what a handler reports through SetProgress.
type progressLog struct {
	mu     sync.Mutex
	values []int
}

func (p *progressLog) add(v int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.values = append(p.values, v)
}

func (p *progressLog) all() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.values...)
}

// run checks data with the type's validator, as the worker does, then runs the handler.
func run(t *testing.T, h Handler, validate Validator, data any) (any, error) {
	t.Helper()
	res, err, _ := runWithProgress(t, h, validate, data)
	return res, err
}

func runWithProgress(t *testing.T, h Handler, validate Validator, data any) (any, error, []int) {
	t.Helper()
	raw, err := json.Marshal(data)
	require.NoError(t, err)
	require.Empty(t, validate(raw), "data must be valid: %s", raw)
	var p progressLog
	job := NewJob("job-"+randomHex(4), "TEST", raw, 1, 3, p.add)
	res, err := h.Handle(context.Background(), job)
	return res, err, p.all()
}

// writeFile writes a file under dir, creating its folders.
func writeFile(t *testing.T, dir, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o750))
	require.NoError(t, os.WriteFile(p, content, 0o640))
	return p
}

type obj = map[string]any
