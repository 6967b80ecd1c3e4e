package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgqueue/queue/internal/store"
)

// The worker side of the engine: every state change a worker makes goes through here,
// and every statement after the claim presents the claim's token.

// MaxErrorMessage is the longest error message kept per attempt (2 KiB).
const MaxErrorMessage = 2048

// MaxResultBytes is the largest result a handler may return (1 MiB).
const MaxResultBytes = 1 << 20

// MaxBackoff caps an exponential backoff (7 days).
const MaxBackoff = 7 * 24 * time.Hour

// Runner is one worker process's side of the engine: it claims jobs, keeps their leases,
// and records their outcomes. Every statement after a claim is guarded by that claim's
// token, so nothing a run does can land on another claim of the same job.
type Runner struct {
	pool   *pgxpool.Pool
	worker string
}

// NewRunner returns the runner of worker (its lease owner name).
func NewRunner(pool *pgxpool.Pool, worker string) *Runner {
	return &Runner{pool: pool, worker: worker}
}

// Claim is one run's hold on its job: the job and the token of the claim.
type Claim struct {
	Seq   int64
	Token int64
}

// Retention holds the defaults a finishing worker writes into jobs that did not say.
type RetentionDefaults struct {
	RemoveOnComplete int
	RemoveOnFail     int
}

// Claim marks up to max waiting jobs of one queue and of the given types active for
// this worker, in priority order, each with a lease and a token of its own. Nothing is
// claimed while the queue, or everything, is paused. The claim is durable when it
// returns.
func (r *Runner) Claim(ctx context.Context, queue string, types []string, max int, lease time.Duration) ([]Job, error) {
	rows, err := store.New(r.pool).JobClaim(ctx, store.JobClaimParams{
		Queue: queue, Types: types, Max: int32(max), Worker: r.worker, LeaseMs: lease.Milliseconds(),
	})
	return claimed(rows, err, func(row store.JobClaimRow) store.QueueJob { return store.QueueJob(row) })
}

// claimed converts the rows of a claim statement.
func claimed[R any](rows []R, err error, row func(R) store.QueueJob) ([]Job, error) {
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	jobs := make([]Job, len(rows))
	for i := range rows {
		jobs[i] = jobFromRow(row(rows[i]))
	}
	return jobs, nil
}

// ClaimLimited is Claim for a queue with limits: it claims no more than the queue's
// concurrency and rate limits, and its groups' limits, allow at this instant, counting
// the jobs of every worker. Claims of one limited queue take turns (they take the
// queue's claim lock); a queue without limits is claimed the same way, only slower than
// by Claim.
func (r *Runner) ClaimLimited(ctx context.Context, queue string, types []string, max int, lease time.Duration) ([]Job, error) {
	rows, err := store.New(r.pool).JobClaimLimited(ctx, store.JobClaimLimitedParams{
		Queue: queue, Types: types, Max: int32(max), Worker: r.worker, LeaseMs: lease.Milliseconds(),
	})
	return claimed(rows, err, func(row store.QueueJob) store.QueueJob { return row })
}

// Limit names, as a queue reports what held its last claim back.
const (
	LimitConcurrency      = "concurrency"
	LimitRate             = "rate"
	LimitGroupConcurrency = "groupConcurrency"
	LimitGroupRate        = "groupRate"
)

// Hold is what held the last claim of a limited queue back.
type Hold struct {
	// By names the limit (a Limit* constant); empty when the claim was not held back.
	By string
	// NextStart is how long until a full rate window has room again (0: not held by a
	// rate, or due now).
	NextStart time.Duration
}

// Hold reads what held the last claim of queue back.
func (r *Runner) Hold(ctx context.Context, queue string) (Hold, error) {
	row, err := store.New(r.pool).QueueHold(ctx, queue)
	if errors.Is(err, pgx.ErrNoRows) {
		return Hold{}, nil
	}
	if err != nil {
		return Hold{}, fmt.Errorf("read queue hold: %w", err)
	}
	h := Hold{}
	if row.HeldBy != nil {
		h.By = *row.HeldBy
	}
	if row.NextStartInMs > 0 {
		h.NextStart = time.Duration(row.NextStartInMs) * time.Millisecond
	}
	return h, nil
}

// Limits says how the worker must claim a queue.
type Limits struct {
	// Limited: the queue has limits or is fair, so ClaimLimited claims it (Claim leaves
	// it alone).
	Limited bool
	// Slots: a concurrency limit (queue or group) holds it, so a finish makes room for
	// other workers and must wake them.
	Slots bool
}

// Limits reads the limits of the named queues; a queue without a settings row has none.
func (r *Runner) Limits(ctx context.Context, queues []string) (map[string]Limits, error) {
	rows, err := store.New(r.pool).QueueLimits(ctx, queues)
	if err != nil {
		return nil, fmt.Errorf("read queue limits: %w", err)
	}
	out := make(map[string]Limits, len(queues))
	for _, row := range rows {
		out[row.Name] = Limits{Limited: row.Limited, Slots: row.SlotLimited}
	}
	return out, nil
}

// Outcome is the end of one attempt.
type Outcome struct {
	Claim
	Attempt int
	OK      bool
	// Remove deletes the job instead of keeping it finished: for a final outcome whose
	// retention is "remove at once" and whose snapshot the worker has stored.
	Remove  bool
	Result  []byte        // JSON, when OK; nil is stored as NULL
	Message string        // the error, when not OK
	RetryIn time.Duration // when not OK: wait before the next attempt; < 0: fail for good
}

// Final reports whether the outcome ends the job (completed, or failed for good).
func (o *Outcome) Final() bool { return o.OK || o.RetryIn < 0 }

// Finish records many outcomes in one statement and returns the new state of each job
// that changed. A job missing from the answer was no longer held by that claim
// (rescued, handed back, claimed again); a cancelled job whose handler returned is
// answered "cancelled".
func (r *Runner) Finish(ctx context.Context, defaults RetentionDefaults, outcomes []Outcome) (map[int64]string, error) {
	return r.FinishAndWake(ctx, defaults, outcomes, nil)
}

// FinishAndWake is Finish for jobs of queues whose concurrency is limited, named in
// slotQueues: the statement also wakes those queues' workers, since it frees slots they
// may be waiting for.
func (r *Runner) FinishAndWake(ctx context.Context, defaults RetentionDefaults, outcomes []Outcome, slotQueues []string) (map[int64]string, error) {
	n := len(outcomes)
	p := store.JobFinishManyParams{
		Seqs: make([]int64, n), Tokens: make([]int64, n), Ok: make([]bool, n), Remove: make([]bool, n),
		Results: make([][]byte, n), Messages: make([]string, n), RetryMs: make([]int64, n),
		Worker: r.worker, DefaultRemoveOnComplete: int32(defaults.RemoveOnComplete),
		DefaultRemoveOnFail: int32(defaults.RemoveOnFail), SlotQueues: slotQueues,
	}
	if p.SlotQueues == nil {
		p.SlotQueues = []string{}
	}
	for i, o := range outcomes {
		p.Seqs[i], p.Tokens[i], p.Ok[i], p.Remove[i], p.Results[i] = o.Seq, o.Token, o.OK, o.Remove, o.Result
		if !o.OK {
			p.Messages[i] = StorableMessage(o.Message)
			p.RetryMs[i] = -1
			if o.RetryIn >= 0 {
				p.RetryMs[i] = o.RetryIn.Milliseconds()
			}
		}
	}
	rows, err := store.New(r.pool).JobFinishMany(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("finish jobs: %w", err)
	}
	out := make(map[int64]string, len(rows))
	for _, row := range rows {
		out[row.Seq] = row.State
	}
	return out, nil
}

// StorableMessage makes an error message storable in text: valid UTF-8, no NUL (which
// Postgres refuses, failing the whole batch it is in), at most MaxErrorMessage bytes cut
// on a rune boundary.
func StorableMessage(s string) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
	if len(s) <= MaxErrorMessage {
		return s
	}
	s = s[:MaxErrorMessage]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// RetryDelay is the wait before the attempt after attempt n (1-based) failed: fixed =
// delay; exponential = delay·2^(n-1)·U(0.8, 1.0), capped at MaxBackoff.
func RetryDelay(b Backoff, attempt int) time.Duration {
	delay := time.Duration(b.Delay) * time.Millisecond
	if b.Type == "fixed" {
		return delay
	}
	exp := float64(delay) * math.Pow(2, float64(max(attempt, 1)-1)) * (0.8 + 0.2*rand.Float64())
	if exp > float64(MaxBackoff) {
		return MaxBackoff
	}
	return time.Duration(exp)
}

// claimArrays splits claims into the statements' parallel arrays.
func claimArrays(claims []Claim) (seqs, tokens []int64) {
	seqs, tokens = make([]int64, len(claims)), make([]int64, len(claims))
	for i, c := range claims {
		seqs[i], tokens[i] = c.Seq, c.Token
	}
	return seqs, tokens
}

// Heartbeat extends the leases of the given claims and returns the state of each job
// still held by its claim. A lease that has expired is not extended (the job belongs to
// the rescuer from then on), and such a job is missing from the answer. Rows locked at
// that moment (being finished or cancelled) are not waited for; they are looked up
// instead, so they are not taken for lost.
func (r *Runner) Heartbeat(ctx context.Context, claims []Claim, lease time.Duration) (map[int64]string, error) {
	q := store.New(r.pool)
	seqs, tokens := claimArrays(claims)
	rows, err := q.JobHeartbeat(ctx, store.JobHeartbeatParams{Seqs: seqs, Tokens: tokens, LeaseMs: lease.Milliseconds()})
	if err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	out := make(map[int64]string, len(rows))
	for _, row := range rows {
		out[row.Seq] = row.State
	}
	var skipped []int64
	for _, s := range seqs {
		if _, ok := out[s]; !ok {
			skipped = append(skipped, s)
		}
	}
	if len(skipped) == 0 {
		return out, nil
	}
	held, err := q.JobLeaseState(ctx, skipped)
	if err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	token := make(map[int64]int64, len(claims))
	for _, c := range claims {
		token[c.Seq] = c.Token
	}
	for _, row := range held {
		if row.LeaseToken != nil && *row.LeaseToken == token[row.Seq] && row.Unexpired {
			out[row.Seq] = row.State
		}
	}
	return out, nil
}

// SetProgress writes the latest progress of running jobs.
func (r *Runner) SetProgress(ctx context.Context, progress map[Claim]int) error {
	p := store.JobSetProgressParams{}
	for c, v := range progress {
		p.Seqs = append(p.Seqs, c.Seq)
		p.Tokens = append(p.Tokens, c.Token)
		p.Progress = append(p.Progress, int32(v))
	}
	if err := store.New(r.pool).JobSetProgress(ctx, p); err != nil {
		return fmt.Errorf("set progress: %w", err)
	}
	return nil
}

// HandBack returns unfinished jobs to waiting at shutdown, giving their attempt back
// (a cancelled one only gives up its lease), and returns the jobs that went back.
func (r *Runner) HandBack(ctx context.Context, claims []Claim) ([]Entered, error) {
	seqs, tokens := claimArrays(claims)
	rows, err := store.New(r.pool).JobHandBack(ctx, store.JobHandBackParams{Seqs: seqs, Tokens: tokens, Worker: r.worker})
	if err != nil {
		return nil, fmt.Errorf("hand back jobs: %w", err)
	}
	var out []Entered
	for _, row := range rows {
		if row.State == StateWaiting {
			out = append(out, Entered{ID: row.ID, Type: row.Type, Queue: row.Queue, State: row.State})
		}
	}
	return out, nil
}

// WorkerInfo is how a worker describes itself in the registry of live workers.
type WorkerInfo struct {
	Host    string
	PID     int
	Queues  map[string]int // queue name -> concurrency
	Types   []string
	Running int
}

// Seen records that this worker is alive until ttl from now (three heartbeats).
func (r *Runner) Seen(ctx context.Context, info WorkerInfo, ttl time.Duration) error {
	queues, err := json.Marshal(info.Queues)
	if err != nil {
		return err
	}
	err = store.New(r.pool).WorkerSeen(ctx, store.WorkerSeenParams{
		ID: r.worker, Host: info.Host, Pid: int32(info.PID), Queues: queues, Types: info.Types,
		Running: int32(info.Running), TtlMs: ttl.Milliseconds(),
	})
	if err != nil {
		return fmt.Errorf("record worker: %w", err)
	}
	return nil
}

// Gone removes this worker from the registry (graceful stop).
func (r *Runner) Gone(ctx context.Context) error {
	if err := store.New(r.pool).WorkerGone(ctx, r.worker); err != nil {
		return fmt.Errorf("remove worker: %w", err)
	}
	return nil
}

// FinishedJob is job as a final outcome leaves it (completed, or failed for good), for
// its snapshot: the finish statement's own values, with now as its finish time.
func FinishedJob(job Job, o Outcome, now time.Time) Job {
	at := Timestamp{now}
	job.FinishedAt, job.LeaseOwner, job.LeaseToken = &at, nil, 0
	if o.OK {
		job.State, job.Result, job.Progress = StateCompleted, o.Result, 100
		return job
	}
	msg := StorableMessage(o.Message)
	job.State, job.Error = StateFailed, &msg
	job.Errors = append(append([]AttemptError(nil), job.Errors...),
		AttemptError{Attempt: job.AttemptsMade, Message: msg, At: now.UTC().Format(TimeFormat)})
	return job
}
