package config_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/config"
)

func load(env map[string]string) (*config.Config, error) {
	return config.LoadFrom(func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := load(nil)
	require.NoError(t, err)
	require.Equal(t, "postgres://postgres:postgres@localhost:5432/queue?sslmode=disable", c.DatabaseURL)
	require.Equal(t, 5, c.Concurrency)
	require.Equal(t, []config.Queue{{Name: "default", Concurrency: 5}}, c.Queues, "the default queue at QUEUE_CONCURRENCY")
	require.Equal(t, time.Second, c.PollInterval)
	require.Equal(t, 30*time.Second, c.Lease)
	require.Equal(t, 30*time.Minute, c.JobTimeout)
	require.Equal(t, 10, c.RemoveOnComplete)
	require.Equal(t, 50, c.RemoveOnFail)
	require.Equal(t, 3001, c.Port)
	require.Equal(t, "127.0.0.1", c.APIBind, "loopback only without API keys")
	require.Equal(t, "queue:", c.RedisPrefix)
	require.Equal(t, 100, c.RateLimitSubmit)
	require.Equal(t, filepath.Join("data", "files"), filepath.Clean(c.FilesRoot))
	require.Equal(t, filepath.Join("data", "tmp"), filepath.Clean(c.CleanupTempRoot))
	require.Equal(t, "starttls", c.SMTPTLS)
}

func TestValues(t *testing.T) {
	t.Parallel()
	c, err := load(map[string]string{
		"API_KEYS": " k1 , k2 ", "QUEUE_CONCURRENCY": "32", "QUEUE_LEASE": "5s",
		"QUEUE_REMOVE_ON_COMPLETE": "true", "QUEUE_REMOVE_ON_FAIL": "false", "DATA_DIR": "/srv/q",
		"CLEANUP_ROOTS": "/a,/b", "LOG_LEVEL": "debug",
	})
	require.NoError(t, err)
	require.Equal(t, []string{"k1", "k2"}, c.APIKeys)
	require.Equal(t, "0.0.0.0", c.APIBind)
	require.Equal(t, 32, c.Concurrency)
	require.Equal(t, []config.Queue{{Name: "default", Concurrency: 32}}, c.Queues)
	require.Equal(t, 5*time.Second, c.Lease)
	require.Equal(t, 0, c.RemoveOnComplete)
	require.Equal(t, -1, c.RemoveOnFail)
	require.Equal(t, "/srv/q/mail", c.MailDir)
	require.Equal(t, "/a", c.CleanupTempRoot)
	require.Equal(t, "/b", c.CleanupLogsRoot)
}

func TestMalformedValuesNameTheVariable(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"QUEUE_CONCURRENCY":        "many",
		"QUEUE_POLL_INTERVAL":      "1 second",
		"QUEUE_LEASE":              "0s",
		"PORT":                     "70000",
		"API_KEYS":                 "a,,b",
		"QUEUE_REMOVE_ON_COMPLETE": "-2",
		"LOG_FORMAT":               "xml",
		"LOG_LEVEL":                "loud",
		"SMTP_TLS":                 "maybe",
		"CLEANUP_ROOTS":            "/only-one",
		"SESSIONS_TABLE":           "x; DROP TABLE y",
		"RATE_LIMIT_SUBMIT":        "-1",
		"QUEUE_QUEUES":             "default:5,emails",
	}
	for name, value := range cases {
		_, err := load(map[string]string{name: value})
		require.Error(t, err, name)
		require.Contains(t, err.Error(), name, "the error names the variable")
	}
	_, err := load(map[string]string{"SMTP_HOST": "mail.example.com", "SMTP_TLS": "none"})
	require.ErrorContains(t, err, "SMTP_TLS")
}

func TestQueues(t *testing.T) {
	t.Parallel()
	c, err := load(map[string]string{"QUEUE_QUEUES": " default:5, emails:20 ,exports_2:2", "QUEUE_CONCURRENCY": "9"})
	require.NoError(t, err)
	require.Equal(t, []config.Queue{{"default", 5}, {"emails", 20}, {"exports_2", 2}}, c.Queues,
		"QUEUE_QUEUES wins over QUEUE_CONCURRENCY, in the order given")
	for _, bad := range []string{"emails:0", "Emails:2", "a:1,a:2", "emails:x", "-x:1", "emails:10001", ":3"} {
		_, err := load(map[string]string{"QUEUE_QUEUES": bad})
		require.ErrorContains(t, err, "QUEUE_QUEUES", bad)
	}
}
