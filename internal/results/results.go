// Package results is everything the system keeps in Redis: a snapshot of each finished
// job (so a job removed by retention still answers until RESULT_TTL), the job event
// channel behind the API's wait and event-stream endpoints, and the stats cache. It is
// best-effort by design: Postgres is the only source of truth, and a Redis error is
// logged (once per interval), counted, and skipped, never passed on as a job failure.
//
// Keys and channels, all under REDIS_PREFIX (default "queue:"):
//
//	{prefix}job:{id}    JSON job object of a finished job, TTL RESULT_TTL
//	{prefix}events      channel: every job event, JSON {"event":"job"|"progress",...}
//	{prefix}stats       JSON of GET /api/queue/stats, TTL STATS_TTL
package results

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgqueue/queue/internal/queue"
)

// Store reads and writes the Redis side.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
	log    *slog.Logger

	errors     atomic.Uint64
	logMu      sync.Mutex
	lastLogged time.Time
	suppressed int
}

// errorLogInterval is how often a run of Redis errors is logged: once, then a count.
const errorLogInterval = 30 * time.Second

// New returns a store; ttl is RESULT_TTL.
func New(rdb redis.UniversalClient, prefix string, ttl time.Duration, log *slog.Logger) *Store {
	if log == nil {
		log = slog.Default()
	}
	return &Store{rdb: rdb, prefix: prefix, ttl: ttl, log: log}
}

// JobKey is where a job's snapshot lives.
func (s *Store) JobKey(id string) string { return s.prefix + "job:" + id }

// EventsChannel carries every job event.
func (s *Store) EventsChannel() string { return s.prefix + "events" }

// StatsKey holds the cached stats.
func (s *Store) StatsKey() string { return s.prefix + "stats" }

// Errors counts failed Redis operations since start (for metrics).
func (s *Store) Errors() uint64 { return s.errors.Load() }

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

// fail records a Redis error: counted always, logged at most once per interval.
func (s *Store) fail(op string, err error) {
	s.errors.Add(1)
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if time.Since(s.lastLogged) < errorLogInterval {
		s.suppressed++
		return
	}
	s.log.Warn("redis unavailable; continuing from Postgres", "op", op, "err", err, "errors_since_last_log", s.suppressed)
	s.lastLogged = time.Now()
	s.suppressed = 0
}

// Job reads a job's snapshot; ok is false when there is none (or Redis is down).
func (s *Store) Job(ctx context.Context, id string) (queue.Job, bool) {
	b, err := s.rdb.Get(ctx, s.JobKey(id)).Bytes()
	if err != nil {
		if !errors.Is(err, redis.Nil) {
			s.fail("get job", err)
		}
		return queue.Job{}, false
	}
	var j queue.Job
	if err := json.Unmarshal(b, &j); err != nil {
		return queue.Job{}, false
	}
	return j, true
}

// Forget removes the snapshots of jobs that were deleted or cleaned, so they answer 404.
func (s *Store) Forget(ctx context.Context, ids ...string) {
	if len(ids) == 0 {
		return
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = s.JobKey(id)
	}
	// One DEL per key keeps Redis Cluster happy (keys may live in different slots).
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Del(ctx, k)
		}
		return nil
	})
	if err != nil {
		s.fail("forget jobs", err)
	}
}

// Snapshots is the store as the engine's retention sees it: a job is removed only once
// its snapshot is here (queue.Snapshots).
func (s *Store) Snapshots() queue.Snapshots { return snapshots{s} }

type snapshots struct{ s *Store }

// TTL is RESULT_TTL.
func (v snapshots) TTL() time.Duration { return v.s.ttl }

// Missing asks Redis which of the snapshots exist, one EXISTS per key in one pipeline
// (keys may live in different Cluster slots).
func (v snapshots) Missing(ctx context.Context, ids []string) ([]string, error) {
	cmds := make([]*redis.IntCmd, len(ids))
	_, err := v.s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.Exists(ctx, v.s.JobKey(id))
		}
		return nil
	})
	if err != nil {
		v.s.fail("check snapshots", err)
		return nil, err
	}
	var missing []string
	for i, c := range cmds {
		if c.Val() == 0 {
			missing = append(missing, ids[i])
		}
	}
	return missing, nil
}

// Store writes the snapshots of finished jobs, each to expire RESULT_TTL after the job
// finished. It fails when any write fails (Redis down, or full under noeviction).
func (v snapshots) Store(ctx context.Context, jobs []queue.Job) error {
	_, err := v.s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range jobs {
			j := &jobs[i]
			ttl := v.s.ttl
			if j.FinishedAt != nil {
				ttl -= time.Since(j.FinishedAt.Time)
			}
			if ttl <= 0 {
				continue
			}
			p.Set(ctx, v.s.JobKey(j.ID), appendJob(make([]byte, 0, 512), j), ttl)
		}
		return nil
	})
	if err != nil {
		v.s.fail("store snapshots", err)
	}
	return err
}
