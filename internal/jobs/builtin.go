// Package jobs holds the six built-in kinds: for each, its data struct with its rules and
// its handler, on the kinds contract. They depend on that contract and on their own
// settings; the engine knows none of them. Builtin registers them.
package jobs

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/pgqueue/queue/internal/kinds"
)

// The built-in job types.
const (
	TypeEmailSend        = "EMAIL_SEND"
	TypeUserNotification = "USER_NOTIFICATION"
	TypeDataExport       = "DATA_EXPORT"
	TypeFileProcess      = "FILE_PROCESS"
	TypeCacheWarm        = "CACHE_WARM"
	TypeCleanup          = "CLEANUP"
)

// Settings are the built-in kinds' folders and options; the worker maps its environment
// onto them. Zero values leave a kind unconfigured: its jobs fail with a permanent error
// naming what is missing.
type Settings struct {
	// FromEnvironment says these are the environment's settings (the API's, a
	// worker's): the kinds then also check at submission what depends on them, such as
	// CACHE_WARM's allowed hosts. Without it (the Go client) those checks wait for the run.
	FromEnvironment bool

	RedisPrefix string // CACHE_WARM keys and USER_NOTIFICATION channels start with it

	FilesRoot       string        // FILE_PROCESS inputs and outputs, EMAIL_SEND attachments
	ExportDir       string        // DATA_EXPORT outputs
	ExportRetention time.Duration // exports and processed files older than this are deleted
	MailDir         string        // the file transport's .eml files
	TemplatesDir    string        // mail templates that override the built-in ones

	SMTP SMTP

	CleanupTempRoot string // root of CLEANUP temp_files
	CleanupLogsRoot string // root of CLEANUP old_logs
	SessionsTable   string // table of CLEANUP expired_sessions

	// CacheWarmAllowedHosts are the hosts an http(s) CACHE_WARM source may name.
	CacheWarmAllowedHosts []string
}

// SMTP is EMAIL_SEND's transport; without Host, messages are written to MailDir.
type SMTP struct {
	Host     string
	Port     int
	Username string
	Password string
	From     string
	TLS      string // starttls (required), implicit, or none (loopback only)
}

// Deps are what the built-in handlers work with besides their settings. A process that
// only checks data (the API, the Go client) leaves them zero.
type Deps struct {
	Settings
	Pool  *pgxpool.Pool
	Redis redis.UniversalClient
	// Stats is CACHE_WARM's "stats" data source and the base of its named queries.
	Stats func(context.Context) (Stats, error)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Stats is what CACHE_WARM reads of the queue: the stats object as the API shows it,
// and the counts its named queries report.
type Stats struct {
	Object  any // the API's stats object, stored as JSON by the "stats" source
	ByState map[string]int64
	ByType  map[string]map[string]int64
	Paused  bool
}

func (d *Deps) logger() *slog.Logger {
	if d.Logger != nil {
		return d.Logger
	}
	return slog.Default()
}

func (d *Deps) jobLog(job *kinds.Job) *slog.Logger {
	return d.logger().With("job_id", job.ID, "type", job.Type, "attempt", job.Attempt)
}

// outputRetentionEvery is how often the leader deletes expired outputs.
const outputRetentionEvery = 10 * time.Minute

// Builtin returns a registry of the six built-in kinds (one line each), and the
// maintenance task that deletes their expired output files.
func Builtin(deps Deps) *kinds.Registry {
	r := kinds.NewRegistry(
		emailKind(deps),
		notificationKind(deps),
		exportKind(deps),
		fileProcessKind(deps),
		cacheWarmKind(deps),
		cleanupKind(deps),
	)
	if deps.ExportRetention > 0 && (deps.ExportDir != "" || deps.FilesRoot != "") {
		r.AddTask(kinds.Task{Name: "output retention", Every: outputRetentionEvery, Run: func(ctx context.Context) error {
			removed, err := RemoveExpiredOutputs(ctx, deps.logger(), deps.ExportDir, deps.FilesRoot, deps.ExportRetention)
			if removed.Files > 0 {
				deps.logger().Info("deleted expired outputs", "files", removed.Files, "bytes", removed.Bytes)
			}
			return err
		}})
	}
	return r
}
