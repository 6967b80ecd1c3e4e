// Package metrics holds the Prometheus metrics of the queue that both processes expose:
// job counters and run durations by type (fed by the worker), claims held back by flow
// control, queue depth by state and jobs held back by a limit (read at scrape time), and
// Redis errors.
package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgqueue/queue/internal/queue"
)

// Names, for the README's list and the test that each appears.
const (
	JobsEnqueued   = "queue_jobs_enqueued_total"
	JobsCompleted  = "queue_jobs_completed_total"
	JobsFailed     = "queue_jobs_failed_total"
	JobsRetried    = "queue_jobs_retried_total"
	JobsRescued    = "queue_jobs_rescued_total"
	JobDuration    = "queue_job_duration_seconds"
	JobsByState    = "queue_jobs"
	ClaimsHeld     = "queue_claims_held_total"
	HeldJobs       = "queue_held_jobs"
	RedisErrors    = "queue_redis_errors_total"
	EventsDropped  = "queue_events_dropped_total"
	scrapeDeadline = 5 * time.Second
)

// Jobs counts what happens to jobs in this process.
type Jobs struct {
	enqueued  *prometheus.CounterVec
	completed *prometheus.CounterVec
	failed    *prometheus.CounterVec
	retried   *prometheus.CounterVec
	rescued   *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	held      *prometheus.CounterVec
}

// NewJobs registers the job counters.
func NewJobs(reg prometheus.Registerer) *Jobs {
	counter := func(name, help string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"type"})
		reg.MustRegister(c)
		return c
	}
	m := &Jobs{
		enqueued:  counter(JobsEnqueued, "Jobs created by this process, by type."),
		completed: counter(JobsCompleted, "Jobs completed by this worker, by type."),
		failed:    counter(JobsFailed, "Jobs that failed for good in this worker (no attempt left or a permanent error), by type."),
		retried:   counter(JobsRetried, "Attempts that failed and were scheduled again, by type."),
		rescued:   counter(JobsRescued, "Jobs whose lease expired and that this worker, as maintenance leader, rescued, by type."),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    JobDuration,
			Help:    "Run time of one attempt, by type and outcome (completed, failed, retried, cancelled).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10), // 1 ms .. ~4.4 min
		}, []string{"type", "outcome"}),
		held: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ClaimsHeld,
			Help: "Claims of this worker that a limit held back while jobs were waiting, by queue and limit (concurrency, rate, groupConcurrency, groupRate).",
		}, []string{"queue", "limit"}),
	}
	reg.MustRegister(m.duration, m.held)
	return m
}

// Enqueued counts n new jobs of a type (queue.ClientConfig.OnEnqueued).
func (m *Jobs) Enqueued(jobType string, n int) { m.enqueued.WithLabelValues(jobType).Add(float64(n)) }

// Observe counts a worker's events (it is a worker.Observer): outcomes with their run
// time, rescues, and claims held back by a limit. Starts, progress, promotions and
// hand-backs are not counted.
func (m *Jobs) Observe(e queue.Event) {
	switch e.Kind {
	case queue.EventFinished:
		outcome := e.State
		switch e.State {
		case queue.StateCompleted:
			m.completed.WithLabelValues(e.Job.Type).Inc()
		case queue.StateFailed:
			m.failed.WithLabelValues(e.Job.Type).Inc()
		case queue.StateWaiting, queue.StateDelayed:
			outcome = "retried"
			m.retried.WithLabelValues(e.Job.Type).Inc()
		}
		m.duration.WithLabelValues(e.Job.Type, outcome).Observe(e.Took.Seconds())
	case queue.EventRescued:
		m.rescued.WithLabelValues(e.Job.Type).Inc()
	case queue.EventHeld:
		m.held.WithLabelValues(e.Queue, e.Limit).Inc()
	}
}

// depth reports the jobs in each state when scraped, from the counts table (a sum of a
// few rows, cheap at any table size).
type depth struct {
	desc  *prometheus.Desc
	stats func(context.Context) (queue.Stats, error)
}

// RegisterDepth exposes queue_jobs{state}.
func RegisterDepth(reg prometheus.Registerer, stats func(context.Context) (queue.Stats, error)) {
	reg.MustRegister(&depth{
		desc:  prometheus.NewDesc(JobsByState, "Jobs that exist now, by state.", []string{"state"}, nil),
		stats: stats,
	})
}

func (d *depth) Describe(ch chan<- *prometheus.Desc) { ch <- d.desc }

func (d *depth) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeDeadline)
	defer cancel()
	s, err := d.stats(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(d.desc, err)
		return
	}
	for state, n := range s.ByState() {
		ch <- prometheus.MustNewConstMetric(d.desc, prometheus.GaugeValue, float64(n), state)
	}
}

// held reports, when scraped, the waiting jobs of each queue whose last claim a limit
// held back, under that limit; a queue that is not held reports nothing, so the series
// of a limit that stopped holding disappears.
type held struct {
	desc   *prometheus.Desc
	queues func(context.Context) ([]queue.Queue, error)
}

// RegisterHeld exposes queue_held_jobs{queue,limit}, read from the queue objects.
func RegisterHeld(reg prometheus.Registerer, queues func(context.Context) ([]queue.Queue, error)) {
	reg.MustRegister(&held{
		desc: prometheus.NewDesc(HeldJobs, "Waiting jobs of a queue whose last claim a limit held back, by queue and that limit.",
			[]string{"queue", "limit"}, nil),
		queues: queues,
	})
}

func (h *held) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

func (h *held) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeDeadline)
	defer cancel()
	list, err := h.queues(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(h.desc, err)
		return
	}
	for _, q := range list {
		if q.HeldBy == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(h.desc, prometheus.GaugeValue, float64(q.Counts.Waiting), q.Name, *q.HeldBy)
	}
}

// RegisterRedis exposes the Redis error and dropped-event counters.
func RegisterRedis(reg prometheus.Registerer, errors func() uint64, dropped func() uint64) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: RedisErrors, Help: "Failed Redis operations (cache, events, stats); the system goes on from Postgres."},
			func() float64 { return float64(errors()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: EventsDropped, Help: "Job events and snapshots dropped because the publish buffer was full."},
			func() float64 { return float64(dropped()) }),
	)
}
