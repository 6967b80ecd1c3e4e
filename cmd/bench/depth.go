package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/pgqueue/queue/internal/queue"
)

// depth: claim latency and drain rate with 1k, 100k and 1M waiting rows, and the stats
// query's latency at each depth. Each level tops the backlog up (server-side bulk insert,
// no audit rows), vacuums, then measures:
//   - stats: queue.Client.Stats, the query behind GET /api/queue/stats (uncached);
//   - claim1/claim10: Client.Claim of 1 and of 10 jobs, one call at a time (each call
//     consumes rows: at most 10% of the level);
//   - drain: a worker at concurrency 100, started paused and then resumed, completes
//     min(20,000, what is left) jobs; jobs/s from the resume;
//   - pick_exec: the server's execution time of the claim's index walk alone (EXPLAIN
//     ANALYZE, rolled back), without the commit that dominates claim1;
//   - claim1_after_drain, pick_after_drain_exec: claim1 and the pick again right after
//     that drain, before any vacuum, with the drained rows' dead tuples at the head of
//     the claim index;
//   - other_queue_claim1: claim1 in another queue that holds only the jobs it claims,
//     while the backlog waits in the default one (each queue's claim walks its own rows).
func (b *bench) depth(ctx context.Context, t *target) (result, error) {
	var res result
	levels := []int{b.scaled(1_000, 100), b.scaled(100_000, 1_000), b.scaled(1_000_000, 10_000)}
	p, err := b.newProducer(ctx, t, 2)
	if err != nil {
		return res, err
	}
	defer p.close()
	m, err := startMeter(ctx, t.ctl)
	if err != nil {
		return res, err
	}
	for _, n := range levels {
		if err := b.depthLevel(ctx, t, p, n, &res); err != nil {
			return res, fmt.Errorf("depth %d: %w", n, err)
		}
	}
	m.stop(ctx)
	res.set("machine_busy_pct", m.busy*100)
	return res, nil
}

func levelName(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("d%dm", n/1_000_000)
	case n >= 1_000 && n%1_000 == 0:
		return fmt.Sprintf("d%dk", n/1_000)
	}
	return fmt.Sprintf("d%d", n)
}

func (b *bench) depthLevel(ctx context.Context, t *target, p *producer, n int, res *result) error {
	name := levelName(n)
	waiting, err := countWaiting(ctx, t.ctl)
	if err != nil {
		return err
	}
	buildStart := time.Now()
	for waiting < n {
		chunk := min(n-waiting, 250_000)
		if err := addBacklog(ctx, t.ctl, chunk, queue.DefaultPriority); err != nil {
			return err
		}
		waiting += chunk
	}
	if err := vacuumJobs(ctx, t.ctl); err != nil {
		return err
	}
	b.progress("depth level ready", "waiting", waiting, "build", time.Since(buildStart).Round(time.Millisecond))

	// Stats first, on the exact level.
	statsRuns := 7
	var stats []float64
	for range statsRuns {
		start := time.Now()
		if _, err := p.client.Stats(ctx); err != nil {
			return err
		}
		stats = append(stats, ms(time.Since(start)))
	}
	slices.Sort(stats)
	res.set(name+"_stats_p50_ms", percentile(stats, 50))

	if err := b.measurePick(ctx, t, name+"_pick_exec_ms", res); err != nil {
		return err
	}

	k1 := min(max(n/20, 20), 200)
	k10 := min(max(n/200, 5), 50)
	prober := queue.NewRunner(p.pool, "bench-prober")
	other, err := b.otherQueueClaims(ctx, p, prober, k1)
	if err != nil {
		return err
	}
	res.set(name+"_other_queue_claim1_p50_ms", percentile(other, 50))
	c1, err := probeClaims(ctx, prober, queue.DefaultQueue, k1, 1)
	if err != nil {
		return err
	}
	c10, err := probeClaims(ctx, prober, queue.DefaultQueue, k10, 10)
	if err != nil {
		return err
	}
	res.set(name+"_claim1_p50_ms", percentile(c1, 50))
	res.set(name+"_claim1_p95_ms", percentile(c1, 95))
	res.set(name+"_claim10_p50_ms", percentile(c10, 50))

	// Drain: the worker starts paused, so its start-up is not timed.
	left := n - k1 - 10*k10
	target := min(b.scaled(20_000, 1_000), left-k1)
	if target <= 0 {
		return nil
	}
	if _, err := p.client.SetPaused(ctx, true); err != nil {
		return err
	}
	count := newCompletionCounter(int64(target))
	w, err := b.startWorker(ctx, t, 100, count, noop)
	if err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	if _, err := p.client.SetPaused(ctx, false); err != nil {
		w.stop()
		return err
	}
	err = count.wait(ctx, 5*time.Minute)
	took := time.Since(start)
	w.stop()
	if err != nil {
		return fmt.Errorf("drain %d jobs: %w", target, err)
	}
	res.set(name+"_drain_jobs_per_s", float64(target)/took.Seconds())

	if err := b.measurePick(ctx, t, name+"_pick_after_drain_exec_ms", res); err != nil {
		return err
	}
	// Only claims that find a job are comparable (an empty claim writes nothing).
	left, err = countWaiting(ctx, t.ctl)
	if err != nil {
		return err
	}
	if k := min(k1, left); k >= 10 {
		after, err := probeClaims(ctx, prober, queue.DefaultQueue, k, 1)
		if err != nil {
			return err
		}
		res.set(name+"_claim1_after_drain_p50_ms", percentile(after, 50))
	}
	return nil
}

// otherQueue holds a few jobs beside the depth backlog of the default queue.
const otherQueue = "bench-other"

// otherQueueClaims enqueues k jobs in otherQueue and claims them one at a time.
func (b *bench) otherQueueClaims(ctx context.Context, p *producer, prober *queue.Runner, k int) ([]float64, error) {
	batch := noopBatch(k)
	q := otherQueue
	for i := range batch {
		batch[i].Options.Queue = &q
	}
	if _, err := p.client.EnqueueMany(ctx, p.pool, batch); err != nil {
		return nil, err
	}
	return probeClaims(ctx, prober, otherQueue, k, 1)
}

// probeClaims claims size jobs of a queue k times in a row, as an otherwise idle worker
// would, and returns the sorted latencies in ms. The claimed jobs keep a long lease, so
// no rescue runs in the middle of the measurement.
func probeClaims(ctx context.Context, r *queue.Runner, queueName string, k, size int) ([]float64, error) {
	out := make([]float64, 0, k)
	for range k {
		start := time.Now()
		if _, err := r.Claim(ctx, queueName, []string{jobType}, size, time.Hour); err != nil {
			return nil, err
		}
		out = append(out, ms(time.Since(start)))
	}
	slices.Sort(out)
	return out, nil
}

// measurePick records the median server-side execution time of the claim's index walk
// (limit 10), and notes when the plan does not use the claim index.
func (b *bench) measurePick(ctx context.Context, t *target, metric string, res *result) error {
	var times []float64
	usedIndex := true
	for range 21 {
		ms, used, err := pickExecution(ctx, t.ctl, 10)
		if err != nil {
			return err
		}
		times = append(times, ms)
		usedIndex = usedIndex && used
	}
	res.set(metric, median(times))
	if !usedIndex {
		res.note("%s: the claim's plan did not use jobs_claim_idx", metric)
	}
	return nil
}
