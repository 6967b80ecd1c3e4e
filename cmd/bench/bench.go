package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"

	"github.com/pgqueue/queue/internal/config"
	"github.com/pgqueue/queue/migrations"
)

// bench holds what every workload shares: the configuration, the server, the template
// database, Redis, and the list of databases to drop.
type bench struct {
	opts    options
	cfg     *config.Config
	base    *pgx.ConnConfig // DATABASE_URL as given
	rdb     redis.UniversalClient
	prefix  string // Redis prefix of this bench run
	name    string // queue_bench_<random>
	tmpl    string
	machine machineInfo
	nextDB  int

	mu      sync.Mutex
	created []string
}

func newBench(ctx context.Context, o options) (*bench, error) {
	cfg, err := config.Load()
	if err != nil {
		return nil, err
	}
	base, err := pgx.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	b := &bench{opts: o, cfg: cfg, base: base, name: "queue_bench_" + hex.EncodeToString(suffix)}
	b.prefix = b.name + ":"

	if b.needsRedis() {
		ro, err := cfg.RedisOptions()
		if err != nil {
			return nil, err
		}
		b.rdb = redis.NewUniversalClient(ro)
		if err := b.rdb.Ping(ctx).Err(); err != nil {
			return nil, fmt.Errorf("redis (needed by the Redis-on configurations; pick -variants noredis to skip it): %w", err)
		}
	}
	b.machine = collectMachine(ctx, b)
	b.tmpl = b.name + "_tmpl"
	if err := b.createDatabase(ctx, b.tmpl, ""); err != nil {
		return nil, err
	}
	if err := b.migrate(ctx, b.tmpl); err != nil {
		b.cleanup()
		return nil, err
	}
	return b, nil
}

func (b *bench) needsRedis() bool {
	for _, v := range b.opts.variants {
		if v.Redis {
			return true
		}
	}
	return false
}

func (b *bench) progress(msg string, args ...any) {
	if b.opts.verbose {
		slog.Info(msg, args...)
		return
	}
	// Long runs need a sign of life even without -v; stderr keeps stdout clean for -json.
	var sb strings.Builder
	for i := 0; i+1 < len(args); i += 2 {
		fmt.Fprintf(&sb, " %v=%v", args[i], args[i+1])
	}
	fmt.Fprintf(os.Stderr, "%s %s%s\n", time.Now().Format("15:04:05"), msg, sb.String())
}

// connConfig is DATABASE_URL pointed at another database of the same server.
func (b *bench) connConfig(database string) *pgx.ConnConfig {
	c := b.base.Copy()
	c.Database = database
	return c
}

// databaseURL is DATABASE_URL pointed at database, for the producer process.
func (b *bench) databaseURL(database string) string {
	u, err := url.Parse(b.cfg.DatabaseURL)
	if err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + database
		return u.String()
	}
	// A keyword/value DSN: a later keyword wins.
	return b.cfg.DatabaseURL + " dbname=" + database
}

// admin connects to the server's maintenance database to create and drop databases.
func (b *bench) admin(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, b.connConfig("postgres"))
	if err != nil {
		return nil, fmt.Errorf("connect to the postgres maintenance database: %w", err)
	}
	return conn, nil
}

func (b *bench) createDatabase(ctx context.Context, name, template string) error {
	conn, err := b.admin(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		sql += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	b.mu.Lock()
	b.created = append(b.created, name)
	b.mu.Unlock()
	return nil
}

func (b *bench) dropDatabase(ctx context.Context, name string) error {
	conn, err := b.admin(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	b.mu.Lock()
	b.created = removeString(b.created, name)
	b.mu.Unlock()
	return nil
}

func removeString(list []string, s string) []string {
	out := list[:0]
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

func (b *bench) migrate(ctx context.Context, database string) error {
	sqlDB := stdlib.OpenDB(*b.connConfig(database))
	defer sqlDB.Close()
	p, err := migrations.NewProvider(sqlDB)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate %s: %w", database, err)
	}
	return nil
}

// cleanup drops every database this run created and its Redis keys.
func (b *bench) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b.mu.Lock()
	names := append([]string(nil), b.created...)
	b.mu.Unlock()
	// Workload databases first: the template cannot be dropped while a clone is running.
	for i := len(names) - 1; i >= 0; i-- {
		if err := b.dropDatabase(ctx, names[i]); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v (drop it by hand)\n", err)
		}
	}
	if b.rdb != nil {
		if n, err := deleteRedisPrefix(ctx, b.rdb, b.prefix); err != nil {
			fmt.Fprintf(os.Stderr, "bench: removing Redis keys %s*: %v\n", b.prefix, err)
		} else if n > 0 {
			b.progress("removed Redis keys", "keys", n)
		}
		_ = b.rdb.Close()
	}
}

// target is the fresh database of one workload run.
type target struct {
	name    string
	variant variant
	ctl     *pgx.Conn // measurements and raw SQL; not used by the engine
}

// newTarget clones the template and applies the variant's switches.
func (b *bench) newTarget(ctx context.Context, v variant) (*target, error) {
	b.nextDB++
	name := fmt.Sprintf("%s_%d", b.name, b.nextDB)
	if err := b.createDatabase(ctx, name, b.tmpl); err != nil {
		return nil, err
	}
	ctl, err := pgx.ConnectConfig(ctx, b.connConfig(name))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", name, err)
	}
	t := &target{name: name, variant: v, ctl: ctl}
	if !v.Audit {
		if err := discardAudit(ctx, ctl); err != nil {
			t.close(ctx)
			return nil, err
		}
	}
	return t, nil
}

func (t *target) close(ctx context.Context) {
	_ = t.ctl.Close(context.WithoutCancel(ctx))
}

// pool opens a pool on the target database; each role (producer, worker) gets its own,
// as separate processes would.
func (b *bench) pool(ctx context.Context, database string, maxConns int32) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(b.cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	pc.ConnConfig.Database = database
	pc.MaxConns = maxConns
	pc.MinConns = 0
	p, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("pool on %s: %w", database, err)
	}
	return p, nil
}

// runWorkload gives one workload a fresh database and drops it afterwards.
func (b *bench) runWorkload(ctx context.Context, w string, v variant) (result, error) {
	t, err := b.newTarget(ctx, v)
	if err != nil {
		return result{}, err
	}
	defer func() {
		t.close(ctx)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := b.dropDatabase(dctx, t.name); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		}
	}()
	var res result
	switch w {
	case "ceiling":
		res, err = b.ceiling(ctx, t)
	case "bulk":
		res, err = b.bulk(ctx, t)
	case "single":
		res, err = b.single(ctx, t)
	case "drain":
		res, err = b.drain(ctx, t)
	case "drain_limited":
		res, err = b.drainLimited(ctx, t)
	case "latency":
		res, err = b.latency(ctx, t)
	case "depth":
		res, err = b.depth(ctx, t)
	case "fair_claim":
		res, err = b.fairClaim(ctx, t)
	default:
		err = fmt.Errorf("unknown workload %q", w)
	}
	res.Workload = w
	return res, err
}

// scaled multiplies a count by -scale, never below min.
func (b *bench) scaled(n, min int) int {
	return max(int(float64(n)*b.opts.scale), min)
}

func (b *bench) scaledDuration(d, min time.Duration) time.Duration {
	return max(time.Duration(float64(d)*b.opts.scale), min)
}

// machineInfo describes where the figures were taken.
type machineInfo struct {
	CPUs         int               `json:"cpus"`
	MemoryMB     int64             `json:"memoryMB"`
	GoVersion    string            `json:"goVersion"`
	Postgres     string            `json:"postgres"`
	PGSettings   map[string]string `json:"postgresSettings"`
	Redis        string            `json:"redis,omitempty"`
	LoadAvgStart string            `json:"loadAvgStart"`
}

func collectMachine(ctx context.Context, b *bench) machineInfo {
	m := machineInfo{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), PGSettings: map[string]string{}}
	m.MemoryMB = memTotalMB()
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvgStart = strings.TrimSpace(string(la))
	}
	if conn, err := b.admin(ctx); err == nil {
		defer conn.Close(context.WithoutCancel(ctx))
		_ = conn.QueryRow(ctx, "SHOW server_version").Scan(&m.Postgres)
		for _, s := range []string{"shared_buffers", "synchronous_commit", "fsync", "wal_level",
			"max_wal_size", "checkpoint_timeout", "max_connections", "work_mem", "autovacuum"} {
			var v string
			if conn.QueryRow(ctx, "SELECT current_setting($1)", s).Scan(&v) == nil {
				m.PGSettings[s] = v
			}
		}
	}
	if b.rdb != nil {
		if info, err := b.rdb.Info(ctx, "server").Result(); err == nil {
			for _, line := range strings.Split(info, "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
					m.Redis = v
				}
			}
		}
	}
	return m
}
