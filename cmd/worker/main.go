// Command worker runs the built-in job types from the queues of QUEUE_QUEUES against
// DATABASE_URL until SIGTERM or SIGINT, then shuts down gracefully and exits 0.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/pgqueue/queue/internal/config"
	"github.com/pgqueue/queue/internal/jobs"
	"github.com/pgqueue/queue/internal/metrics"
	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/results"
	"github.com/pgqueue/queue/internal/worker"
	"github.com/pgqueue/queue/migrations"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	log := cfg.Logger()
	slog.SetDefault(log)
	if err := cfg.EnsureDirs(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	poolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	// Claims, finishes, heartbeats, progress, the maintenance lead and the notifier each
	// hold a connection at most; the LISTEN connection is separate.
	poolCfg.MaxConns = max(poolCfg.MaxConns, 8)
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("connect to Postgres: %w", err)
	}
	defer pool.Close()
	if err := migrations.Check(ctx, pool); err != nil {
		return err
	}

	redisOpts, err := cfg.RedisOptions()
	if err != nil {
		return err
	}
	rdb := redis.NewUniversalClient(redisOpts)
	defer rdb.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	jobMetrics := metrics.NewJobs(reg)

	// Handlers of the built-in kinds; their stats source reads the engine through a
	// client of its own (the kinds do not import the engine).
	var client *queue.Client
	registry := jobs.Builtin(jobs.Deps{Settings: cfg.JobSettings(), Pool: pool, Redis: rdb, Logger: log,
		Stats: func(ctx context.Context) (jobs.Stats, error) { return jobStats(ctx, client) }})
	client, err = queue.NewClient(pool, queue.ClientConfig{Kinds: registry, OnEnqueued: jobMetrics.Enqueued})
	if err != nil {
		return err
	}
	defer client.Close()
	metrics.RegisterDepth(reg, client.Stats)
	metrics.RegisterHeld(reg, client.Queues)

	store := results.New(rdb, cfg.RedisPrefix, cfg.ResultTTL, log)
	publisher := store.NewPublisher()
	defer publisher.Close()
	metrics.RegisterRedis(reg, store.Errors, publisher.Dropped)
	if cfg.MetricsPort != 0 {
		stopMetrics := serveMetrics(log, cfg.MetricsPort, reg)
		defer stopMetrics()
	}

	queues := make([]worker.QueueConfig, len(cfg.Queues))
	for i, q := range cfg.Queues {
		queues[i] = worker.QueueConfig{Name: q.Name, Concurrency: q.Concurrency}
	}
	w, err := worker.New(pool, registry, worker.Config{
		Queues: queues, PollInterval: cfg.PollInterval, Lease: cfg.Lease,
		// QUEUE_SHUTDOWN_TIMEOUT=0 means hand back at once; the worker reads 0 as "default".
		JobTimeout: cfg.JobTimeout, ShutdownTimeout: max(cfg.ShutdownTimeout, time.Nanosecond),
		RemoveOnComplete: cfg.RemoveOnComplete, RemoveOnFail: cfg.RemoveOnFail,
		EventsRetention: cfg.EventsRetention, Logger: log,
		Observer:  worker.Observers(results.NewWorkerObserver(publisher), jobMetrics),
		Snapshots: store.Snapshots(),
	})
	if err != nil {
		return err
	}
	return w.Run(ctx)
}

// serveMetrics exposes reg on METRICS_PORT (all interfaces: bind it privately, as the
// README says) and returns a function that stops the server.
func serveMetrics(log *slog.Logger, port int, reg *prometheus.Registry) func() {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Addr: ":" + strconv.Itoa(port), Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	log.Info("metrics listening", "port", port)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
}

// jobStats is what CACHE_WARM reads of the queue.
func jobStats(ctx context.Context, client *queue.Client) (jobs.Stats, error) {
	s, err := client.Stats(ctx)
	if err != nil {
		return jobs.Stats{}, err
	}
	return jobs.Stats{Object: s, Paused: s.Paused, ByState: s.NonZero(), ByType: s.TypesByState()}, nil
}
