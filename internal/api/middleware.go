package api

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/pgqueue/queue/internal/queue"
)

// Keys of values the middleware stores in the gin context.
const (
	ctxLogger    = "api.logger"
	ctxRequestID = "api.request_id"
	ctxAPIKey    = "api.key" // index of the matched API key, for the rate limit
)

// requestIDPattern bounds a client's X-Request-ID, so logs cannot be polluted by it.
var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func requestID(c *gin.Context) string { return c.GetString(ctxRequestID) }

// requestLog honours or generates X-Request-ID, returns it, and logs and measures every
// request once it is answered.
func (s *Server) requestLog(c *gin.Context) {
	start := time.Now()
	id := c.GetHeader("X-Request-ID")
	if !requestIDPattern.MatchString(id) {
		id = newRequestID()
	}
	c.Set(ctxRequestID, id)
	c.Header("X-Request-ID", id)
	log := s.log.With("request_id", id)
	c.Set(ctxLogger, log)

	c.Next()

	route := c.FullPath()
	if route == "" {
		route = "unmatched" // bounded label values: never the raw path
	}
	status := c.Writer.Status()
	elapsed := time.Since(start)
	s.metrics.observe(c.Request.Method, route, status, elapsed)
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	log.Log(c.Request.Context(), level, "http request",
		"method", c.Request.Method, "route", route, "path", c.Request.URL.Path,
		"status", status, "latency_ms", float64(elapsed.Microseconds())/1000,
		"client_ip", c.ClientIP(), "bytes", c.Writer.Size())
}

// recoverPanics turns a handler's panic into a 500 without a stack in the answer; the
// stack goes to the log.
func (s *Server) recoverPanics(c *gin.Context) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p) // a deliberate cut of the connection, for net/http to carry out
			}
			logger(c).Error("handler panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			respondError(c, fmt.Errorf("panic: %v", p))
		}
	}()
	c.Next()
}

// limitBody refuses bodies over 1 MiB on every route, whether its handler reads the body
// or not.
func limitBody(c *gin.Context) {
	if c.Request.ContentLength > maxBodyBytes {
		respondError(c, errTooLarge())
		return
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, maxBodyBytes)
}

// keyring checks API keys in constant time. Keys are compared as SHA-256 digests, so
// neither a key's content nor its length shows in the timing, and every key is compared
// on every request.
type keyring struct {
	digests [][sha256.Size]byte
}

func newKeyring(keys []string) keyring {
	k := keyring{}
	for _, key := range keys {
		k.digests = append(k.digests, sha256.Sum256([]byte(key)))
	}
	return k
}

func (k keyring) enabled() bool { return len(k.digests) > 0 }

// match returns the index of the key, or -1.
func (k keyring) match(given string) int {
	d := sha256.Sum256([]byte(given))
	found := -1
	for i := range k.digests {
		if subtle.ConstantTimeCompare(d[:], k.digests[i][:]) == 1 {
			found = i
		}
	}
	return found
}

// presentedKey reads "Authorization: Bearer KEY", else "X-API-Key: KEY".
func presentedKey(c *gin.Context) string {
	scheme, token, ok := strings.Cut(c.GetHeader("Authorization"), " ")
	if ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(token)
	}
	return strings.TrimSpace(c.GetHeader("X-API-Key"))
}

// authenticate guards every route of its group when API keys are set.
func (s *Server) authenticate(c *gin.Context) {
	if !s.keys.enabled() {
		return
	}
	key := presentedKey(c)
	i := -1
	if key != "" {
		i = s.keys.match(key)
	}
	if i < 0 {
		respondError(c, errUnauthorized())
		return
	}
	c.Set(ctxAPIKey, i)
}

// clientKey names the client for per-client limits: the API key when keys are set, else
// the client address (X-Forwarded-For only from TRUSTED_PROXIES).
func clientKey(c *gin.Context) string {
	if i, ok := c.Get(ctxAPIKey); ok {
		return fmt.Sprintf("key:%d", i)
	}
	return "ip:" + c.ClientIP()
}

// rateLimit allows RATE_LIMIT_SUBMIT submission requests per second per client.
func (s *Server) rateLimit(c *gin.Context) {
	if ok, retryAfter := s.limiter.allow(clientKey(c)); !ok {
		respondError(c, errRateLimited(retryAfter))
	}
}

// cleanInput refuses a path segment or query value (or key) that holds NUL or is not
// valid UTF-8: no id, type or cursor can, and Postgres would refuse it with an error
// that is not the client's to see.
func cleanInput(c *gin.Context) {
	bad := func(s string) bool { return !utf8.ValidString(s) || strings.ContainsRune(s, 0) }
	v := &queue.ValidationError{}
	for _, p := range c.Params {
		if bad(p.Value) {
			v.Add(p.Key, "must be valid UTF-8 without NUL")
		}
	}
	for key, values := range c.Request.URL.Query() {
		if bad(key) {
			v.Add("query", "parameter names must be valid UTF-8 without NUL")
			continue
		}
		for _, val := range values {
			if bad(val) {
				v.Add(key, "must be valid UTF-8 without NUL")
				break
			}
		}
	}
	if err := v.Err(); err != nil {
		respondError(c, err)
	}
}
