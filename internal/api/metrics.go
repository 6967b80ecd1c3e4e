package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	qmetrics "github.com/pgqueue/queue/internal/metrics"
	"github.com/pgqueue/queue/internal/queue"
)

// statsScrapeTimeout bounds the stats read of one scrape.
const statsScrapeTimeout = 3 * time.Second

// metrics are the API's Prometheus metrics, on a registry of their own (one per Server,
// so tests can build many).
type metrics struct {
	registry      *prometheus.Registry
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	jobsSubmitted *prometheus.CounterVec
	operations    *prometheus.CounterVec
	cleaned       *prometheus.CounterVec
}

func newMetrics(stats func(context.Context) (queue.Stats, error), queues func(context.Context) ([]queue.Queue, error),
	streams *streamLimiter) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "queue_api_http_requests_total",
			Help: "HTTP requests answered, by method, route pattern and status.",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "queue_api_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by method and route pattern.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"method", "route"}),
		jobsSubmitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "queue_api_jobs_submitted_total",
			Help: "Jobs created through the API, by type.",
		}, []string{"type"}),
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "queue_api_job_operations_total",
			Help: "Successful job operations through the API (cancel, retry, remove).",
		}, []string{"operation"}),
		cleaned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "queue_api_jobs_cleaned_total",
			Help: "Jobs removed by the clean routes, by target (completed, failed).",
		}, []string{"target"}),
	}
	m.registry.MustRegister(m.requests, m.duration, m.jobsSubmitted, m.operations, m.cleaned,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "queue_api_open_streams",
			Help: "Open wait and event streams (limited by MAX_STREAMS).",
		}, func() float64 { return float64(streams.inUse()) }),
		&queueCollector{stats: stats},
	)
	// The same gauge as the worker's, so either process shows what flow control holds back.
	qmetrics.RegisterHeld(m.registry, queues)
	return m
}

func (m *metrics) observe(method, route string, status int, elapsed time.Duration) {
	m.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(method, route).Observe(elapsed.Seconds())
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// queueCollector reports the queue's job counts at scrape time, through the same
// (possibly cached) stats the API serves.
type queueCollector struct {
	stats func(context.Context) (queue.Stats, error)
}

var (
	jobsDesc = prometheus.NewDesc("queue_jobs", "Jobs that exist now, by state and type.",
		[]string{"state", "type"}, nil)
	pausedDesc = prometheus.NewDesc("queue_paused", "1 while the queue is paused.", nil, nil)
	upDesc     = prometheus.NewDesc("queue_stats_up", "1 when the last scrape could read the queue's stats.", nil, nil)
)

func (q *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- jobsDesc
	ch <- pausedDesc
	ch <- upDesc
}

func (q *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), statsScrapeTimeout)
	defer cancel()
	st, err := q.stats(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 1)
	paused := 0.0
	if st.Paused {
		paused = 1
	}
	ch <- prometheus.MustNewConstMetric(pausedDesc, prometheus.GaugeValue, paused)
	for typ, c := range st.ByType {
		for state, n := range map[string]int64{
			queue.StateWaiting: c.Waiting, queue.StateActive: c.Active, queue.StateCompleted: c.Completed,
			queue.StateFailed: c.Failed, queue.StateDelayed: c.Delayed, queue.StateCancelled: c.Cancelled,
		} {
			ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(n), state, typ)
		}
	}
}
