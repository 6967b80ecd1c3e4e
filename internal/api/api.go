// Package api is the REST API over gin: routes, auth, rate limits, request
// limits, the one error-to-HTTP mapping, request logs and metrics. It changes job state
// only through internal/queue.
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/results"
)

// ResultCache holds snapshots of finished jobs, so that GET answers for a job that
// retention removed until RESULT_TTL. Implemented over Redis (internal/results); errors
// are logged and the API carries on from Postgres.
type ResultCache interface {
	// Job returns the cached snapshot of a removed job; found is false when none.
	Job(ctx context.Context, id string) (job queue.Job, found bool, err error)
	// Forget drops the snapshots of jobs removed by DELETE or clean, so GET answers 404.
	Forget(ctx context.Context, ids []string) error
}

// Event is one job event: a state a job entered, or its progress (results.Event).
type Event = results.Event

// EventFilter selects events by job id, type and queue; empty fields match anything.
type EventFilter = results.Filter

// Event kinds, the SSE event names.
const (
	EventJob      = "job"
	EventProgress = "progress"
)

// EventSource feeds GET /api/queue/events and wakes `wait` (Redis pub/sub in
// internal/results).
type EventSource interface {
	// Subscribe delivers the events f selects, in batches, until cancel is called. The
	// source closes the channel when this subscriber falls too far behind (a slow
	// client is disconnected) or when it stops; the stream then ends.
	Subscribe(f EventFilter) (events <-chan []Event, cancel func())
	// Live reports whether the subscription is confirmed; while it is not, events may be
	// missed and `wait` polls Postgres instead.
	Live() bool
}

// EventPublisher announces the job states that API requests cause (enqueue, cancel,
// retry), given the jobs in their new state; a finished job's object is also cached for
// GET. Best effort: it must not block and reports its own errors.
type EventPublisher interface {
	Publish(ctx context.Context, jobs []queue.Job)
}

// Deps is what the API needs. Pool and Client are required (the client's kinds are the
// job types the API accepts); the Redis-backed parts are optional and the API answers
// from Postgres without them.
type Deps struct {
	Pool   *pgxpool.Pool
	Client *queue.Client
	Logger *slog.Logger // nil: slog.Default()

	APIKeys         []string // empty: no auth
	TrustedProxies  []string // addresses or CIDRs whose X-Forwarded-For is believed
	RateLimitSubmit int      // submissions per second per client; 0 disables
	MaxStreams      int      // open wait + event streams; 0: DefaultMaxStreams

	// RedisPing reports Redis health for /api/ready; nil reports "down".
	RedisPing func(ctx context.Context) error
	// Stats answers /api/queue/stats (a cache of STATS_TTL over Client.Stats); nil asks
	// Postgres every time.
	Stats func(ctx context.Context) (queue.Stats, error)
	// StatsChanged, when set, drops the cached stats after pause, resume and clean.
	StatsChanged func(ctx context.Context)
	// Results, when set, answers GET for jobs that retention removed.
	Results ResultCache
	// Events, when set, feeds the SSE route; nil answers it 503.
	Events EventSource
	// Publisher, when set, announces the states API requests cause.
	Publisher EventPublisher
	// WaitPoll is how often `wait` reads the job while no live event source wakes it;
	// 0: DefaultWaitPoll. With a live source it reads on each event of the job, and
	// every WaitSafetyPoll in case one was lost.
	WaitPoll time.Duration
	// Heartbeat is the SSE comment interval; 0: DefaultHeartbeat.
	Heartbeat time.Duration
}

// Defaults of the optional Deps fields.
const (
	DefaultMaxStreams = 1000
	DefaultWaitPoll   = 50 * time.Millisecond
	WaitSafetyPoll    = time.Second
	DefaultHeartbeat  = 15 * time.Second
)

// Server is the API's http.Handler.
type Server struct {
	deps     Deps
	log      *slog.Logger
	engine   *gin.Engine
	val      validator
	openAPI  []byte
	limiter  *submitLimiter
	keys     keyring
	streams  *streamLimiter
	metrics  *metrics
	stopOnce sync.Once
	stop     chan struct{} // closed by StopStreams
}

// New builds the router.
func New(d Deps) (*Server, error) {
	if d.Pool == nil || d.Client == nil {
		return nil, errors.New("api: Pool and Client are required")
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.MaxStreams <= 0 {
		d.MaxStreams = DefaultMaxStreams
	}
	if d.WaitPoll <= 0 {
		d.WaitPoll = DefaultWaitPoll
	}
	if d.Heartbeat <= 0 {
		d.Heartbeat = DefaultHeartbeat
	}
	if d.Stats == nil {
		d.Stats = d.Client.Stats
	}
	s := &Server{
		deps:    d,
		log:     d.Logger,
		val:     validator{client: d.Client},
		limiter: newSubmitLimiter(d.RateLimitSubmit),
		keys:    newKeyring(d.APIKeys),
		streams: newStreamLimiter(d.MaxStreams),
		stop:    make(chan struct{}),
	}
	s.metrics = newMetrics(d.Stats, d.Client.Queues, s.streams)
	doc, err := openAPIFor(d.Client.Kinds().Names())
	if err != nil {
		return nil, err
	}
	s.openAPI = doc
	if err := s.routes(); err != nil {
		return nil, err
	}
	return s, nil
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.engine.ServeHTTP(w, r) }

// StopStreams ends open wait and event streams (wait answers the job as it is), so that
// a graceful shutdown need not outwait them. Register it with http.Server.RegisterOnShutdown.
func (s *Server) StopStreams() { s.stopOnce.Do(func() { close(s.stop) }) }

// Route is one registered route.
type Route struct {
	Method, Path string
	Public       bool // served without an API key
}

// Routes lists every registered route (for the auth and OpenAPI tests).
func (s *Server) Routes() []Route {
	var out []Route
	for _, r := range s.engine.Routes() {
		out = append(out, Route{Method: r.Method, Path: r.Path, Public: publicPaths[r.Path]})
	}
	return out
}

// publicPaths need no API key; /metrics is not under /api and is bound privately.
var publicPaths = map[string]bool{
	"/api/health":       true,
	"/api/ready":        true,
	"/api/openapi.json": true,
	"/metrics":          true,
}

func (s *Server) routes() error {
	if gin.Mode() == gin.DebugMode {
		gin.SetMode(gin.ReleaseMode) // no route dump on stdout; our own logs say enough
	}
	e := gin.New()
	e.HandleMethodNotAllowed = false
	e.RemoteIPHeaders = []string{"X-Forwarded-For"}
	if err := e.SetTrustedProxies(s.deps.TrustedProxies); err != nil {
		return err
	}
	e.Use(s.requestLog, s.recoverPanics, limitBody)
	e.NoRoute(handle(func(c *gin.Context) error { return errNotFound("no such route") }))

	e.GET("/metrics", gin.WrapH(s.metrics.handler()))
	e.GET("/api/health", s.health)
	e.GET("/api/ready", s.ready)
	e.GET("/api/openapi.json", s.serveOpenAPI)

	api := e.Group("/api", s.authenticate, cleanInput)
	q := api.Group("/queue")
	q.POST("/jobs", s.rateLimit, handle(s.submit))
	q.POST("/jobs/bulk", s.rateLimit, handle(s.submitBulk))
	q.GET("/jobs", handle(s.list))
	q.GET("/jobs/:id", handle(s.get))
	q.DELETE("/jobs/:id", handle(s.remove))
	q.POST("/jobs/:id/retry", handle(s.retry))
	q.POST("/jobs/:id/cancel", handle(s.cancel))
	q.GET("/jobs/:id/wait", handle(s.wait))
	q.GET("/events", handle(s.events))
	q.GET("/stats", handle(s.stats))
	q.POST("/pause", handle(s.pause(true)))
	q.POST("/resume", handle(s.pause(false)))
	q.POST("/clean/completed", handle(s.clean(queue.CleanCompleted, queue.DefaultCleanCompletedAge)))
	q.POST("/clean/failed", handle(s.clean(queue.CleanFailed, queue.DefaultCleanFailedAge)))
	q.GET("/queues", handle(s.listQueues))
	q.GET("/queues/:name", handle(s.getQueue))
	q.PUT("/queues/:name", handle(s.setQueueLimits))
	q.POST("/queues/:name/pause", handle(s.pauseQueue(true)))
	q.POST("/queues/:name/resume", handle(s.pauseQueue(false)))
	q.GET("/workers", handle(s.listWorkers))

	api.GET("/notifications", handle(s.listNotifications))
	api.POST("/notifications/:id/read", handle(s.readNotification))

	s.engine = e
	return nil
}
