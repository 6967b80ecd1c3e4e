package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// sampler is a poor man's profiler of the server side (pg_stat_statements is not loaded
// on stock installs): every few milliseconds it records which statement each backend of
// the bench database is running and what it waits for. The shares say where the server's
// time goes: CPU (no wait event), WAL flush at commit (IO/WALSync, LWLock/WALWrite), locks.
type sampler struct {
	mu      sync.Mutex
	counts  map[string]int
	samples int
	stop    context.CancelFunc
	done    chan struct{}
}

const sampleEvery = 10 * time.Millisecond

func (b *bench) startSampler(ctx context.Context, database string) (*sampler, error) {
	conn, err := pgx.ConnectConfig(ctx, b.connConfig(database))
	if err != nil {
		return nil, fmt.Errorf("sampler: %w", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &sampler{counts: map[string]int{}, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer conn.Close(context.WithoutCancel(ctx))
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			rows, err := conn.Query(sctx, `
SELECT coalesce(substring(query FROM '-- name: (\w+)'), left(regexp_replace(query, '\s+', ' ', 'g'), 40)),
       coalesce(wait_event_type || '/' || wait_event, 'CPU')
FROM pg_stat_activity
WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()`)
			if err != nil {
				continue
			}
			s.mu.Lock()
			s.samples++
			for rows.Next() {
				var stmt, wait string
				if rows.Scan(&stmt, &wait) == nil {
					s.counts[stmt+" @ "+wait]++
				}
			}
			s.mu.Unlock()
			rows.Close()
		}
	}()
	return s, nil
}

// finish stops sampling and adds the top entries to the result as notes: the average
// number of backends in that statement and state (1.0 = one backend all the time).
func (s *sampler) finish(r *result) {
	s.stop()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.samples == 0 {
		return
	}
	keys := slices.SortedFunc(maps.Keys(s.counts), func(a, b string) int { return s.counts[b] - s.counts[a] })
	var parts []string
	for _, k := range keys[:min(len(keys), 8)] {
		parts = append(parts, fmt.Sprintf("%s %.2f", k, float64(s.counts[k])/float64(s.samples)))
	}
	r.note("server profile (backends busy on average; %d samples): %s", s.samples, strings.Join(parts, "; "))
}
