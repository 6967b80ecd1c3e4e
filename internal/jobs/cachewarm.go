package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pgqueue/queue/internal/kinds"
)

// cacheWarmData is CACHE_WARM's data.
type cacheWarmData struct {
	UserID     *string `json:"userId" validate:"omitnil,min=1,max=128"`
	CacheKey   string  `json:"cacheKey" validate:"required"`
	DataSource string  `json:"dataSource" validate:"required,max=2048"`
	TTL        *int    `json:"ttl" validate:"omitnil,min=1,max=604800"`
}

var cacheKeyPattern = regexp.MustCompile(`^[A-Za-z0-9:_.-]{1,200}$`)

// cacheQueries are the named values a dataSource "query:NAME" may read, all from the
// queue's own counts; nothing else can be named.
var cacheQueries = map[string]func(Stats) any{
	"job_counts_by_type":  func(s Stats) any { return s.ByType },
	"job_counts_by_state": func(s Stats) any { return s.ByState },
	"queue_paused":        func(s Stats) any { return map[string]bool{"paused": s.Paused} },
}

// Check holds the key to its pattern and the source to stats, a named query or an
// http(s) URL; whether a URL's host is allowed is a setting (allowedHostsCheck).
func (d *cacheWarmData) Check() []kinds.Problem {
	var problems []kinds.Problem
	if d.CacheKey != "" && !cacheKeyPattern.MatchString(d.CacheKey) {
		problems = append(problems, kinds.Problem{Field: "cacheKey", Message: "must match ^[A-Za-z0-9:_.-]{1,200}$"})
	}
	if d.DataSource == "" || d.DataSource == "stats" {
		return problems
	}
	if name, ok := strings.CutPrefix(d.DataSource, "query:"); ok {
		if _, known := cacheQueries[name]; !known {
			problems = append(problems, kinds.Problem{Field: "dataSource", Message: "unknown query; one of: " + strings.Join(queryNames(), ", ")})
		}
		return problems
	}
	if _, err := parseSourceURL(d.DataSource); err != nil {
		problems = append(problems, kinds.Problem{Field: "dataSource", Message: "must be stats, query:NAME or an http(s) URL: " + err.Error()})
	}
	return problems
}

// allowedHostsCheck refuses, at submission, a URL whose host is not in allowedHosts. The
// handler checks again when the job runs.
func allowedHostsCheck(allowedHosts []string) func(*cacheWarmData) []kinds.Problem {
	return func(d *cacheWarmData) []kinds.Problem {
		if d.DataSource == "stats" || strings.HasPrefix(d.DataSource, "query:") {
			return nil
		}
		if u, err := parseSourceURL(d.DataSource); err == nil && !hostAllowed(allowedHosts, u) {
			return []kinds.Problem{{Field: "dataSource", Message: "the host " + u.Hostname() + " is not in CACHE_WARM_ALLOWED_HOSTS"}}
		}
		return nil
	}
}

func cacheWarmKind(deps Deps) kinds.Kind {
	h := newCacheWarmHandler(deps)
	if deps.FromEnvironment {
		return kinds.Define(TypeCacheWarm, h.run, allowedHostsCheck(deps.CacheWarmAllowedHosts))
	}
	return kinds.Define(TypeCacheWarm, h.run)
}

func queryNames() []string {
	names := make([]string, 0, len(cacheQueries))
	for n := range cacheQueries {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func parseSourceURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return nil, errors.New("not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, errors.New("the scheme must be http or https")
	case u.Hostname() == "":
		return nil, errors.New("the URL has no host")
	case u.User != nil:
		return nil, errors.New("the URL must not carry credentials")
	}
	return u, nil
}

const (
	defaultCacheTTL  = 3600
	fetchTimeout     = 10 * time.Second
	maxFetchBody     = 1 << 20
	maxFetchHeaders  = 64 << 10
	cacheKeyInfix    = "cache:"
	tlsHandshakeTime = 5 * time.Second
)

// CacheWarmResult is CACHE_WARM's result.
type CacheWarmResult struct {
	Key    string `json:"key"`
	Bytes  int    `json:"bytes"`
	TTL    int    `json:"ttl"`
	Source string `json:"source"`
}

type cacheWarmHandler struct {
	deps   Deps
	client *http.Client
	// allowAddr decides which resolved addresses may be dialled; nil means public ones
	// only. Tests set it to reach an httptest server on loopback.
	allowAddr func(netip.Addr) bool
}

var errRefusedAddress = errors.New("address refused: loopback, private, link-local and other non-public addresses are never fetched")

func newCacheWarmHandler(deps Deps) *cacheWarmHandler {
	h := &cacheWarmHandler{deps: deps}
	// The check runs on the address actually dialled, after DNS, so a name that
	// resolves (or re-resolves) to an internal address is refused all the same.
	dialer := &net.Dialer{
		Timeout: fetchTimeout,
		Control: func(network, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			ip, err := netip.ParseAddr(host)
			if err != nil {
				return fmt.Errorf("%w: %s", errRefusedAddress, address)
			}
			allow := publicAddr
			if h.allowAddr != nil {
				allow = h.allowAddr
			}
			if !allow(ip.Unmap()) {
				return fmt.Errorf("%w: %s", errRefusedAddress, address)
			}
			return nil
		},
	}
	h.client = &http.Client{
		Timeout: fetchTimeout,
		Transport: &http.Transport{
			Proxy:                  nil, // a proxy would dial on our behalf, past the check
			DialContext:            dialer.DialContext,
			TLSHandshakeTimeout:    tlsHandshakeTime,
			ResponseHeaderTimeout:  fetchTimeout,
			MaxResponseHeaderBytes: maxFetchHeaders,
			MaxIdleConns:           4,
			IdleConnTimeout:        30 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return h
}

// nonPublic are ranges that the netip predicates do not cover but that never name a
// public service (shared CGNAT space, benchmarking, reserved, and IPv6 forms that embed
// an IPv4 address).
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("2002::/16"),
}

func publicAddr(ip netip.Addr) bool {
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() ||
		ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

func (h *cacheWarmHandler) run(ctx context.Context, job *kinds.Job, d *cacheWarmData) (any, error) {
	if h.deps.Redis == nil {
		return nil, kinds.Permanent(errNotConfigured)
	}
	var value []byte
	var err error
	source := d.DataSource
	switch {
	case source == "stats":
		value, err = h.stats(ctx)
	case strings.HasPrefix(source, "query:"):
		value, err = h.query(ctx, strings.TrimPrefix(source, "query:"))
		source = "query"
	default:
		value, err = h.fetch(ctx, d.DataSource)
		source = "http"
	}
	if err != nil {
		return nil, err
	}
	ttl := defaultCacheTTL
	if d.TTL != nil {
		ttl = *d.TTL
	}
	key := h.deps.RedisPrefix + cacheKeyInfix + d.CacheKey
	// Storing the value is the work itself: a Redis error is an ordinary, retried error.
	if err := h.deps.Redis.Set(ctx, key, value, time.Duration(ttl)*time.Second).Err(); err != nil {
		return nil, fmt.Errorf("store %s in Redis: %w", key, err)
	}
	h.deps.jobLog(job).Info("cache warmed", "key", key, "bytes", len(value), "source", source)
	return CacheWarmResult{Key: key, Bytes: len(value), TTL: ttl, Source: source}, nil
}

func (h *cacheWarmHandler) stats(ctx context.Context) ([]byte, error) {
	s, err := h.readStats(ctx)
	if err != nil {
		return nil, err
	}
	return json.Marshal(s.Object)
}

func (h *cacheWarmHandler) readStats(ctx context.Context) (Stats, error) {
	if h.deps.Stats == nil {
		return Stats{}, kinds.Permanent(errNotConfigured)
	}
	s, err := h.deps.Stats(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("queue stats: %w", err)
	}
	return s, nil
}

func (h *cacheWarmHandler) query(ctx context.Context, name string) ([]byte, error) {
	project, ok := cacheQueries[name]
	if !ok {
		return nil, kinds.Permanentf("unknown query %q", name)
	}
	s, err := h.readStats(ctx)
	if err != nil {
		return nil, err
	}
	return json.Marshal(project(s))
}

// hostAllowed reports whether the URL's host (or host:port) is on the allow-list.
func hostAllowed(allowed []string, u *url.URL) bool {
	host := strings.ToLower(u.Hostname())
	hostPort := strings.ToLower(u.Host)
	for _, a := range allowed {
		a = strings.ToLower(strings.TrimSuffix(a, "."))
		if a == host || a == hostPort {
			return true
		}
	}
	return false
}

func (h *cacheWarmHandler) fetch(ctx context.Context, raw string) ([]byte, error) {
	u, err := parseSourceURL(raw)
	if err != nil {
		return nil, kinds.Permanentf("dataSource: %w", err)
	}
	if !hostAllowed(h.deps.CacheWarmAllowedHosts, u) {
		return nil, kinds.Permanentf("host %q is not in CACHE_WARM_ALLOWED_HOSTS", u.Hostname())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, kinds.Permanentf("dataSource: %w", err)
	}
	req.Header.Set("User-Agent", "pgqueue-cache-warm")
	resp, err := h.client.Do(req)
	if err != nil {
		if errors.Is(err, errRefusedAddress) {
			return nil, kinds.Permanentf("fetch %s: %w", u.Redacted(), err)
		}
		return nil, fmt.Errorf("fetch %s: %w", u.Redacted(), err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return nil, kinds.Permanentf("fetch %s: %s; redirects are not followed", u.Redacted(), resp.Status)
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return nil, fmt.Errorf("fetch %s: %s", u.Redacted(), resp.Status)
	case resp.StatusCode >= 400:
		return nil, kinds.Permanentf("fetch %s: %s", u.Redacted(), resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFetchBody+1))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", u.Redacted(), err)
	}
	if len(body) > maxFetchBody {
		return nil, kinds.Permanentf("fetch %s: the body is larger than %d bytes", u.Redacted(), maxFetchBody)
	}
	return body, nil
}
