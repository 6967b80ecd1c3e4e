package main

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/queue"
)

func TestPercentileNearestRank(t *testing.T) {
	t.Parallel()
	xs := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	require.Equal(t, 5.0, percentile(xs, 50))
	require.Equal(t, 10.0, percentile(xs, 95))
	require.Equal(t, 1.0, percentile(xs, 0))
	require.Equal(t, 10.0, percentile(xs, 100))
	require.Equal(t, 0.0, percentile(nil, 50))
}

func TestMedian(t *testing.T) {
	t.Parallel()
	require.Equal(t, 2.0, median([]float64{3, 1, 2}))
	require.Equal(t, 2.5, median([]float64{4, 1, 3, 2}))
}

func TestMediansAddCeilingRatioOfTheSameRun(t *testing.T) {
	t.Parallel()
	rs := []result{
		{Workload: "ceiling", Run: 1, Metrics: map[string]float64{"insert_tps": 4000}},
		{Workload: "single", Variant: "default", Run: 1, Metrics: map[string]float64{"jobs_per_s": 2000}},
		{Workload: "ceiling", Run: 2, Metrics: map[string]float64{"insert_tps": 2000}},
		{Workload: "single", Variant: "default", Run: 2, Metrics: map[string]float64{"jobs_per_s": 2000}},
	}
	var ratio *summary
	for _, s := range medians(rs) {
		if s.Metric == "pct_of_insert_ceiling" {
			ratio = &s
		}
	}
	require.NotNil(t, ratio)
	require.Equal(t, 50.0, ratio.Min)
	require.Equal(t, 100.0, ratio.Max)
	require.Equal(t, 2, ratio.Runs)
}

func TestDepthLevelsSortBySize(t *testing.T) {
	t.Parallel()
	require.Equal(t, "d1k", levelName(1_000))
	require.Equal(t, "d1m", levelName(1_000_000))
	require.Less(t, metricGroup("d1k_claim1_p50_ms"), metricGroup("d100k_claim1_p50_ms"))
	require.Less(t, metricGroup("d100k_claim1_p50_ms"), metricGroup("d1m_claim1_p50_ms"))
	require.Equal(t, 0, metricGroup("drain_jobs_per_s"))
}

func TestFairClaimGroupCountsSortBySize(t *testing.T) {
	t.Parallel()
	require.Equal(t, 0, metricGroup("plain_claim1_p50_ms"))
	require.Equal(t, 0, metricGroup("limited_claim1_p50_ms"))
	require.Equal(t, 0, metricGroup("go_cpu_us_per_job"))
	require.Less(t, metricGroup("g1_claim1_p50_ms"), metricGroup("g10_claim1_p50_ms"))
	require.Less(t, metricGroup("g10_claim1_p50_ms"), metricGroup("g1000_claim1_p50_ms"))
	require.Equal(t, 0, metricGroup("_x"))
	require.Equal(t, "g0000", groupName(0))
	require.Equal(t, "g0999", groupName(999))
	for _, s := range fairSetups() {
		require.True(t, queue.ValidQueueName(s.queue), s.queue)
		require.Equal(t, s.limits != nil, s.limited, s.queue)
	}
}

func TestParseFlagsFlowWorkloads(t *testing.T) {
	t.Parallel()
	o, err := parseFlags([]string{"-only", "drain_limited,fair_claim"})
	require.NoError(t, err)
	require.Equal(t, []string{"drain_limited", "fair_claim"}, o.only)
	// Not in the default set: make bench runs what it ran before.
	o, err = parseFlags(nil)
	require.NoError(t, err)
	require.NotContains(t, o.only, "drain_limited")
	require.NotContains(t, o.only, "fair_claim")
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	o, err := parseFlags([]string{"-only", "bulk,drain", "-runs", "3", "-variants", "default,noaudit", "-ceiling"})
	require.NoError(t, err)
	require.Equal(t, []string{"bulk", "drain", "ceiling"}, o.only)
	require.Len(t, o.variants, 2)
	require.False(t, o.variants[1].Audit)
	_, err = parseFlags([]string{"-only", "nope"})
	require.Error(t, err)
	_, err = parseFlags([]string{"-variants", "nope"})
	require.Error(t, err)
}

func TestPidCPUReadsThisProcess(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	_, ok := pidCPU(os.Getpid())
	require.True(t, ok)
}

// The latency handler's own cost is part of every figure it records; it should stay in
// the microseconds.
func BenchmarkLatencyHandler(b *testing.B) {
	rec := &latencyRecorder{}
	data := &benchData{T: time.Now().UnixNano()}
	job := kinds.NewJob("1", jobType, queue.DefaultQueue, 1, 3, nil)
	for b.Loop() {
		_, _ = rec.handler(context.Background(), job, data)
	}
	if rec.count() == 0 {
		b.Fatal("the handler recorded nothing")
	}
}

// The job's data is decoded and checked before the handler takes its time, so that cost
// is not in the figures, but it is in every job's run; it should stay small too.
func BenchmarkLatencyKindRun(b *testing.B) {
	rec := &latencyRecorder{}
	kind, ok := benchKinds(rec.handler).Kind(jobType)
	if !ok {
		b.Fatalf("no kind %s", jobType)
	}
	data := json.RawMessage(`{"t":` + strconv.FormatInt(time.Now().UnixNano(), 10) + `}`)
	job := kinds.NewJob("1", jobType, queue.DefaultQueue, 1, 3, nil)
	for b.Loop() {
		if _, err := kind.Run(context.Background(), job, data); err != nil {
			b.Fatal(err)
		}
	}
	if rec.count() == 0 {
		b.Fatal("the handler recorded nothing")
	}
}

// Reading a backend's CPU time happens twice per workload per backend; it must not
// matter.
func BenchmarkPidCPU(b *testing.B) {
	pid := os.Getpid()
	for b.Loop() {
		pidCPU(pid)
	}
}
