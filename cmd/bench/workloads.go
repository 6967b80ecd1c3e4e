package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/results"
	"github.com/pgqueue/queue/internal/worker"
)

// jobType is the bench's own kind: a no-op whose data may carry the producer's clock.
const jobType = "BENCH_NOOP"

// benchData is the bench kind's data: the producer's wall clock just before its enqueue
// call, in Unix nanoseconds (0 when not measured).
type benchData struct {
	T int64 `json:"t"`
}

var emptyData = json.RawMessage(`{}`)

func noop(context.Context, *kinds.Job, *benchData) (any, error) { return nil, nil }

// benchKinds is the registry of the bench's processes: its one kind, with handler h
// (nil for a process that only enqueues).
func benchKinds(h kinds.Handler[benchData]) *kinds.Registry {
	return kinds.NewRegistry(kinds.Define(jobType, h))
}

// producer is the enqueueing side of a workload: its own pool, as a separate process
// would have.
type producer struct {
	pool   *pgxpool.Pool
	client *queue.Client
}

func (b *bench) newProducer(ctx context.Context, t *target, conns int32) (*producer, error) {
	pool, err := b.pool(ctx, t.name, conns)
	if err != nil {
		return nil, err
	}
	// Connections are opened before the clock starts; statements are prepared by the
	// workload itself, as an application's first calls would.
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping: %w", err)
	}
	client, err := queue.NewClient(pool, queue.ClientConfig{Kinds: benchKinds(nil)})
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &producer{pool: pool, client: client}, nil
}

func (p *producer) close() {
	p.client.Close()
	p.pool.Close()
}

func noopBatch(n int) []queue.NewJob {
	batch := make([]queue.NewJob, n)
	for i := range batch {
		batch[i] = queue.NewJob{Type: jobType, Data: emptyData}
	}
	return batch
}

// enqueueBacklog enqueues n no-op jobs through the engine, in batches of 1,000.
func (p *producer) enqueueBacklog(ctx context.Context, n int, priority int) error {
	for n > 0 {
		batch := noopBatch(min(n, queue.MaxBulk))
		for i := range batch {
			batch[i].Options.Priority = &priority
		}
		if _, err := p.client.EnqueueMany(ctx, p.pool, batch); err != nil {
			return fmt.Errorf("enqueue backlog: %w", err)
		}
		n -= len(batch)
	}
	return nil
}

// bulk: 100,000 no-op jobs in 100 sequential batches of 1,000 from one client.
func (b *bench) bulk(ctx context.Context, t *target) (result, error) {
	var res result
	total := b.scaled(100_000, 1_000)
	p, err := b.newProducer(ctx, t, 2)
	if err != nil {
		return res, err
	}
	batch := noopBatch(queue.MaxBulk)
	took := make([]float64, 0, total/queue.MaxBulk)
	m, err := b.startMeter(ctx, t)
	if err != nil {
		p.close()
		return res, err
	}
	for done := 0; done < total; done += len(batch) {
		start := time.Now()
		if _, err := p.client.EnqueueMany(ctx, p.pool, batch); err != nil {
			p.close()
			return res, err
		}
		took = append(took, ms(time.Since(start)))
	}
	m.stop(ctx)
	p.close()
	res.set("jobs_per_s", float64(total)/m.wall.Seconds())
	slices.Sort(took)
	res.set("batch_p50_ms", percentile(took, 50))
	res.set("batch_max_ms", percentile(took, 100))
	m.record(ctx, &res, total)
	return res, nil
}

// single: 8 concurrent clients, one job per call (one transaction each), closed loop, 10 s.
func (b *bench) single(ctx context.Context, t *target) (result, error) {
	var res result
	const clients = 8
	duration := b.scaledDuration(10*time.Second, time.Second)
	// One connection per client, plus the client's notifier.
	p, err := b.newProducer(ctx, t, clients+1)
	if err != nil {
		return res, err
	}
	var wg sync.WaitGroup
	lat := make([][]float64, clients)
	errs := make([]error, clients)
	m, err := b.startMeter(ctx, t)
	if err != nil {
		p.close()
		return res, err
	}
	deadline := m.start.Add(duration)
	for c := range clients {
		wg.Go(func() {
			job := queue.NewJob{Type: jobType, Data: emptyData}
			for time.Now().Before(deadline) {
				start := time.Now()
				if _, err := p.client.Enqueue(ctx, p.pool, job); err != nil {
					errs[c] = err
					return
				}
				lat[c] = append(lat[c], ms(time.Since(start)))
			}
		})
	}
	wg.Wait()
	m.stop(ctx)
	p.close()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	res.set("jobs_per_s", float64(len(all))/m.wall.Seconds())
	res.set("enqueue_p50_ms", percentile(all, 50))
	res.set("enqueue_p99_ms", percentile(all, 99))
	m.record(ctx, &res, len(all))
	return res, nil
}

// drain: 100,000 no-op jobs enqueued first (not timed); one worker at concurrency 100;
// time from worker start until all completions are persisted.
func (b *bench) drain(ctx context.Context, t *target) (result, error) {
	return b.drainQueue(ctx, t, nil)
}

// drainQueue is the drain workload; limits, when not nil, are set on the default queue
// before the backlog is enqueued and the worker starts (see drainLimited).
func (b *bench) drainQueue(ctx context.Context, t *target, limits *queue.QueueLimits) (result, error) {
	var res result
	total := b.scaled(100_000, 1_000)
	p, err := b.newProducer(ctx, t, 2)
	if err != nil {
		return res, err
	}
	if limits != nil {
		if _, err := p.client.SetQueueLimits(ctx, queue.DefaultQueue, *limits); err != nil {
			p.close()
			return res, err
		}
	}
	err = p.enqueueBacklog(ctx, total, queue.DefaultPriority)
	p.close()
	if err != nil {
		return res, err
	}
	count := newCompletionCounter(int64(total))
	held := &heldCounter{}
	var obs worker.Observer = count
	if limits != nil {
		obs = worker.Observers(count, held) // drain itself keeps its one observer
	}
	m, err := b.startMeter(ctx, t)
	if err != nil {
		return res, err
	}
	w, err := b.startWorker(ctx, t, 100, obs, noop)
	if err != nil {
		return res, err
	}
	err = count.wait(ctx, 10*time.Minute)
	m.stop(ctx)
	w.stop()
	if err != nil {
		return res, fmt.Errorf("drain: %d of %d completed: %w", count.n.Load(), total, err)
	}
	res.set("jobs_per_s", float64(total)/m.wall.Seconds())
	if limits != nil {
		res.set("held_claims", float64(held.n.Load()))
	}
	w.recordRedis(&res)
	m.record(ctx, &res, total)
	if t.variant.Audit {
		if claim, finish, err := batchSizes(ctx, t.ctl); err == nil {
			res.set("claim_batch_avg", claim)
			res.set("finish_batch_avg", finish)
		}
	}
	return res, nil
}

// quietLogger keeps warnings: per-job Info lines would dominate a no-op job's cost and
// flood the terminal.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// completionCounter observes a worker and signals once target jobs are persisted as
// completed (JobFinished is called after the outcome is written).
type completionCounter struct {
	n      atomic.Int64
	target int64
	done   chan struct{}
}

func newCompletionCounter(target int64) *completionCounter {
	return &completionCounter{target: target, done: make(chan struct{})}
}

func (c *completionCounter) Observe(e queue.Event) {
	if e.Kind == queue.EventFinished && e.State == queue.StateCompleted && c.n.Add(1) == c.target {
		close(c.done)
	}
}

func (c *completionCounter) wait(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errors.New("timed out")
	}
}

// runningWorker is a worker.Worker running in this process, with its own pool, as the
// worker process would have.
type runningWorker struct {
	cancel context.CancelFunc
	done   chan error
	pool   *pgxpool.Pool
	redis  *results.Store
	pub    *results.Publisher
	once   sync.Once
}

// startWorker runs a worker of the configured defaults (internal/config) whose handler
// for the bench's job type is h.
func (b *bench) startWorker(ctx context.Context, t *target, concurrency int, obs worker.Observer, h kinds.Handler[benchData]) (*runningWorker, error) {
	// As cmd/worker: at least 8 connections; LISTEN has its own.
	pool, err := b.pool(ctx, t.name, 8)
	if err != nil {
		return nil, err
	}
	rw := &runningWorker{pool: pool, done: make(chan error, 1)}
	var all []worker.Observer
	if obs != nil {
		all = append(all, obs)
	}
	var snapshots queue.Snapshots
	if t.variant.Redis {
		// What cmd/worker does with Redis: snapshots and events through a batching
		// publisher, and retention that waits for the snapshots.
		rw.redis = results.New(b.rdb, b.prefix, b.cfg.ResultTTL, quietLogger())
		rw.pub = rw.redis.NewPublisher()
		all = append(all, results.NewWorkerObserver(rw.pub))
		snapshots = rw.redis.Snapshots()
	}
	cfg := b.cfg
	w, err := worker.New(pool, benchKinds(h), worker.Config{
		Concurrency: concurrency, PollInterval: cfg.PollInterval, Lease: cfg.Lease,
		JobTimeout: cfg.JobTimeout, ShutdownTimeout: cfg.ShutdownTimeout,
		RemoveOnComplete: cfg.RemoveOnComplete, RemoveOnFail: cfg.RemoveOnFail,
		EventsRetention: cfg.EventsRetention, Observer: worker.Observers(all...),
		Snapshots: snapshots, Logger: quietLogger(),
	})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("worker: %w", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	rw.cancel = cancel
	go func() { rw.done <- w.Run(wctx) }()
	return rw, nil
}

// stop shuts the worker down gracefully; later calls do nothing.
func (w *runningWorker) stop() {
	w.once.Do(func() {
		w.cancel()
		if err := <-w.done; err != nil {
			slog.Warn("worker stopped with an error", "err", err)
		}
		if w.pub != nil {
			w.pub.Close()
		}
		w.pool.Close()
	})
}

func (w *runningWorker) recordRedis(r *result) {
	if w.redis == nil {
		return
	}
	if d := w.pub.Dropped(); d > 0 {
		r.note("%d Redis publications dropped (publisher buffer full)", d)
	}
	if e := w.redis.Errors(); e > 0 {
		r.note("%d Redis errors", e)
	}
}
