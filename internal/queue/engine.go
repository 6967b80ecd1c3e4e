package queue

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/pgqueue/queue/db"
)

// The worker side of the engine: every state change a worker makes goes through here.

// MaxErrorMessage is the longest error message kept per attempt (API.md: 2 KiB).
const MaxErrorMessage = 2048

// MaxResultBytes is the largest result a handler may return (API.md: 1 MiB).
const MaxResultBytes = 1 << 20

// MaxBackoff caps an exponential backoff (API.md: 7 days).
const MaxBackoff = 7 * 24 * time.Hour

// ErrConflict means the job is not in a state that allows the operation.
var ErrConflict = errors.New("job state does not allow this")

// Retention holds the defaults a finishing worker writes into jobs that did not say.
type RetentionDefaults struct {
	RemoveOnComplete int
	RemoveOnFail     int
}

// Claim marks up to max waiting jobs of the given types active for worker, in priority
// order, with a lease. Nothing is claimed while the queue is paused.
func (c *Client) Claim(ctx context.Context, worker string, types []string, max int, lease time.Duration) ([]Job, error) {
	rows, err := db.New(c.pool).JobClaim(ctx, db.JobClaimParams{
		Types: types, Max: int32(max), Worker: worker, LeaseMs: lease.Milliseconds(),
	})
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	jobs := make([]Job, len(rows))
	for i, r := range rows {
		jobs[i] = jobFromRow(db.QueueJob(r))
	}
	return jobs, nil
}

// Outcome is the end of one attempt.
type Outcome struct {
	Seq     int64
	Attempt int
	OK      bool
	Result  []byte        // JSON, when OK; nil is stored as NULL
	Message string        // the error, when not OK
	RetryIn time.Duration // when not OK: wait before the next attempt; < 0: fail for good
}

// Finish records many outcomes in one statement and returns the new state of each job
// that changed. A job missing from the answer was no longer this worker's (rescued,
// or handed back); a cancelled job whose handler returned is answered "cancelled".
func (c *Client) Finish(ctx context.Context, worker string, defaults RetentionDefaults, outcomes []Outcome) (map[int64]string, error) {
	n := len(outcomes)
	p := db.JobFinishManyParams{
		Seqs: make([]int64, n), Attempts: make([]int32, n), Ok: make([]bool, n),
		Results: make([][]byte, n), Messages: make([]string, n), RetryMs: make([]int64, n),
		Worker: worker, DefaultRemoveOnComplete: int32(defaults.RemoveOnComplete),
		DefaultRemoveOnFail: int32(defaults.RemoveOnFail),
	}
	for i, o := range outcomes {
		p.Seqs[i], p.Attempts[i], p.Ok[i], p.Results[i] = o.Seq, int32(o.Attempt), o.OK, o.Result
		if !o.OK {
			p.Messages[i] = StorableMessage(o.Message)
			p.RetryMs[i] = -1
			if o.RetryIn >= 0 {
				p.RetryMs[i] = o.RetryIn.Milliseconds()
			}
		}
	}
	rows, err := db.New(c.pool).JobFinishMany(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("finish jobs: %w", err)
	}
	out := make(map[int64]string, len(rows))
	for _, r := range rows {
		out[r.Seq] = r.State
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

// Heartbeat extends the leases of the given jobs and returns the state of each job the
// worker still owns. Rows locked at that moment (being finished or cancelled) are not
// waited for; they are looked up instead, so they are not taken for lost.
func (c *Client) Heartbeat(ctx context.Context, worker string, seqs []int64, lease time.Duration) (map[int64]string, error) {
	q := db.New(c.pool)
	rows, err := q.JobHeartbeat(ctx, db.JobHeartbeatParams{Seqs: seqs, Worker: worker, LeaseMs: lease.Milliseconds()})
	if err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	out := make(map[int64]string, len(rows))
	for _, r := range rows {
		out[r.Seq] = r.State
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
	for _, r := range held {
		if r.LeaseOwner != nil && *r.LeaseOwner == worker {
			out[r.Seq] = r.State
		}
	}
	return out, nil
}

// SetProgress writes the latest progress of running jobs.
func (c *Client) SetProgress(ctx context.Context, worker string, progress map[int64]int) error {
	p := db.JobSetProgressParams{Worker: worker}
	for seq, v := range progress {
		p.Seqs = append(p.Seqs, seq)
		p.Progress = append(p.Progress, int32(v))
	}
	if err := db.New(c.pool).JobSetProgress(ctx, p); err != nil {
		return fmt.Errorf("set progress: %w", err)
	}
	return nil
}

// HandBack returns unfinished jobs to waiting at shutdown, giving their attempt back
// (a cancelled one only gives up its lease), and returns the jobs that went back.
func (c *Client) HandBack(ctx context.Context, worker string, seqs []int64) ([]Entered, error) {
	rows, err := db.New(c.pool).JobHandBack(ctx, db.JobHandBackParams{Seqs: seqs, Worker: worker})
	if err != nil {
		return nil, fmt.Errorf("hand back jobs: %w", err)
	}
	var out []Entered
	for _, r := range rows {
		if r.State == StateWaiting {
			out = append(out, Entered{ID: r.ID, Type: r.Type, State: r.State})
		}
	}
	return out, nil
}

// Cancel cancels a waiting, delayed or active job. ErrNotFound when it does not exist,
// ErrConflict when it has finished already.
func (c *Client) Cancel(ctx context.Context, id string) (Job, error) {
	r, err := db.New(c.pool).JobCancel(ctx, id)
	if err == nil {
		return jobFromRow(db.QueueJob(r)), nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Job{}, fmt.Errorf("cancel job: %w", err)
	}
	if _, err := c.Get(ctx, id); err != nil {
		return Job{}, err
	}
	return Job{}, ErrConflict
}

// SetPaused pauses or resumes claiming for every worker and returns the new value.
func (c *Client) SetPaused(ctx context.Context, paused bool) (bool, error) {
	v, err := db.New(c.pool).QueueSetPaused(ctx, paused)
	if err != nil {
		return false, fmt.Errorf("set paused: %w", err)
	}
	return v, nil
}
