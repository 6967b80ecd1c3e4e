// Package worker is a worker process's machinery: one producer per queue (its slots,
// its claims), handler runs with timeouts and cancellation, a shared completer that
// records outcomes in batches, the heartbeater (leases and the registry of live
// workers), the notification listener, the maintenance leader, and graceful shutdown.
// Every state change goes through internal/queue; job types come from a kinds registry,
// never from an import.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/queue"
)

// QueueConfig is one queue this worker serves, with its own slots.
type QueueConfig struct {
	Name        string
	Concurrency int
}

// Config tunes a worker; zero fields take the defaults.
type Config struct {
	ID string // unique per process; default host-pid-random
	// Queues this worker serves, each with its own concurrency. Empty: the default
	// queue with Concurrency.
	Queues           []QueueConfig
	Concurrency      int           // QUEUE_CONCURRENCY: the default queue's, when Queues is empty
	PollInterval     time.Duration // QUEUE_POLL_INTERVAL
	Lease            time.Duration // QUEUE_LEASE
	JobTimeout       time.Duration // QUEUE_JOB_TIMEOUT; 0 = none
	ShutdownTimeout  time.Duration // QUEUE_SHUTDOWN_TIMEOUT
	RemoveOnComplete int           // QUEUE_REMOVE_ON_COMPLETE
	RemoveOnFail     int           // QUEUE_REMOVE_ON_FAIL
	EventsRetention  time.Duration // QUEUE_EVENTS_RETENTION
	Logger           *slog.Logger
	// Observer hears of job events (results cache, metrics); nil for none.
	Observer Observer
	// Snapshots, when set, keeps finished jobs readable after retention removes them:
	// a job removed as it finishes has its snapshot stored first, and the leader's
	// retention removes a job only once its snapshot is stored.
	Snapshots queue.Snapshots
}

// Defaults.
const (
	DefaultConcurrency     = 5
	DefaultPollInterval    = time.Second
	DefaultLease           = 30 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
	progressFlushInterval  = 200 * time.Millisecond
	maxFinishBatch         = 1000
	eventsTrimInterval     = time.Minute
)

// ErrJobCancelled is the cause of a handler's context when its job is cancelled.
var ErrJobCancelled = errors.New("job cancelled")

// ErrShutdown is the cause of a handler's context when the worker stops before the job
// finished; the job is handed back.
var ErrShutdown = errors.New("worker shutting down")

// ErrLeaseLost is the cause when the job's lease expired before a heartbeat could extend
// it (this worker stopped heartbeating in time): the job belongs to the rescuer.
var ErrLeaseLost = errors.New("job lease lost")

// Worker runs jobs of the registry's kinds from its queues.
type Worker struct {
	pool      *pgxpool.Pool
	runner    *queue.Runner
	kinds     *kinds.Registry
	cfg       Config
	log       *slog.Logger
	types     []string
	producers map[string]*producer
	outcomes  chan finished
	// limits of this worker's queues, as last read; limitsChanged asks for a reread.
	limits        atomic.Pointer[map[string]queue.Limits]
	limitsChanged chan struct{}

	mu       sync.Mutex
	running  map[int64]*run
	handlers sync.WaitGroup
}

// run is one attempt in this process.
type run struct {
	job      queue.Job
	producer *producer
	cancel   context.CancelCauseFunc
	started  time.Time
	// slotUntilRecorded: the queue limits how many jobs run at once across workers, so
	// this run's slot is freed only once its outcome is recorded (until then the
	// database counts the job as running, and a claim for the slot would be held back).
	slotUntilRecorded bool
	progress          atomic.Int32 // -1: nothing new to write
	observed          atomic.Int32 // last progress given to the Observer

	// Guarded by Worker.mu. A run either reports its outcome or, at shutdown, is handed
	// back (its outcome dropped, since the job went back to waiting); never both.
	reported   bool
	handedBack bool
	sent       chan struct{} // closed once the outcome is queued or dropped
}

func (r *run) claim() queue.Claim { return queue.Claim{Seq: r.job.Seq, Token: r.job.LeaseToken} }

type finished struct {
	run     *run
	outcome queue.Outcome
}

// New builds a worker for the registry's kinds.
func New(pool *pgxpool.Pool, registry *kinds.Registry, cfg Config) (*Worker, error) {
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), strconv.FormatInt(time.Now().UnixNano()%1e6, 36))
	}
	cfg.Concurrency = orDefault(cfg.Concurrency, DefaultConcurrency)
	if len(cfg.Queues) == 0 {
		cfg.Queues = []QueueConfig{{Name: queue.DefaultQueue, Concurrency: cfg.Concurrency}}
	}
	cfg.PollInterval = orDefault(cfg.PollInterval, DefaultPollInterval)
	cfg.Lease = orDefault(cfg.Lease, DefaultLease)
	cfg.ShutdownTimeout = orDefault(cfg.ShutdownTimeout, DefaultShutdownTimeout)
	cfg.EventsRetention = orDefault(cfg.EventsRetention, 720*time.Hour)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	types := registry.Names()
	if len(types) == 0 {
		return nil, errors.New("worker: no job types registered")
	}
	w := &Worker{
		pool: pool, runner: queue.NewRunner(pool, cfg.ID), kinds: registry, cfg: cfg, types: types,
		log:           cfg.Logger.With("worker", cfg.ID),
		producers:     map[string]*producer{},
		running:       map[int64]*run{},
		limitsChanged: make(chan struct{}, 1),
	}
	total := 0
	for _, q := range cfg.Queues {
		switch {
		case !queue.ValidQueueName(q.Name):
			return nil, fmt.Errorf("worker: queue %q: %s", q.Name, queue.QueueNameRule)
		case q.Concurrency < 1:
			return nil, fmt.Errorf("worker: queue %q: concurrency must be at least 1", q.Name)
		case w.producers[q.Name] != nil:
			return nil, fmt.Errorf("worker: queue %q is listed twice", q.Name)
		}
		w.producers[q.Name] = newProducer(w, q)
		total += q.Concurrency
	}
	// Room for every slot's outcome: a run queues its outcome before freeing its slot.
	w.outcomes = make(chan finished, total)
	return w, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// ID is this worker's lease owner name.
func (w *Worker) ID() string { return w.cfg.ID }

// Run works until ctx ends, then shuts down gracefully: it claims nothing new, lets
// running jobs finish within ShutdownTimeout, hands the rest back, and returns nil.
func (w *Worker) Run(ctx context.Context) error {
	queues := make(map[string]int, len(w.cfg.Queues))
	for _, q := range w.cfg.Queues {
		queues[q.Name] = q.Concurrency
	}
	w.log.Info("worker starting", "types", w.types, "queues", queues,
		"lease", w.cfg.Lease, "poll_interval", w.cfg.PollInterval)

	// Background loops live until the jobs are settled, after ctx ends.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var bgWG sync.WaitGroup
	start := func(f func(context.Context)) {
		bgWG.Add(1)
		go func() { defer bgWG.Done(); f(bg) }()
	}
	start(w.listen)
	start(w.heartbeatLoop)
	start(w.progressLoop)
	start(w.leaderLoop)
	start(w.limitsLoop)
	finisherDone := make(chan struct{})
	go func() { defer close(finisherDone); w.finishLoop() }()

	var producing sync.WaitGroup
	for _, p := range w.producers {
		producing.Go(func() { p.fetchLoop(ctx) })
	}
	producing.Wait()
	w.shutdown()
	close(w.outcomes)
	<-finisherDone
	stopBG()
	bgWG.Wait()
	goneCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := w.runner.Gone(goneCtx); err != nil {
		w.log.Warn("could not remove this worker from the registry; it expires by itself", "err", err)
	}
	cancel()
	w.log.Info("worker stopped")
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// start runs one claimed job in its own goroutine, in one of p's slots.
func (w *Worker) start(p *producer, job queue.Job) {
	p.slots <- struct{}{}
	timeout := job.Timeout
	if timeout == 0 {
		timeout = w.cfg.JobTimeout
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	if timeout > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeoutCause(ctx, timeout, fmt.Errorf("timeout: the attempt ran longer than %s", timeout))
		inner := cancel
		cancel = func(cause error) { inner(cause); stop() }
	}
	r := &run{job: job, producer: p, cancel: cancel, started: time.Now(), sent: make(chan struct{}),
		slotUntilRecorded: w.limitsOf(p.queue).Slots}
	r.progress.Store(-1)
	r.observed.Store(-1)
	w.mu.Lock()
	if stale := w.running[job.Seq]; stale != nil {
		// This worker lost the job's lease (rescued) and claimed it again.
		stale.cancel(ErrLeaseLost)
	}
	w.running[job.Seq] = r
	w.mu.Unlock()
	w.observe(queue.Event{Kind: queue.EventStarted, Job: &r.job, State: queue.StateActive})
	w.handlers.Add(1)
	go func() {
		defer w.handlers.Done()
		outcome := w.execute(ctx, r)
		cancel(nil)
		w.mu.Lock()
		report := !r.handedBack
		r.reported = report
		w.mu.Unlock()
		if report {
			// Queued before the slot is freed: a slow finisher slows claiming too.
			w.outcomes <- finished{run: r, outcome: outcome}
		}
		close(r.sent)
		if !report || !r.slotUntilRecorded {
			p.release()
		}
	}()
}

func (w *Worker) observe(e queue.Event) {
	if w.cfg.Observer != nil {
		w.cfg.Observer.Observe(e)
	}
}

// execute runs the handler and turns what it returned into an outcome.
func (w *Worker) execute(ctx context.Context, r *run) queue.Outcome {
	job := &r.job
	out := queue.Outcome{Claim: r.claim(), Attempt: job.AttemptsMade}
	result, err := w.call(ctx, r)
	if err == nil && ctx.Err() != nil {
		// A handler that ignored its context still loses the attempt it overran.
		err = context.Cause(ctx)
	}
	if err == nil {
		b, merr := json.Marshal(result)
		_, storable := queue.ScanJSON(b)
		switch {
		case merr != nil:
			err = kinds.Permanentf("result is not JSON: %v", merr)
		case len(b) > queue.MaxResultBytes:
			err = kinds.Permanentf("result is %d bytes, more than the 1 MiB allowed", len(b))
		case !storable:
			err = kinds.Permanentf(`result contains \u0000, which Postgres cannot store`)
		default:
			out.OK, out.Result = true, b
			return out
		}
	}
	if cause := context.Cause(ctx); ctx.Err() != nil && cause != nil && !errors.Is(err, cause) {
		// The handler returned its own error after the context ended: the cause says why.
		err = fmt.Errorf("%w (%v)", cause, err)
	}
	out.Message = err.Error()
	out.RetryIn = -1
	if !kinds.IsPermanent(err) && job.AttemptsMade < job.MaxAttempts {
		out.RetryIn = queue.RetryDelay(job.Backoff, job.AttemptsMade)
	}
	return out
}

// call runs the kind's handler on the job's data, recovering a panic into an error.
func (w *Worker) call(ctx context.Context, r *run) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			w.jobLog(&r.job).Error("handler panicked", "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	job := &r.job
	kind, ok := w.kinds.Kind(job.Type)
	if !ok {
		return nil, kinds.Permanentf("no handler for job type %s", job.Type)
	}
	progress := func(p int) {
		r.progress.Store(int32(p))
		if r.observed.Swap(int32(p)) != int32(p) {
			w.observe(queue.Event{Kind: queue.EventProgress, Job: job, Progress: p})
		}
	}
	return kind.Run(ctx, kinds.NewJob(job.ID, job.Type, job.Queue, job.AttemptsMade, job.MaxAttempts, progress), job.Data)
}

func (w *Worker) jobLog(job *queue.Job) *slog.Logger {
	return w.log.With("job_id", job.ID, "type", job.Type, "queue", job.Queue, "attempt", job.AttemptsMade)
}

// snapshot lists the runs in this process.
func (w *Worker) snapshot() []*run {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*run, 0, len(w.running))
	for _, r := range w.running {
		out = append(out, r)
	}
	return out
}

func (w *Worker) lookup(seq int64) *run {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.running[seq]
}

// shutdown waits for running handlers within the budget, then hands back the rest.
func (w *Worker) shutdown() {
	w.log.Info("worker stopping: no new claims", "running", len(w.snapshot()), "budget", w.cfg.ShutdownTimeout)
	done := make(chan struct{})
	go func() { w.handlers.Wait(); close(done) }()
	timer := time.NewTimer(w.cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-done:
		return
	case <-timer.C:
	}
	var claims []queue.Claim
	var reporting, handedBack []*run
	w.mu.Lock()
	for _, r := range w.running {
		if r.reported {
			reporting = append(reporting, r)
			continue
		}
		r.handedBack = true
		handedBack = append(handedBack, r)
		claims = append(claims, r.claim())
		r.cancel(ErrShutdown)
	}
	w.mu.Unlock()
	// Runs that returned just before the deadline are queueing their outcomes.
	for _, r := range reporting {
		<-r.sent
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	back, err := w.runner.HandBack(ctx, claims)
	if err != nil {
		w.log.Error("handing back unfinished jobs failed; they will be rescued when their lease expires", "jobs", len(claims), "err", err)
	} else {
		w.log.Warn("handed back unfinished jobs", "jobs", len(back))
		w.entered(back)
	}
	w.mu.Lock()
	for _, r := range handedBack {
		w.forgetLocked(r)
	}
	w.mu.Unlock()
}

// forgetLocked drops a run, unless its job was claimed again since by a newer run.
func (w *Worker) forgetLocked(r *run) {
	if w.running[r.job.Seq] == r {
		delete(w.running, r.job.Seq)
	}
}

func (w *Worker) entered(jobs []queue.Entered) {
	for _, j := range jobs {
		w.observe(queue.Event{Kind: queue.EventEntered, Job: &queue.Job{ID: j.ID, Type: j.Type, Queue: j.Queue, State: j.State}, State: j.State})
	}
}
