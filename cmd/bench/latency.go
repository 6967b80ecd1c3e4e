package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/queue"
)

// latencyRecorder collects enqueue-to-start delays measured by the handler.
type latencyRecorder struct {
	mu     sync.Mutex
	delays []float64 // ms
	starts []jobStart
}

// jobStart is one measured job, kept to split its delay with the audit trail's times.
type jobStart struct {
	id            string
	stamp, handle time.Time
}

func (r *latencyRecorder) add(id string, stamp, handle time.Time) {
	r.mu.Lock()
	r.delays = append(r.delays, ms(handle.Sub(stamp)))
	r.starts = append(r.starts, jobStart{id: id, stamp: stamp, handle: handle})
	r.mu.Unlock()
}

func (r *latencyRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.delays)
}

// handler's first act is to take the time (the data was decoded just before).
func (r *latencyRecorder) handler(_ context.Context, job *kinds.Job, d *benchData) (any, error) {
	now := time.Now()
	if d.T > 0 {
		r.add(job.ID, time.Unix(0, d.T), now)
	}
	return nil, nil
}

// producerSummary is what the producer process prints on stdout.
type producerSummary struct {
	Enqueued     int     `json:"enqueued"`
	Failed       int     `json:"failed"`
	EnqueueP50   float64 `json:"enqueueP50Ms"`
	EnqueueP99   float64 `json:"enqueueP99Ms"`
	EnqueueMax   float64 `json:"enqueueMaxMs"`
	LateP99      float64 `json:"lateP99Ms"` // how far behind schedule enqueue calls started
	RateAchieved float64 `json:"rateAchieved"`
}

// latency: an idle worker (concurrency 100); a separate producer process enqueues one job
// every 5 ms on an absolute schedule for 20 s; the handler records now − timestamp.
func (b *bench) latency(ctx context.Context, t *target) (result, error) {
	var res result
	every := 5 * time.Millisecond
	duration := b.scaledDuration(20*time.Second, 2*time.Second)
	rec := &latencyRecorder{}
	w, err := b.startWorker(ctx, t, 100, nil, rec.handler)
	if err != nil {
		return res, err
	}
	defer w.stop()
	// Let the worker finish its first claim and LISTEN, so it is idle when jobs arrive.
	time.Sleep(time.Second)

	exe, err := os.Executable()
	if err != nil {
		return res, fmt.Errorf("find the bench binary for the producer: %w", err)
	}
	m, err := b.startMeter(ctx, t)
	if err != nil {
		return res, err
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, exe, "-producer", "-producer-url", b.databaseURL(t.name),
		"-producer-every", every.String(), "-producer-for", duration.String())
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return res, fmt.Errorf("producer process: %w", err)
	}
	var sum producerSummary
	if err := json.Unmarshal(out.Bytes(), &sum); err != nil {
		return res, fmt.Errorf("producer output %q: %w", out.String(), err)
	}
	// The last jobs may still be starting.
	for wait := time.Now().Add(5 * time.Second); rec.count() < sum.Enqueued && time.Now().Before(wait); {
		time.Sleep(10 * time.Millisecond)
	}
	m.stop(ctx)
	rec.mu.Lock()
	delays := slices.Clone(rec.delays)
	rec.mu.Unlock()
	if len(delays) < sum.Enqueued {
		res.note("%d of %d jobs had not started 5 s after the producer ended", sum.Enqueued-len(delays), sum.Enqueued)
	}
	if sum.Failed > 0 {
		res.note("%d enqueues failed", sum.Failed)
	}
	if err := latencyBreakdown(ctx, t, rec, &res); err != nil {
		return res, err
	}
	slices.Sort(delays)
	res.set("p50_ms", percentile(delays, 50))
	res.set("p95_ms", percentile(delays, 95))
	res.set("p99_ms", percentile(delays, 99))
	res.set("max_ms", percentile(delays, 100))
	res.set("jobs", float64(len(delays)))
	res.set("enqueue_p50_ms", sum.EnqueueP50)
	res.set("enqueue_p99_ms", sum.EnqueueP99)
	res.set("producer_late_p99_ms", sum.LateP99)
	res.set("producer_rate", sum.RateAchieved)
	w.stop()
	m.record(ctx, &res, len(delays))
	return res, nil
}

// runProducer is the latency workload's producer process. Each enqueue starts in its own
// goroutine at its scheduled time, so a slow call does not delay the ones after it (the
// arrival rate stays 200/s whatever the latency; no coordinated omission).
func runProducer(ctx context.Context, o options) error {
	pc, err := pgxpool.ParseConfig(o.producerURL)
	if err != nil {
		return fmt.Errorf("producer url: %w", err)
	}
	pc.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return err
	}
	defer pool.Close()
	client, err := queue.NewClient(pool, queue.ClientConfig{Kinds: benchKinds(nil)})
	if err != nil {
		return err
	}
	defer client.Close()

	// Warm up: open the connections and prepare the statement on each, as a long-running
	// application would have. Warm-up jobs carry no timestamp and are not measured.
	var warm sync.WaitGroup
	for range 2 * int(pc.MaxConns) {
		warm.Go(func() {
			_, _ = client.Enqueue(ctx, pool, queue.NewJob{Type: jobType, Data: emptyData})
		})
	}
	warm.Wait()
	time.Sleep(300 * time.Millisecond)

	n := int(o.producerDuration / o.producerEvery)
	took := make([]float64, n)
	late := make([]float64, n)
	failed := make([]bool, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(i) * o.producerEvery)
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		wg.Go(func() {
			before := time.Now()
			data := []byte(`{"t":` + strconv.FormatInt(before.UnixNano(), 10) + `}`)
			_, err := client.Enqueue(ctx, pool, queue.NewJob{Type: jobType, Data: data})
			took[i] = ms(time.Since(before))
			late[i] = ms(before.Sub(due))
			failed[i] = err != nil
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	sum := producerSummary{}
	var ok []float64
	for i := range n {
		if failed[i] {
			sum.Failed++
			continue
		}
		ok = append(ok, took[i])
	}
	sum.Enqueued = len(ok)
	slices.Sort(ok)
	slices.Sort(late)
	sum.EnqueueP50, sum.EnqueueP99, sum.EnqueueMax = percentile(ok, 50), percentile(ok, 99), percentile(ok, 100)
	sum.LateP99 = percentile(late, 99)
	sum.RateAchieved = float64(n) / elapsed.Seconds()
	return json.NewEncoder(os.Stdout).Encode(sum)
}

// latencyBreakdown splits each job's delay at the times the audit trail records (the
// server's now(), the start of each transaction): stamp → the enqueue's transaction
// (client and network), → the claim's transaction (enqueue statement, durable commit,
// NOTIFY, wake-up), → the handler's first act (claim statement and dispatch). Medians.
func latencyBreakdown(ctx context.Context, t *target, rec *latencyRecorder, res *result) error {
	rec.mu.Lock()
	starts := slices.Clone(rec.starts)
	rec.mu.Unlock()
	ids := make([]string, len(starts))
	for i, s := range starts {
		ids[i] = s.id
	}
	rows, err := t.ctl.Query(ctx, `
SELECT job_id, min(at) FILTER (WHERE state = 'waiting'), min(at) FILTER (WHERE state = 'active')
FROM queue.job_events WHERE job_id = ANY($1) GROUP BY job_id`, ids)
	if err != nil {
		return fmt.Errorf("latency breakdown: %w", err)
	}
	type times struct{ enq, claim *time.Time }
	byID := map[string]times{}
	for rows.Next() {
		var id string
		var tm times
		if err := rows.Scan(&id, &tm.enq, &tm.claim); err != nil {
			return fmt.Errorf("latency breakdown: %w", err)
		}
		byID[id] = tm
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("latency breakdown: %w", err)
	}
	var toEnqueue, toClaim, toHandler []float64
	for _, s := range starts {
		tm := byID[s.id]
		if tm.enq == nil || tm.claim == nil {
			continue // audit trail switched off
		}
		toEnqueue = append(toEnqueue, ms(tm.enq.Sub(s.stamp)))
		toClaim = append(toClaim, ms(tm.claim.Sub(*tm.enq)))
		toHandler = append(toHandler, ms(s.handle.Sub(*tm.claim)))
	}
	if len(toClaim) == 0 {
		return nil
	}
	for _, d := range [][]float64{toEnqueue, toClaim, toHandler} {
		slices.Sort(d)
	}
	res.set("split_stamp_to_enqueue_tx_p50_ms", percentile(toEnqueue, 50))
	res.set("split_enqueue_tx_to_claim_tx_p50_ms", percentile(toClaim, 50))
	res.set("split_claim_tx_to_handler_p50_ms", percentile(toHandler, 50))
	return nil
}
