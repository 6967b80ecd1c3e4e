package main

// What flow control costs: the drain of a queue whose concurrency limit is never reached
// (every claim goes through queue.claim_limited), and the cost of one claim in fair
// queues of 1, 10 and 1,000 groups against the plain claim.

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/pgqueue/queue/internal/queue"
)

// drainLimited: exactly drain, on a queue whose settings say concurrency 100, the
// worker's own concurrency, so the limit itself is never exceeded; what differs is the
// path: the plain claim leaves a limited queue alone, so every job is claimed by
// Runner.ClaimLimited, and every finish wakes the queue's workers.
func (b *bench) drainLimited(ctx context.Context, t *target) (result, error) {
	return b.drainQueue(ctx, t, &queue.QueueLimits{Concurrency: queue.To(100)})
}

// heldCounter counts the claims a limit cut short, as the worker saw them (each costs the
// worker a Hold read and a wait for a finish's notification or its poll interval).
type heldCounter struct{ n atomic.Int64 }

func (h *heldCounter) Observe(e queue.Event) {
	if e.Kind == queue.EventHeld {
		h.n.Add(1)
	}
}

// claimSetup is one queue of the fair_claim workload.
type claimSetup struct {
	prefix  string // metric prefix
	queue   string
	groups  int
	limits  *queue.QueueLimits // nil: no settings row, claimed by Runner.Claim
	limited bool               // claimed by Runner.ClaimLimited
}

// fairSetups are the queues of fair_claim: the same backlog (jobs of groups g0000.. in
// turn, by submission) under different settings. metricGroup sorts the g<N> prefixes by
// N, after plain and limited.
func fairSetups() []claimSetup {
	fair := &queue.QueueLimits{Fair: queue.To(true)}
	return []claimSetup{
		{prefix: "plain", queue: "bench-plain", groups: 1000},
		{prefix: "limited", queue: "bench-limited", groups: 1000, limited: true,
			limits: &queue.QueueLimits{Concurrency: queue.To(100)}},
		{prefix: "g1", queue: "bench-fair-1", groups: 1, limited: true, limits: fair},
		{prefix: "g10", queue: "bench-fair-10", groups: 10, limited: true, limits: fair},
		{prefix: "g1000", queue: "bench-fair-1000", groups: 1000, limited: true, limits: fair},
	}
}

func groupName(i int) string { return fmt.Sprintf("g%04d", i) }

// fairClaim: the cost of one claim in a fair queue. Five queues of 20,000 waiting no-op
// jobs each (enqueued through the engine, groups in turn, then VACUUM ANALYZE):
//   - plain: no settings row, Runner.Claim (the jobs carry the 1,000 groups, which the
//     plain claim ignores);
//   - limited: concurrency 100, never reached, Runner.ClaimLimited: the limited path
//     without groups (settings row lock, lease count, plain pick);
//   - g1, g10, g1000: fair, in 1, 10 and 1,000 groups (20,000, 2,000 and 20 jobs each),
//     Runner.ClaimLimited: the grouped pick visits each group's first job.
//
// Claims of 1, then of 10, one call at a time and interleaved across the queues (so a
// change of load hits all of them alike), each batch finished (completed) at once and
// untimed, so nothing stays leased and the backlog shrinks by at most about 11%. The
// claimed jobs keep a long lease. Reported per queue: <prefix>_claim1_p50_ms, _p95_ms,
// <prefix>_claim10_p50_ms, _p95_ms.
func (b *bench) fairClaim(ctx context.Context, t *target) (result, error) {
	var res result
	setups := fairSetups()
	perQueue := b.scaled(20_000, 2_000)
	rounds := b.scaled(200, 20)
	const warmup = 10

	p, err := b.newProducer(ctx, t, 2)
	if err != nil {
		return res, err
	}
	defer p.close()
	buildStart := time.Now()
	for _, s := range setups {
		if s.limits != nil {
			if _, err := p.client.SetQueueLimits(ctx, s.queue, *s.limits); err != nil {
				return res, fmt.Errorf("%s: %w", s.queue, err)
			}
		}
		if err := p.enqueueGrouped(ctx, s.queue, s.groups, perQueue); err != nil {
			return res, fmt.Errorf("%s: %w", s.queue, err)
		}
	}
	if err := vacuumJobs(ctx, t.ctl); err != nil {
		return res, err
	}
	b.progress("fair_claim backlog ready", "queues", len(setups), "jobs_each", perQueue,
		"build", time.Since(buildStart).Round(time.Millisecond))

	prober := queue.NewRunner(p.pool, "bench-prober")
	defaults := queue.RetentionDefaults{RemoveOnComplete: b.cfg.RemoveOnComplete, RemoveOnFail: b.cfg.RemoveOnFail}
	short := map[string]int{}
	// claim claims size jobs of s's queue, returns how long the claim took, and finishes
	// the batch (untimed).
	claim := func(s claimSetup, size int) (float64, error) {
		call := prober.Claim
		if s.limited {
			call = prober.ClaimLimited
		}
		start := time.Now()
		jobs, err := call(ctx, s.queue, []string{jobType}, size, time.Hour)
		took := ms(time.Since(start))
		if err != nil {
			return 0, fmt.Errorf("%s: %w", s.queue, err)
		}
		if len(jobs) < size {
			short[s.prefix]++
		}
		if len(jobs) == 0 {
			return took, nil
		}
		outcomes := make([]queue.Outcome, len(jobs))
		for i, j := range jobs {
			outcomes[i] = queue.Outcome{Claim: queue.Claim{Seq: j.Seq, Token: j.LeaseToken},
				Attempt: j.AttemptsMade, OK: true}
		}
		if _, err := prober.Finish(ctx, defaults, outcomes); err != nil {
			return 0, fmt.Errorf("%s: %w", s.queue, err)
		}
		return took, nil
	}

	// Warm-up: connections, prepared statements, and plpgsql's plan cache.
	for range warmup {
		for _, s := range setups {
			for _, size := range []int{1, 10} {
				if _, err := claim(s, size); err != nil {
					return res, err
				}
			}
		}
	}
	clear(short)
	m, err := b.startMeter(ctx, t)
	if err != nil {
		return res, err
	}
	for _, size := range []int{1, 10} {
		took := make([][]float64, len(setups))
		for range rounds {
			for i, s := range setups {
				d, err := claim(s, size)
				if err != nil {
					m.stop(ctx)
					return res, err
				}
				took[i] = append(took[i], d)
			}
		}
		for i, s := range setups {
			slices.Sort(took[i])
			name := fmt.Sprintf("%s_claim%d", s.prefix, size)
			res.set(name+"_p50_ms", percentile(took[i], 50))
			res.set(name+"_p95_ms", percentile(took[i], 95))
		}
	}
	m.stop(ctx)
	for _, s := range setups {
		if n := short[s.prefix]; n > 0 {
			res.note("%s: %d claims returned fewer jobs than asked for", s.queue, n)
		}
	}
	m.record(ctx, &res, 0)
	return res, nil
}

// enqueueGrouped enqueues n no-op jobs in queueName through the engine, in batches of
// 1,000, giving job i the group g(i mod groups).
func (p *producer) enqueueGrouped(ctx context.Context, queueName string, groups, n int) error {
	names := make([]string, groups)
	for i := range names {
		names[i] = groupName(i)
	}
	for done := 0; done < n; {
		batch := noopBatch(min(n-done, queue.MaxBulk))
		for i := range batch {
			batch[i].Options.Queue = &queueName
			batch[i].Options.Group = &names[(done+i)%groups]
		}
		if _, err := p.client.EnqueueMany(ctx, p.pool, batch); err != nil {
			return fmt.Errorf("enqueue backlog: %w", err)
		}
		done += len(batch)
	}
	return nil
}
