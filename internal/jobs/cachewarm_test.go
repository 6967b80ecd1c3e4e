package jobs

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/kinds"
)

func requireCached(t *testing.T, b *bundle, r CacheWarmResult, cacheKey string, ttl int) string {
	t.Helper()
	ctx := context.Background()
	require.Equal(t, b.cfg.RedisPrefix+"cache:"+cacheKey, r.Key)
	require.Equal(t, ttl, r.TTL)
	value, err := b.redis.Get(ctx, r.Key).Result()
	require.NoError(t, err)
	require.Len(t, value, r.Bytes)
	left, err := b.redis.TTL(ctx, r.Key).Result()
	require.NoError(t, err)
	require.Greater(t, left, time.Duration(0))
	require.LessOrEqual(t, left, time.Duration(ttl)*time.Second)
	t.Cleanup(func() { b.redis.Del(context.Background(), r.Key) })
	return value
}

func TestCacheWarmStats(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{db: true})
	insertJobs(t, b.pool, 10, 1)
	b.deps.Stats = queueStats(t, b.pool)
	res, err := run(t, cacheWarmKind(b.deps), obj{"cacheKey": "dashboard:stats", "dataSource": "stats", "ttl": 120})
	require.NoError(t, err)
	value := requireCached(t, b, res.(CacheWarmResult), "dashboard:stats", 120)
	// The stats object exactly as the API shows it.
	require.JSONEq(t, `{"waiting": 8, "active": 0, "completed": 2, "failed": 0, "delayed": 0, "cancelled": 0, "paused": false,
		"byType": {
			"EMAIL_SEND": {"waiting": 4, "active": 0, "completed": 1, "failed": 0, "delayed": 0, "cancelled": 0},
			"CLEANUP": {"waiting": 4, "active": 0, "completed": 1, "failed": 0, "delayed": 0, "cancelled": 0}},
		"byQueue": {"default": {"waiting": 8, "active": 0, "completed": 2, "failed": 0, "delayed": 0, "cancelled": 0}}}`, value)

	// Without a stats source the job cannot run: permanent.
	b.deps.Stats = nil
	_, err = run(t, cacheWarmKind(b.deps), obj{"cacheKey": "dashboard:stats", "dataSource": "stats"})
	require.ErrorIs(t, err, errNotConfigured)
	require.True(t, kinds.IsPermanent(err))
}

func TestCacheWarmNamedQuery(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{db: true})
	insertJobs(t, b.pool, 10, 1)
	b.deps.Stats = queueStats(t, b.pool)
	kind := cacheWarmKind(b.deps)
	res, err := run(t, kind, obj{"cacheKey": "counts", "dataSource": "query:job_counts_by_type"})
	require.NoError(t, err)
	value := requireCached(t, b, res.(CacheWarmResult), "counts", 3600)
	require.JSONEq(t, `{"EMAIL_SEND": {"waiting": 4, "completed": 1}, "CLEANUP": {"waiting": 4, "completed": 1}}`, value,
		"states with jobs only")

	res, err = run(t, kind, obj{"cacheKey": "states", "dataSource": "query:job_counts_by_state"})
	require.NoError(t, err)
	value = requireCached(t, b, res.(CacheWarmResult), "states", 3600)
	require.JSONEq(t, `{"waiting": 8, "completed": 2}`, value)

	_, err = b.pool.Exec(context.Background(), `UPDATE queue.queue_state SET paused = true`)
	require.NoError(t, err)
	res, err = run(t, kind, obj{"cacheKey": "paused", "dataSource": "query:queue_paused"})
	require.NoError(t, err)
	value = requireCached(t, b, res.(CacheWarmResult), "paused", 3600)
	require.JSONEq(t, `{"paused": true}`, value)
}

// fetchBundle serves body at an httptest server on loopback and returns a handler that,
// for this test only, may dial loopback.
func fetchServer(t *testing.T, handler http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func TestCacheWarmFetchesAllowedHost(t *testing.T) {
	t.Parallel()
	srv, hits := fetchServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/data":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"prices": [1, 2, 3]}`))
		case "/redirect":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
		case "/big":
			_, _ = w.Write([]byte(strings.Repeat("x", 1<<20+1)))
		case "/busy":
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	})
	host := must(url.Parse(srv.URL)).Hostname()
	b := setup(t, setupOpts{env: map[string]string{"CACHE_WARM_ALLOWED_HOSTS": "api.example.com, " + host}})
	h := newCacheWarmHandler(b.deps)
	h.allowAddr = func(ip netip.Addr) bool { return ip.IsLoopback() } // the test server only
	kind := kinds.Define(TypeCacheWarm, h.run, allowedHostsCheck(b.cfg.CacheWarmAllowedHosts))

	res, err := run(t, kind, obj{"cacheKey": "prices", "dataSource": srv.URL + "/data", "ttl": 30})
	require.NoError(t, err)
	require.Equal(t, `{"prices": [1, 2, 3]}`, requireCached(t, b, res.(CacheWarmResult), "prices", 30))

	for path, permanent := range map[string]bool{"/redirect": true, "/big": true, "/missing": true, "/busy": false} {
		_, err := run(t, kind, obj{"cacheKey": "k", "dataSource": srv.URL + path})
		require.Error(t, err, path)
		require.Equal(t, permanent, kinds.IsPermanent(err), "%s: %v", path, err)
	}
	require.Equal(t, int64(5), hits.Load(), "the redirect was not followed")
	require.Zero(t, b.redis.Exists(context.Background(), b.cfg.RedisPrefix+"cache:k").Val())
}

func TestCacheWarmRefusesHosts(t *testing.T) {
	t.Parallel()
	srv, hits := fetchServer(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("internal")) })
	u := must(url.Parse(srv.URL))
	b := setup(t, setupOpts{env: map[string]string{"CACHE_WARM_ALLOWED_HOSTS": "127.0.0.1,localhost"}})
	// The production address check. The kind's submission check refuses a host that is
	// not on the list; the kind here leaves it out, so the handler's own check (what a job
	// enqueued in SQL meets) is what is tested.
	h := kinds.Define(TypeCacheWarm, newCacheWarmHandler(b.deps).run)

	// Not on the allow-list: refused at submission, and when the job runs, before any
	// request.
	problems := cacheWarmKind(b.deps).Check(json.RawMessage(`{"cacheKey":"k","dataSource":"http://metadata.internal/secret"}`))
	require.Equal(t, []kinds.Problem{{Field: "dataSource", Message: "the host metadata.internal is not in CACHE_WARM_ALLOWED_HOSTS"}}, problems)
	_, err := run(t, h, obj{"cacheKey": "k", "dataSource": "http://metadata.internal/secret"})
	require.ErrorContains(t, err, "CACHE_WARM_ALLOWED_HOSTS")
	require.True(t, kinds.IsPermanent(err))

	// On the list, but loopback: the dial check refuses the resolved address, also when
	// a name (localhost) resolves to it.
	for _, source := range []string{srv.URL + "/x", "http://localhost:" + u.Port() + "/x"} {
		_, err = run(t, h, obj{"cacheKey": "k", "dataSource": source})
		require.ErrorIs(t, err, errRefusedAddress, source)
		require.True(t, kinds.IsPermanent(err))
	}
	require.Zero(t, hits.Load(), "no request reached the server")
	require.Zero(t, b.redis.Exists(context.Background(), b.cfg.RedisPrefix+"cache:k").Val())
}

func TestPublicAddr(t *testing.T) {
	t.Parallel()
	for addr, public := range map[string]bool{
		"93.184.216.34": true, "2606:2800:220:1:248:1893:25c8:1946": true,
		"127.0.0.1": false, "::1": false, "10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false,
		"169.254.169.254": false, "fe80::1": false, "fc00::1": false, "0.0.0.0": false, "::": false,
		"100.64.0.1": false, "224.0.0.1": false, "64:ff9b::a00:1": false, "2002:a00:1::": false,
	} {
		require.Equal(t, public, publicAddr(netip.MustParseAddr(addr)), addr)
	}
	// An IPv4-mapped IPv6 address is judged as the IPv4 address it holds.
	require.False(t, publicAddr(netip.MustParseAddr("::ffff:127.0.0.1").Unmap()))
}

func TestCacheWarmRedisErrorIsRetried(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = dead.Close() })
	b.deps.Redis = dead
	b.deps.Stats = func(context.Context) (Stats, error) { return Stats{Object: json.RawMessage(`{}`)}, nil }
	_, err := run(t, cacheWarmKind(b.deps), obj{"cacheKey": "k", "dataSource": "stats"})
	require.Error(t, err)
	require.False(t, kinds.IsPermanent(err), "storing is the work: a Redis error is retried")
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
