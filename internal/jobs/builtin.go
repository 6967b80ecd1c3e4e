package jobs

import (
	"context"
	"errors"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/pgqueue/queue/internal/config"
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

// Deps is what the built-in handlers work with. A process that only validates data (the
// API) may leave every field zero: validators use none of them, and a handler whose
// dependency is missing fails its job with a permanent error.
type Deps struct {
	Config *config.Config
	Pool   *pgxpool.Pool
	Redis  redis.UniversalClient
	// Stats is CACHE_WARM's "stats" data source; its value is stored as JSON.
	Stats func(context.Context) (any, error)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// errNotConfigured fails a job on a process that was not given what the type needs.
var errNotConfigured = errors.New("this worker is not configured for this job type")

func (d *Deps) logger() *slog.Logger {
	if d.Logger != nil {
		return d.Logger
	}
	return slog.Default()
}

func (d *Deps) jobLog(job *Job) *slog.Logger {
	return d.logger().With("job_id", job.ID, "type", job.Type, "attempt", job.Attempt)
}

// Builtin returns a registry with the six built-in types. With a Config, CACHE_WARM's
// validator also checks a URL's host against CACHE_WARM_ALLOWED_HOSTS.
func Builtin(deps Deps) (*Registry, error) {
	validateCacheWarm := ValidateCacheWarm
	if deps.Config != nil {
		validateCacheWarm = cacheWarmValidator(deps.Config.CacheWarmAllowedHosts)
	}
	r := NewRegistry()
	r.Register(TypeEmailSend, &emailHandler{deps: deps}, ValidateEmail)
	r.Register(TypeUserNotification, &notificationHandler{deps: deps}, ValidateNotification)
	r.Register(TypeDataExport, &exportHandler{deps: deps}, ValidateExport)
	r.Register(TypeFileProcess, &fileHandler{deps: deps}, ValidateFileProcess)
	r.Register(TypeCacheWarm, newCacheWarmHandler(deps), validateCacheWarm)
	r.Register(TypeCleanup, &cleanupHandler{deps: deps}, ValidateCleanup)
	return r, nil
}
