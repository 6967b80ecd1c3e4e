// Package config reads the environment (README, Configuration) into one typed, validated Config. A
// malformed or out-of-range value is an error naming the variable; nothing is silently
// replaced by a default.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pgqueue/queue/internal/jobs"
)

// Queue is one entry of QUEUE_QUEUES: a queue a worker serves, with its own slots.
type Queue struct {
	Name        string
	Concurrency int
}

// queueName is the shape of a queue's name.
var queueName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// Config is the whole environment of the api and worker processes.
type Config struct {
	DatabaseURL string

	RedisURL        string // wins over the fields below when set
	RedisHost       string
	RedisPort       int
	RedisPassword   string
	RedisDB         int
	RedisAddrs      []string // several → Cluster; with RedisMasterName → Sentinel
	RedisMasterName string
	RedisPrefix     string

	Port            int
	APIBind         string
	APIKeys         []string
	TrustedProxies  []string
	RateLimitSubmit int
	MaxStreams      int

	Concurrency      int
	Queues           []Queue // QUEUE_QUEUES; default: the default queue at Concurrency
	PollInterval     time.Duration
	Lease            time.Duration
	JobTimeout       time.Duration // 0: none
	ShutdownTimeout  time.Duration
	RemoveOnComplete int // -1 keep, 0 remove at once, N keep the N most recent
	RemoveOnFail     int
	EventsRetention  time.Duration
	ResultTTL        time.Duration
	StatsTTL         time.Duration
	MetricsPort      int // 0: off

	LogLevel  slog.Level
	LogFormat string // json or text

	DataDir         string
	FilesRoot       string
	ExportDir       string
	ExportRetention time.Duration
	MailDir         string
	TemplatesDir    string

	SMTPHost     string
	SMTPPort     int
	SMTPUsername string
	SMTPPassword string
	SMTPFrom     string
	SMTPTLS      string // starttls, implicit or none

	CleanupTempRoot string // root of temp_files
	CleanupLogsRoot string // root of old_logs
	SessionsTable   string

	CacheWarmAllowedHosts []string
}

// Load reads the process environment.
func Load() (*Config, error) { return LoadFrom(os.LookupEnv) }

// LoadFrom reads variables through lookup (os.LookupEnv, or a map in tests) and returns
// every problem found, each naming its variable.
func LoadFrom(lookup func(string) (string, bool)) (*Config, error) {
	r := &reader{lookup: lookup}
	c := &Config{}

	c.DatabaseURL = r.str("DATABASE_URL", "postgres://postgres:postgres@localhost:5432/queue?sslmode=disable")
	c.RedisURL = r.str("REDIS_URL", "")
	c.RedisHost = r.str("REDIS_HOST", "localhost")
	c.RedisPort = r.intIn("REDIS_PORT", 6379, 1, 65535)
	c.RedisPassword = r.str("REDIS_PASSWORD", "")
	c.RedisDB = r.intIn("REDIS_DB", 0, 0, 1<<20)
	c.RedisAddrs = r.list("REDIS_ADDRS")
	c.RedisMasterName = r.str("REDIS_MASTER_NAME", "")
	c.RedisPrefix = r.str("REDIS_PREFIX", "queue:")

	c.Port = r.intIn("PORT", 3001, 1, 65535)
	c.APIKeys = r.keys("API_KEYS")
	defaultBind := "127.0.0.1"
	if len(c.APIKeys) > 0 {
		defaultBind = "0.0.0.0"
	}
	c.APIBind = r.str("API_BIND", defaultBind)
	if net.ParseIP(c.APIBind) == nil && c.APIBind != "localhost" {
		r.fail("API_BIND", "must be an IP address, got %q", c.APIBind)
	}
	c.TrustedProxies = r.list("TRUSTED_PROXIES")
	c.RateLimitSubmit = r.intIn("RATE_LIMIT_SUBMIT", 100, 0, 1_000_000)
	c.MaxStreams = r.intIn("MAX_STREAMS", 1000, 1, 1_000_000)

	c.Concurrency = r.intIn("QUEUE_CONCURRENCY", 5, 1, 10_000)
	c.Queues = r.queues("QUEUE_QUEUES", c.Concurrency)
	c.PollInterval = r.duration("QUEUE_POLL_INTERVAL", time.Second, time.Millisecond)
	c.Lease = r.duration("QUEUE_LEASE", 30*time.Second, 100*time.Millisecond)
	c.JobTimeout = r.duration("QUEUE_JOB_TIMEOUT", 30*time.Minute, 0)
	c.ShutdownTimeout = r.duration("QUEUE_SHUTDOWN_TIMEOUT", 30*time.Second, 0)
	c.RemoveOnComplete = r.retention("QUEUE_REMOVE_ON_COMPLETE", 10)
	c.RemoveOnFail = r.retention("QUEUE_REMOVE_ON_FAIL", 50)
	c.EventsRetention = r.duration("QUEUE_EVENTS_RETENTION", 720*time.Hour, time.Minute)
	c.ResultTTL = r.duration("RESULT_TTL", 24*time.Hour, time.Second)
	c.StatsTTL = r.duration("STATS_TTL", time.Second, time.Millisecond)
	c.MetricsPort = r.intIn("METRICS_PORT", 9464, 0, 65535)

	c.LogLevel = r.level("LOG_LEVEL")
	c.LogFormat = r.oneOf("LOG_FORMAT", "json", "json", "text")

	c.DataDir = r.str("DATA_DIR", "./data")
	c.FilesRoot = r.str("FILES_ROOT", filepath.Join(c.DataDir, "files"))
	c.ExportDir = r.str("EXPORT_DIR", filepath.Join(c.DataDir, "exports"))
	c.ExportRetention = r.duration("EXPORT_RETENTION", 168*time.Hour, time.Minute)
	c.MailDir = r.str("MAIL_DIR", filepath.Join(c.DataDir, "mail"))
	c.TemplatesDir = r.str("TEMPLATES_DIR", filepath.Join(c.DataDir, "templates"))

	c.SMTPHost = r.str("SMTP_HOST", "")
	c.SMTPPort = r.intIn("SMTP_PORT", 587, 1, 65535)
	c.SMTPUsername = r.str("SMTP_USERNAME", "")
	c.SMTPPassword = r.str("SMTP_PASSWORD", "")
	c.SMTPFrom = r.str("SMTP_FROM", "queue@localhost")
	c.SMTPTLS = r.oneOf("SMTP_TLS", "starttls", "starttls", "implicit", "none")
	if c.SMTPTLS == "none" && c.SMTPHost != "" && !loopbackHost(c.SMTPHost) {
		r.fail("SMTP_TLS", "none is allowed only for a loopback SMTP_HOST, got %q", c.SMTPHost)
	}

	roots := r.list("CLEANUP_ROOTS")
	if _, set := lookup("CLEANUP_ROOTS"); !set {
		roots = []string{filepath.Join(c.DataDir, "tmp"), filepath.Join(c.DataDir, "logs")}
	}
	if len(roots) != 2 {
		r.fail("CLEANUP_ROOTS", "must name two folders, the temp_files root and the old_logs root, separated by a comma")
	} else {
		c.CleanupTempRoot, c.CleanupLogsRoot = roots[0], roots[1]
	}
	c.SessionsTable = r.str("SESSIONS_TABLE", "sessions")
	if !sqlName.MatchString(c.SessionsTable) {
		r.fail("SESSIONS_TABLE", "must be a table name, optionally schema-qualified (letters, digits, _), got %q", c.SessionsTable)
	}
	c.CacheWarmAllowedHosts = r.list("CACHE_WARM_ALLOWED_HOSTS")

	if _, err := c.RedisOptions(); err != nil {
		r.errs = append(r.errs, err)
	}
	if err := errors.Join(r.errs...); err != nil {
		return nil, err
	}
	return c, nil
}

var sqlName = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]{0,62}\.)?[A-Za-z_][A-Za-z0-9_]{0,62}$`)

func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// EnsureDirs creates the data folders that are missing.
func (c *Config) EnsureDirs() error {
	for _, d := range []string{c.DataDir, c.FilesRoot, c.ExportDir, c.MailDir, c.TemplatesDir, c.CleanupTempRoot, c.CleanupLogsRoot} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	return nil
}

// Logger builds the process logger from LOG_LEVEL and LOG_FORMAT.
func (c *Config) Logger() *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}

type reader struct {
	lookup func(string) (string, bool)
	errs   []error
}

func (r *reader) fail(name, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
}

func (r *reader) raw(name string) (string, bool) {
	v, ok := r.lookup(name)
	if !ok {
		return "", false
	}
	return strings.TrimSpace(v), true
}

func (r *reader) str(name, def string) string {
	if v, ok := r.raw(name); ok && v != "" {
		return v
	}
	return def
}

func (r *reader) intIn(name string, def, lo, hi int) int {
	v, ok := r.raw(name)
	if !ok || v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		r.fail(name, "must be an integer, got %q", v)
		return def
	}
	if n < lo || n > hi {
		r.fail(name, "must be between %d and %d, got %d", lo, hi, n)
	}
	return n
}

func (r *reader) duration(name string, def, lo time.Duration) time.Duration {
	v, ok := r.raw(name)
	if !ok || v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.fail(name, "must be a Go duration such as 500ms or 30s, got %q", v)
		return def
	}
	if d < lo {
		r.fail(name, "must be at least %s, got %s", lo, d)
	}
	return d
}

func (r *reader) retention(name string, def int) int {
	v, ok := r.raw(name)
	if !ok || v == "" {
		return def
	}
	switch v {
	case "true":
		return 0
	case "false":
		return -1
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < -1 {
		r.fail(name, "must be true, false or an integer >= -1, got %q", v)
		return def
	}
	return n
}

func (r *reader) oneOf(name, def string, allowed ...string) string {
	v := r.str(name, def)
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	r.fail(name, "must be one of %s, got %q", strings.Join(allowed, ", "), v)
	return def
}

func (r *reader) level(name string) slog.Level {
	var l slog.Level
	v := r.str(name, "info")
	if err := l.UnmarshalText([]byte(v)); err != nil {
		r.fail(name, "must be debug, info, warn or error, got %q", v)
		return slog.LevelInfo
	}
	return l
}

// queues reads QUEUE_QUEUES: name:concurrency entries, comma-separated. Unset or empty:
// the default queue at the given concurrency.
func (r *reader) queues(name string, concurrency int) []Queue {
	v, _ := r.raw(name)
	if v == "" {
		return []Queue{{Name: "default", Concurrency: concurrency}}
	}
	var out []Queue
	seen := map[string]bool{}
	for _, entry := range strings.Split(v, ",") {
		entry = strings.TrimSpace(entry)
		q, n, ok := strings.Cut(entry, ":")
		c, err := strconv.Atoi(strings.TrimSpace(n))
		q = strings.TrimSpace(q)
		switch {
		case !ok || err != nil:
			r.fail(name, "entries must be name:concurrency (default:5,emails:20), got %q", entry)
		case !queueName.MatchString(q):
			r.fail(name, "queue name %q must be 1..64 characters of [a-z0-9_-] starting with a letter or digit", q)
		case c < 1 || c > 10_000:
			r.fail(name, "concurrency of %s must be between 1 and 10000, got %d", q, c)
		case seen[q]:
			r.fail(name, "queue %s is listed twice", q)
		default:
			seen[q] = true
			out = append(out, Queue{Name: q, Concurrency: c})
		}
	}
	return out
}

// list splits a comma-separated value, trimming entries and dropping empty ones.
func (r *reader) list(name string) []string {
	v, _ := r.raw(name)
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// keys is API_KEYS: an empty entry is an error, since it would be a key anyone can send.
func (r *reader) keys(name string) []string {
	v, ok := r.raw(name)
	if !ok || v == "" {
		return nil
	}
	var out []string
	for i, p := range strings.Split(v, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			r.fail(name, "entry %d is empty", i+1)
			continue
		}
		out = append(out, p)
	}
	return out
}

// JobSettings are the built-in job types' settings from this environment.
func (c *Config) JobSettings() jobs.Settings {
	return jobs.Settings{
		FromEnvironment: true,
		RedisPrefix:     c.RedisPrefix,
		FilesRoot:       c.FilesRoot,
		ExportDir:       c.ExportDir,
		ExportRetention: c.ExportRetention,
		MailDir:         c.MailDir,
		TemplatesDir:    c.TemplatesDir,
		SMTP: jobs.SMTP{Host: c.SMTPHost, Port: c.SMTPPort, Username: c.SMTPUsername, Password: c.SMTPPassword,
			From: c.SMTPFrom, TLS: c.SMTPTLS},
		CleanupTempRoot:       c.CleanupTempRoot,
		CleanupLogsRoot:       c.CleanupLogsRoot,
		SessionsTable:         c.SessionsTable,
		CacheWarmAllowedHosts: c.CacheWarmAllowedHosts,
	}
}
