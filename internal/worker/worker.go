// Package worker is the process loop of a worker: wake-ups (LISTEN/NOTIFY and a poll),
// claims with bounded concurrency, handler runs with timeouts and cancellation, batched
// completion, heartbeats, the maintenance leader, and graceful shutdown. Every state
// change goes through internal/queue.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgqueue/queue/internal/jobs"
	"github.com/pgqueue/queue/internal/queue"
)

// Config tunes a worker; zero fields take the defaults of API.md.
type Config struct {
	ID               string        // unique per process; default host-pid-random
	Concurrency      int           // QUEUE_CONCURRENCY
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
}

// Observer hears of what happens to jobs in this worker. Calls are made from the
// worker's goroutines and must not block.
type Observer interface {
	JobStarted(job *queue.Job)
	JobProgress(job *queue.Job, progress int)
	// JobFinished is called once the new state is persisted: completed, failed, waiting
	// or delayed (a retry), or cancelled.
	JobFinished(job *queue.Job, state string, result []byte, errMsg string, took time.Duration)
	// JobRescued is called by the maintenance leader for a job whose lease expired, as
	// the rescue left it (waiting, or failed when no attempt was left).
	JobRescued(job *queue.Job)
	// JobEntered is called for a job that entered a state outside a handler run: a due
	// delayed job promoted to waiting, a job handed back at shutdown.
	JobEntered(id, typ, state string)
}

// Defaults of API.md.
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

// ErrLeaseLost is the cause when another worker rescued the job (this one stopped
// heartbeating in time).
var ErrLeaseLost = errors.New("job lease lost")

// Worker runs jobs of the registry's types.
type Worker struct {
	pool     *pgxpool.Pool
	client   *queue.Client
	registry *jobs.Registry
	cfg      Config
	log      *slog.Logger
	types    []string

	wake      chan struct{} // a notification or a retry: claim now
	slotFreed chan struct{}
	slots     chan struct{} // one token per running handler
	outcomes  chan finished

	mu       sync.Mutex
	running  map[int64]*run
	handlers sync.WaitGroup
}

// run is one attempt in this process.
type run struct {
	job      queue.Job
	cancel   context.CancelCauseFunc
	started  time.Time
	progress atomic.Int32 // -1: nothing new to write
	observed atomic.Int32 // last progress given to the Observer

	// Guarded by Worker.mu. A run either reports its outcome or, at shutdown, is handed
	// back (its outcome dropped, since the job went back to waiting); never both.
	reported   bool
	handedBack bool
	sent       chan struct{} // closed once the outcome is queued or dropped
}

type finished struct {
	run     *run
	outcome queue.Outcome
}

// New builds a worker for the registry's types.
func New(pool *pgxpool.Pool, client *queue.Client, registry *jobs.Registry, cfg Config) (*Worker, error) {
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), strconv.FormatInt(time.Now().UnixNano()%1e6, 36))
	}
	cfg.Concurrency = orDefault(cfg.Concurrency, DefaultConcurrency)
	cfg.PollInterval = orDefault(cfg.PollInterval, DefaultPollInterval)
	cfg.Lease = orDefault(cfg.Lease, DefaultLease)
	cfg.ShutdownTimeout = orDefault(cfg.ShutdownTimeout, DefaultShutdownTimeout)
	cfg.EventsRetention = orDefault(cfg.EventsRetention, 720*time.Hour)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	types := registry.Types()
	for _, t := range types {
		if !client.KnownType(t) {
			return nil, fmt.Errorf("job type %s has a handler but the database does not know it: add it to queue.job_types() in a migration", t)
		}
	}
	if len(types) == 0 {
		return nil, errors.New("no job types registered")
	}
	return &Worker{
		pool: pool, client: client, registry: registry, cfg: cfg, types: types,
		log:       cfg.Logger.With("worker", cfg.ID),
		wake:      make(chan struct{}, 1),
		slotFreed: make(chan struct{}, 1),
		slots:     make(chan struct{}, cfg.Concurrency),
		outcomes:  make(chan finished, cfg.Concurrency),
		running:   map[int64]*run{},
	}, nil
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
	w.log.Info("worker starting", "types", w.types, "concurrency", w.cfg.Concurrency,
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
	start(w.maintenanceLoop)
	finisherDone := make(chan struct{})
	go func() { defer close(finisherDone); w.finishLoop() }()

	w.fetchLoop(ctx)
	w.shutdown()
	close(w.outcomes)
	<-finisherDone
	stopBG()
	bgWG.Wait()
	w.log.Info("worker stopped")
	return nil
}

// fetchLoop claims jobs while slots are free: at once after a notification or when the
// last claim filled every slot (more are likely waiting), else at the poll interval.
func (w *Worker) fetchLoop(ctx context.Context) {
	poll := time.NewTimer(0)
	defer poll.Stop()
	failures := &throttledLog{every: 10 * time.Second}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		free := cap(w.slots) - len(w.slots)
		if free == 0 {
			select {
			case <-w.slotFreed:
			case <-ctx.Done():
			}
			continue
		}
		// Not the run context: a claim cut off by SIGTERM may still commit, leaving jobs
		// active under this worker that it would never run, heartbeat or hand back.
		claimCtx, cancelClaim := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.Lease)
		claimed, err := w.client.Claim(claimCtx, w.cfg.ID, w.types, free, w.cfg.Lease)
		cancelClaim()
		if err != nil {
			if ctx.Err() == nil {
				failures.warn(w.log, "claim failed; retrying", "err", err, "retry_in", backoff)
				sleep(ctx, backoff)
				backoff = min(backoff*2, 5*time.Second)
			}
			continue
		}
		if backoff > 100*time.Millisecond {
			w.log.Info("claiming again after failures")
			failures.reset()
			backoff = 100 * time.Millisecond
		}
		for i := range claimed {
			w.start(claimed[i])
		}
		if len(claimed) == free {
			continue
		}
		poll.Reset(w.cfg.PollInterval)
		select {
		case <-w.wake:
		case <-poll.C:
		case <-ctx.Done():
		}
	}
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

// start runs one claimed job in its own goroutine.
func (w *Worker) start(job queue.Job) {
	w.slots <- struct{}{}
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
	r := &run{job: job, cancel: cancel, started: time.Now(), sent: make(chan struct{})}
	r.progress.Store(-1)
	r.observed.Store(-1)
	w.mu.Lock()
	if stale := w.running[job.Seq]; stale != nil {
		// This worker lost the job's lease (rescued) and claimed it again.
		stale.cancel(ErrLeaseLost)
	}
	w.running[job.Seq] = r
	w.mu.Unlock()
	if w.cfg.Observer != nil {
		w.cfg.Observer.JobStarted(&r.job)
	}
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
		<-w.slots
		signal(w.slotFreed)
	}()
}

// execute runs the handler and turns what it returned into an outcome.
func (w *Worker) execute(ctx context.Context, r *run) queue.Outcome {
	job := &r.job
	out := queue.Outcome{Seq: job.Seq, Attempt: job.AttemptsMade}
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
			err = jobs.Permanentf("result is not JSON: %v", merr)
		case len(b) > queue.MaxResultBytes:
			err = jobs.Permanentf("result is %d bytes, more than the 1 MiB allowed", len(b))
		case !storable:
			err = jobs.Permanentf(`result contains \u0000, which Postgres cannot store`)
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
	if !jobs.IsPermanent(err) && job.AttemptsMade < job.MaxAttempts {
		out.RetryIn = queue.RetryDelay(job.Backoff, job.AttemptsMade)
	}
	return out
}

// call runs the handler, recovering a panic into an error.
func (w *Worker) call(ctx context.Context, r *run) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			w.jobLog(&r.job).Error("handler panicked", "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	job := &r.job
	h, ok := w.registry.Handler(job.Type)
	if !ok {
		return nil, jobs.Permanentf("no handler for job type %s", job.Type)
	}
	if problems := w.registry.Validate(job.Type, job.Data); len(problems) > 0 {
		return nil, jobs.Permanentf("invalid data: %s: %s", problems[0].Field, problems[0].Message)
	}
	progress := func(p int) {
		r.progress.Store(int32(p))
		if w.cfg.Observer != nil && r.observed.Swap(int32(p)) != int32(p) {
			w.cfg.Observer.JobProgress(job, p)
		}
	}
	return h.Handle(ctx, jobs.NewJob(job.ID, job.Type, job.Data, job.AttemptsMade, job.MaxAttempts, progress))
}

func (w *Worker) jobLog(job *queue.Job) *slog.Logger {
	return w.log.With("job_id", job.ID, "type", job.Type, "attempt", job.AttemptsMade)
}

// finishLoop persists outcomes in batches: whatever arrived while the previous batch was
// being written goes in the next statement.
func (w *Worker) finishLoop() {
	defaults := queue.RetentionDefaults{RemoveOnComplete: w.cfg.RemoveOnComplete, RemoveOnFail: w.cfg.RemoveOnFail}
	for first := range w.outcomes {
		batch := []finished{first}
	collect:
		for len(batch) < maxFinishBatch {
			select {
			case f, ok := <-w.outcomes:
				if !ok {
					break collect
				}
				batch = append(batch, f)
			default:
				break collect
			}
		}
		w.flush(defaults, batch)
	}
}

// flush writes one batch, retrying while the database is unreachable: an outcome is
// never dropped while its lease may still hold (a retry after the lease expired is a
// harmless no-op, since the statement is guarded by owner and attempt).
func (w *Worker) flush(defaults queue.RetentionDefaults, batch []finished) {
	outcomes := make([]queue.Outcome, len(batch))
	for i, f := range batch {
		outcomes[i] = f.outcome
	}
	var states map[int64]string
	recorded := map[int64]string{} // outcomes written one by one after a data error
	deadline := time.Now().Add(w.cfg.Lease + w.cfg.ShutdownTimeout)
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var err error
		states, err = w.client.Finish(ctx, w.cfg.ID, defaults, outcomes)
		cancel()
		if err == nil {
			break
		}
		if unstorable(err) {
			// One outcome Postgres refuses must not sink the batch: fail it alone.
			outcomes = w.isolateUnstorable(defaults, outcomes, recorded)
			continue
		}
		if time.Now().After(deadline) {
			w.log.Error("could not record job outcomes; their leases expired and they will be rescued", "jobs", len(batch), "err", err)
			states = nil
			break
		}
		w.log.Warn("recording job outcomes failed; retrying", "jobs", len(batch), "err", err)
		time.Sleep(min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second))
	}
	if len(recorded) > 0 {
		if states == nil {
			states = map[int64]string{}
		}
		maps.Copy(states, recorded)
	}
	w.mu.Lock()
	for _, f := range batch {
		w.forgetLocked(f.run)
	}
	w.mu.Unlock()
	for _, f := range batch {
		w.report(f, states)
	}
}

func (w *Worker) report(f finished, states map[int64]string) {
	job, o := &f.run.job, f.outcome
	took := time.Since(f.run.started)
	log := w.jobLog(job)
	state, ok := states[o.Seq]
	switch {
	case !ok:
		log.Warn("job outcome not recorded: the job is no longer this worker's (lease expired and rescued)", "ok", o.OK)
		return
	case state == queue.StateCompleted:
		log.Info("job completed", "took", took)
	case state == queue.StateFailed:
		log.Error("job failed", "err", o.Message, "took", took)
	case state == queue.StateCancelled:
		log.Info("cancelled job stopped", "took", took)
	default:
		log.Warn("job attempt failed; will retry", "err", o.Message, "retry_in", o.RetryIn, "took", took)
		if state == queue.StateWaiting {
			signal(w.wake)
		}
	}
	if w.cfg.Observer != nil {
		w.cfg.Observer.JobFinished(job, state, o.Result, o.Message, took)
	}
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
	w.log.Info("worker stopping: no new claims", "running", len(w.slots), "budget", w.cfg.ShutdownTimeout)
	done := make(chan struct{})
	go func() { w.handlers.Wait(); close(done) }()
	timer := time.NewTimer(w.cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-done:
		return
	case <-timer.C:
	}
	var seqs []int64
	var reporting, handedBack []*run
	w.mu.Lock()
	for _, r := range w.running {
		if r.reported {
			reporting = append(reporting, r)
			continue
		}
		r.handedBack = true
		handedBack = append(handedBack, r)
		seqs = append(seqs, r.job.Seq)
		r.cancel(ErrShutdown)
	}
	w.mu.Unlock()
	// Runs that returned just before the deadline are queueing their outcomes.
	for _, r := range reporting {
		<-r.sent
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	back, err := w.client.HandBack(ctx, w.cfg.ID, seqs)
	if err != nil {
		w.log.Error("handing back unfinished jobs failed; they will be rescued when their lease expires", "jobs", len(seqs), "err", err)
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

// unstorable reports a data error (SQLSTATE class 22): retrying the same values cannot
// succeed.
func unstorable(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && strings.HasPrefix(pg.Code, "22")
}

// isolateUnstorable writes the outcomes one by one and returns those still to write: an
// outcome Postgres refuses becomes a permanent failure of its job, without result.
func (w *Worker) isolateUnstorable(defaults queue.RetentionDefaults, outcomes []queue.Outcome, recorded map[int64]string) []queue.Outcome {
	var rest []queue.Outcome
	for _, o := range outcomes {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		states, err := w.client.Finish(ctx, w.cfg.ID, defaults, []queue.Outcome{o})
		cancel()
		switch {
		case err == nil:
			maps.Copy(recorded, states)
			continue
		case unstorable(err):
			w.log.Error("job outcome cannot be stored; failing the job", "seq", o.Seq, "err", err)
			rest = append(rest, queue.Outcome{Seq: o.Seq, Attempt: o.Attempt, RetryIn: -1,
				Message: "the job's outcome could not be stored: " + queue.StorableMessage(err.Error())})
		default:
			rest = append(rest, o)
		}
	}
	return rest
}

func (w *Worker) entered(jobs []queue.Entered) {
	if w.cfg.Observer == nil {
		return
	}
	for _, j := range jobs {
		w.cfg.Observer.JobEntered(j.ID, j.Type, j.State)
	}
}
