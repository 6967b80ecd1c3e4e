// Command api serves the REST API on API_BIND:PORT until SIGTERM or SIGINT,
// then stops accepting connections, ends open wait and event streams, lets requests in
// flight finish within QUEUE_SHUTDOWN_TIMEOUT, and exits 0.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/pgqueue/queue/internal/api"
	"github.com/pgqueue/queue/internal/config"
	"github.com/pgqueue/queue/internal/jobs"
	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/results"
	"github.com/pgqueue/queue/migrations"
)

// Server timeouts, so a slow client cannot hold a connection. Long `wait` and event
// streams extend their own write deadline.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 64 << 10
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer pool.Close()
	if err := migrations.Check(ctx, pool); err != nil {
		return err
	}

	// The kinds only check data here (the API never runs a handler); their settings add
	// the checks that depend on the environment. The API fixes the retention defaults on
	// the jobs it accepts.
	registry := jobs.Builtin(jobs.Deps{Settings: cfg.JobSettings(), Logger: log})
	client, err := queue.NewClient(pool, queue.ClientConfig{
		Kinds: registry, RemoveOnComplete: &cfg.RemoveOnComplete, RemoveOnFail: &cfg.RemoveOnFail,
	})
	if err != nil {
		return err
	}
	defer client.Close()

	redisOpts, err := cfg.RedisOptions()
	if err != nil {
		return err
	}
	rdb := redis.NewUniversalClient(redisOpts)
	defer rdb.Close()

	if len(cfg.APIKeys) == 0 {
		log.Warn("API_KEYS is not set: the API checks no keys; it listens on " + cfg.APIBind +
			" (set API_KEYS before exposing it)")
	}
	// Redis: one subscription shared by every wait and event stream of this process,
	// snapshots and events of what requests change, and the STATS_TTL cache.
	store := results.New(rdb, cfg.RedisPrefix, cfg.ResultTTL, log)
	hub := store.NewHub()
	defer hub.Close()
	publisher := store.NewPublisher()
	defer publisher.Close()
	deps := api.Deps{
		Pool: pool, Client: client, Logger: log,
		APIKeys: cfg.APIKeys, TrustedProxies: cfg.TrustedProxies,
		RateLimitSubmit: cfg.RateLimitSubmit, MaxStreams: cfg.MaxStreams,
	}
	api.Redis{Store: store, Hub: hub, Publisher: publisher,
		Stats: store.NewStatsCache(cfg.StatsTTL, api.StatsJSON(client))}.Use(&deps)
	srv, err := api.New(deps)
	if err != nil {
		return err
	}

	addr := net.JoinHostPort(cfg.APIBind, strconv.Itoa(cfg.Port))
	httpSrv := &http.Server{
		Addr:              addr,
		Handler:           srv,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	httpSrv.RegisterOnShutdown(srv.StopStreams)

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	log.Info("api listening", "addr", ln.Addr().String(), "auth", len(cfg.APIKeys) > 0)
	served := make(chan error, 1)
	go func() { served <- httpSrv.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	stop() // a second signal kills the process the default way
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := httpSrv.Shutdown(shutdownCtx); err != nil {
		_ = httpSrv.Close()
		if !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("shutdown: %w", err)
		}
		log.Warn("shutdown timeout passed; open connections were closed")
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("stopped")
	return nil
}
