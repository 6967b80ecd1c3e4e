package api_test

import (
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/api"
)

var pathParam = regexp.MustCompile(`:([A-Za-z]+)`)

// TestEveryRouteRequiresAKey walks the router's own route list, so a route added later
// cannot skip auth unnoticed.
func TestEveryRouteRequiresAKey(t *testing.T) {
	t.Parallel()
	e := setup(t, func(d *api.Deps) { d.APIKeys = []string{"key-one", "key-two"} })
	routes := e.srv.Routes()
	require.NotEmpty(t, routes)

	var guarded int
	for _, r := range routes {
		path := pathParam.ReplaceAllString(r.Path, "x")
		if strings.HasSuffix(r.Path, "/wait") {
			path += "?timeout=1ms"
		}
		name := r.Method + " " + r.Path
		if r.Public {
			require.True(t, slices.Contains([]string{"/api/health", "/api/ready", "/api/openapi.json", "/metrics"}, r.Path),
				"%s must not be public", name)
			require.NotEqual(t, http.StatusUnauthorized, e.do(r.Method, path, nil).status, name)
			continue
		}
		require.True(t, strings.HasPrefix(r.Path, "/api/"), name)
		guarded++
		for _, headers := range [][]string{
			nil,
			{"Authorization", "Bearer wrong"},
			{"Authorization", "Bearer "},
			{"Authorization", "Basic key-one"},
			{"X-API-Key", "key-one-and-more"},
			{"X-API-Key", "key-on"},
		} {
			res := e.do(r.Method, path, nil, headers...)
			e.requireError(res, http.StatusUnauthorized, "unauthorized")
		}
		for _, headers := range [][]string{
			{"Authorization", "Bearer key-one"},
			{"Authorization", "bearer key-two"},
			{"X-API-Key", "key-two"},
		} {
			res := e.do(r.Method, path, nil, headers...)
			require.NotEqual(t, http.StatusUnauthorized, res.status, "%s with %v: %s", name, headers, res.body)
		}
	}
	require.GreaterOrEqual(t, guarded, 21, "every /api/queue and /api/notifications route")
}

func TestNoKeysMeansNoAuth(t *testing.T) {
	t.Parallel()
	e := setup(t)
	require.Equal(t, http.StatusOK, e.do("GET", "/api/queue/stats", nil).status)
}

func TestRateLimitPerKey(t *testing.T) {
	t.Parallel()
	e := setup(t, func(d *api.Deps) { d.APIKeys = []string{"a", "b"}; d.RateLimitSubmit = 2 })
	body := map[string]any{"type": anyType, "data": map[string]any{}}
	for range 2 {
		require.Equal(t, http.StatusCreated, e.do("POST", "/api/queue/jobs", body, "X-API-Key", "a").status)
	}
	r := e.do("POST", "/api/queue/jobs/bulk", map[string]any{"jobs": []any{body}}, "X-API-Key", "a")
	e.requireError(r, http.StatusTooManyRequests, "rate_limited")
	secs, err := strconv.Atoi(r.header.Get("Retry-After"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, secs, 1)

	require.Equal(t, http.StatusCreated, e.do("POST", "/api/queue/jobs", body, "X-API-Key", "b").status, "another key has its own bucket")
	require.Equal(t, http.StatusOK, e.do("GET", "/api/queue/stats", nil, "X-API-Key", "a").status, "only submissions are limited")
}

func TestRateLimitPerClientAddress(t *testing.T) {
	t.Parallel()
	body := map[string]any{"type": anyType, "data": map[string]any{}}

	// X-Forwarded-For from an untrusted peer is ignored: one bucket for the peer.
	e := setup(t, func(d *api.Deps) { d.RateLimitSubmit = 1 })
	require.Equal(t, http.StatusCreated, e.do("POST", "/api/queue/jobs", body, "X-Forwarded-For", "203.0.113.1").status)
	e.requireError(e.do("POST", "/api/queue/jobs", body, "X-Forwarded-For", "203.0.113.2"), http.StatusTooManyRequests, "rate_limited")

	// From a trusted proxy it names the client.
	p := setup(t, func(d *api.Deps) { d.RateLimitSubmit = 1; d.TrustedProxies = []string{"127.0.0.1/8", "::1"} })
	require.Equal(t, http.StatusCreated, p.do("POST", "/api/queue/jobs", body, "X-Forwarded-For", "203.0.113.1").status)
	require.Equal(t, http.StatusCreated, p.do("POST", "/api/queue/jobs", body, "X-Forwarded-For", "203.0.113.2").status)
	p.requireError(p.do("POST", "/api/queue/jobs", body, "X-Forwarded-For", "203.0.113.1"), http.StatusTooManyRequests, "rate_limited")

	// 0 disables the limit.
	off := setup(t, func(d *api.Deps) { d.RateLimitSubmit = 0 })
	for range 5 {
		require.Equal(t, http.StatusCreated, off.do("POST", "/api/queue/jobs", body).status)
	}
}

// TestOpenAPIMatchesRoutes: every registered route is documented and every documented
// route exists, and every $ref resolves.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	e := setup(t, func(d *api.Deps) { d.APIKeys = []string{"k"} })
	r := e.do("GET", "/api/openapi.json", nil)
	require.Equal(t, http.StatusOK, r.status, "served without a key")
	require.Equal(t, "application/json", r.header.Get("Content-Type"))

	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(r.body, &doc))
	require.True(t, strings.HasPrefix(doc.OpenAPI, "3."))

	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	registered := map[string]bool{}
	for _, rt := range e.srv.Routes() {
		registered[rt.Method+" "+pathParam.ReplaceAllString(rt.Path, "{$1}")] = true
	}
	for k := range registered {
		require.True(t, documented[k], "route %s is not in openapi.json", k)
	}
	for k := range documented {
		require.True(t, registered[k], "openapi.json documents %s, which is not a route", k)
	}

	var whole map[string]any
	require.NoError(t, json.Unmarshal(r.body, &whole))
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if k == "$ref" {
					ref := x.(string)
					require.True(t, strings.HasPrefix(ref, "#/"), ref)
					var node any = whole
					for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
						m, ok := node.(map[string]any)
						require.True(t, ok, "unresolved $ref %s", ref)
						node, ok = m[part]
						require.True(t, ok, "unresolved $ref %s", ref)
					}
					continue
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(whole)
}

// TestHTTPDocsCoverEveryRoute: http-docs/queue.http has a request for every route.
func TestHTTPDocsCoverEveryRoute(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../http-docs/queue.http")
	require.NoError(t, err)
	request := regexp.MustCompile(`(?m)^(GET|POST|PUT|PATCH|DELETE) \{\{base\}\}([^?\s]*)`)
	var requests []string
	for _, m := range request.FindAllStringSubmatch(string(raw), -1) {
		requests = append(requests, m[1]+" "+m[2])
	}
	e := setup(t)
	for _, rt := range e.srv.Routes() {
		pattern := regexp.MustCompile("^" + rt.Method + " " + pathParam.ReplaceAllString(regexp.QuoteMeta(rt.Path), `[^/]+`) + "$")
		require.True(t, slices.ContainsFunc(requests, pattern.MatchString), "http-docs/queue.http has no request for %s %s", rt.Method, rt.Path)
	}
}
