package results

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
)

// StatsCache serves the stats JSON at most ttl old: from this process's memory, then
// from Redis (shared by API processes), and only then by computing it, once at a time.
// So any number of dashboards cost at most one stats query per ttl per process, and
// usually one per ttl in all. Without Redis it still caches in memory.
type StatsCache struct {
	store   *Store
	ttl     time.Duration
	compute func(context.Context) ([]byte, error)
	group   singleflight.Group

	mu      sync.Mutex
	value   []byte
	expires time.Time
}

// NewStatsCache caches compute's answer for ttl (STATS_TTL).
func (s *Store) NewStatsCache(ttl time.Duration, compute func(context.Context) ([]byte, error)) *StatsCache {
	return &StatsCache{store: s, ttl: ttl, compute: compute}
}

// Get returns the stats JSON.
func (c *StatsCache) Get(ctx context.Context) ([]byte, error) {
	c.mu.Lock()
	if time.Now().Before(c.expires) {
		v := c.value
		c.mu.Unlock()
		return v, nil
	}
	c.mu.Unlock()
	v, err, _ := c.group.Do("stats", func() (any, error) {
		// Detached from one caller's cancellation: other callers share this result.
		ctx := context.WithoutCancel(ctx)
		key := c.store.StatsKey()
		if b, err := c.store.rdb.Get(ctx, key).Bytes(); err == nil {
			c.remember(b, c.store.rdb.PTTL(ctx, key).Val())
			return b, nil
		} else if !errors.Is(err, redis.Nil) {
			c.store.fail("get stats", err)
		}
		b, err := c.compute(ctx)
		if err != nil {
			return nil, err
		}
		if err := c.store.rdb.Set(ctx, key, b, c.ttl).Err(); err != nil {
			c.store.fail("set stats", err)
		}
		c.remember(b, c.ttl)
		return b, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

func (c *StatsCache) remember(b []byte, ttl time.Duration) {
	if ttl <= 0 || ttl > c.ttl {
		ttl = c.ttl
	}
	c.mu.Lock()
	c.value, c.expires = b, time.Now().Add(ttl)
	c.mu.Unlock()
}

// Forget drops the cached stats, here and in Redis, after a change an operator expects
// to see at once (pause, resume, clean).
func (c *StatsCache) Forget(ctx context.Context) {
	c.mu.Lock()
	c.expires = time.Time{}
	c.mu.Unlock()
	if err := c.store.rdb.Del(ctx, c.store.StatsKey()).Err(); err != nil {
		c.store.fail("forget stats", err)
	}
}
