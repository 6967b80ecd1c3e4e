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

	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/testutil"
)

// SettingsFromEnv builds the built-in kinds' settings from environment variables exactly
// as the worker does (config.LoadFrom, then cfg.JobSettings()) and creates their folders
// (cfg.EnsureDirs). internal/config imports this package, so this package's own tests
// cannot import it: config_test.go, in package jobs_test, sets this variable in its init,
// which runs before any test.
var SettingsFromEnv func(env map[string]string) (Settings, error)

// bundle is one test's world: its own data folder, Redis prefix and (when asked for)
// database.
type bundle struct {
	cfg   Settings // what the worker would derive from the test's environment
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
	require.NotNil(t, SettingsFromEnv, "config_test.go sets SettingsFromEnv")
	dir := t.TempDir()
	env := map[string]string{"DATA_DIR": dir, "REDIS_PREFIX": testutil.RedisPrefix(t)}
	for k, v := range o.env {
		env[k] = v
	}
	settings, err := SettingsFromEnv(env)
	require.NoError(t, err)

	opts, err := redis.ParseURL(testutil.RedisURL(t))
	require.NoError(t, err)
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })

	b := &bundle{cfg: settings, redis: rdb}
	if o.db {
		b.pool = testutil.NewPool(t)
	}
	b.deps = Deps{Settings: settings, Pool: b.pool, Redis: rdb, Logger: quietLogger()}
	return b
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// queueStats is Deps.Stats on the test database, mapped from a real queue.Client's Stats
// the way cmd/worker maps it (func jobStats).
func queueStats(t *testing.T, pool *pgxpool.Pool) func(context.Context) (Stats, error) {
	t.Helper()
	client, err := queue.NewClient(pool, queue.ClientConfig{Kinds: Builtin(Deps{})})
	require.NoError(t, err)
	t.Cleanup(client.Close)
	return func(ctx context.Context) (Stats, error) {
		s, err := client.Stats(ctx)
		if err != nil {
			return Stats{}, err
		}
		out := Stats{Object: s, Paused: s.Paused, ByState: s.NonZero(), ByType: s.TypesByState()}
		return out, nil
	}
}

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

// run checks data with the kind's rules, as the API and the client do, then runs it as
// the worker does.
func run(t *testing.T, kind kinds.Kind, data any) (any, error) {
	t.Helper()
	res, err, _ := runWithProgress(t, kind, data)
	return res, err
}

func runWithProgress(t *testing.T, kind kinds.Kind, data any) (any, error, []int) {
	t.Helper()
	raw, err := json.Marshal(data)
	require.NoError(t, err)
	require.Empty(t, kind.Check(raw), "data must be valid: %s", raw)
	var p progressLog
	job := kinds.NewJob("job-"+randomHex(4), kind.Name(), queue.DefaultQueue, 1, 3, p.add)
	res, err := kind.Run(context.Background(), job, raw)
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
