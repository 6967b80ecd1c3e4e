// Command bench measures the queue with fixed workloads (bulk, single,
// drain, latency, depth) on a database of its own, plus the machine's one-write-per-commit
// ceiling (pgbench) and, when named with -only, what flow control costs (drain_limited,
// fair_claim), and prints a table of medians (or JSON with -json).
//
// It never touches the user's queue schema: every workload runs in a fresh database
// queue_bench_<random>_<n>, cloned from a migrated template, and all of them are dropped at
// the end, also on Ctrl-C. See docs/BENCHMARKS.md for the method.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Workload names, in the order a run executes them. The ceiling sits next to single so
// that the ratio of the two is taken under the same background load, and drain_limited
// next to drain for the same reason.
var allWorkloads = []string{"ceiling", "single", "bulk", "drain", "drain_limited", "latency", "depth", "fair_claim"}

// variant is one engine configuration under test.
type variant struct {
	Name  string `json:"name"`
	Audit bool   `json:"audit"`
	Redis bool   `json:"redis"`
}

var knownVariants = map[string]variant{
	"default": {Name: "default", Audit: true, Redis: true},
	"noaudit": {Name: "noaudit", Audit: false, Redis: true},
	"noredis": {Name: "noredis", Audit: true, Redis: false},
	"bare":    {Name: "bare", Audit: false, Redis: false},
}

type options struct {
	only     []string
	variants []variant
	runs     int
	scale    float64
	jsonOut  bool
	jsonFile string
	ceiling  bool
	pgbench  string
	verbose  bool
	profile  bool

	// The latency producer: a child process started by the bench itself.
	producer         bool
	producerURL      string
	producerEvery    time.Duration
	producerDuration time.Duration

	cpuProfile string
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var o options
	only := fs.String("only", "single,bulk,drain,latency,depth", "comma-separated workloads to run: "+strings.Join(allWorkloads, ",")+
		" (the flow-control ones, drain_limited and fair_claim, only when named)")
	variants := fs.String("variants", "default", "comma-separated configurations: default (audit and Redis on), noaudit, noredis, bare (both off)")
	fs.IntVar(&o.runs, "runs", 1, "repeat every workload this many times; the table shows medians")
	fs.Float64Var(&o.scale, "scale", 1, "multiply job counts and durations (0.1 for a quick check); figures are comparable only at 1")
	fs.BoolVar(&o.jsonOut, "json", false, "print a JSON document instead of the table")
	fs.StringVar(&o.jsonFile, "json-out", "", "also write the JSON document to this file (keeps the table on stdout)")
	fs.BoolVar(&o.ceiling, "ceiling", false, "also run the pgbench INSERT/UPDATE ceiling (same as adding ceiling to -only)")
	fs.StringVar(&o.pgbench, "pgbench", "", "pgbench binary (default: PATH, then /usr/lib/postgresql/15/bin/pgbench)")
	fs.BoolVar(&o.profile, "profile", false, "sample pg_stat_activity every 10 ms during single, bulk, drain and latency and print where the server's time went (adds load; not for the headline figures)")
	fs.BoolVar(&o.verbose, "v", false, "log progress and worker warnings")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a Go CPU profile of the bench process (client and worker) to this file")
	fs.BoolVar(&o.producer, "producer", false, "internal: run as the latency workload's producer process")
	fs.StringVar(&o.producerURL, "producer-url", "", "internal: database of the producer")
	fs.DurationVar(&o.producerEvery, "producer-every", 5*time.Millisecond, "internal: producer interval")
	fs.DurationVar(&o.producerDuration, "producer-for", 20*time.Second, "internal: producer duration")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.producer {
		return o, nil
	}
	for _, w := range splitList(*only) {
		if !slices.Contains(allWorkloads, w) {
			return o, fmt.Errorf("-only: unknown workload %q (have %s)", w, strings.Join(allWorkloads, ", "))
		}
		o.only = append(o.only, w)
	}
	if o.ceiling && !slices.Contains(o.only, "ceiling") {
		o.only = append(o.only, "ceiling")
	}
	for _, v := range splitList(*variants) {
		vv, ok := knownVariants[v]
		if !ok {
			return o, fmt.Errorf("-variants: unknown configuration %q (have default, noaudit, noredis, bare)", v)
		}
		o.variants = append(o.variants, vv)
	}
	if len(o.only) == 0 || len(o.variants) == 0 {
		return o, errors.New("nothing to run: -only and -variants must name something")
	}
	if o.runs < 1 || o.scale <= 0 || o.scale > 10 {
		return o, errors.New("-runs must be >= 1 and -scale in (0, 10]")
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if o.producer {
		if err := runProducer(ctx, o); err != nil {
			fmt.Fprintln(os.Stderr, "bench producer:", err)
			os.Exit(1)
		}
		return
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: -cpuprofile:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		if ctx.Err() != nil {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	b, err := newBench(ctx, o)
	if err != nil {
		return err
	}
	// Cleanup gets its own context: it must run after Ctrl-C cancelled ctx.
	defer b.cleanup()

	rep := report{Started: time.Now().UTC(), Options: reportOptions(o), Machine: b.machine}
	order := slices.DeleteFunc(slices.Clone(allWorkloads), func(w string) bool { return !slices.Contains(o.only, w) })
	for run := 1; run <= o.runs; run++ {
		for vi, v := range o.variants {
			for _, w := range order {
				// The ceiling does not depend on the engine's configuration.
				if w == "ceiling" && vi > 0 {
					continue
				}
				if err := ctx.Err(); err != nil {
					return fmt.Errorf("interrupted: %w", err)
				}
				name := v.Name
				if w == "ceiling" {
					name = "-"
				}
				b.progress("workload starting", "workload", w, "variant", name, "run", run)
				res, err := b.runWorkload(ctx, w, v)
				if err != nil {
					if ctx.Err() != nil {
						return fmt.Errorf("interrupted during %s: %w", w, ctx.Err())
					}
					return fmt.Errorf("%s (%s, run %d): %w", w, name, run, err)
				}
				res.Run, res.Variant = run, name
				rep.Results = append(rep.Results, res)
				b.progress("workload done", "workload", w, "variant", name, "run", run, "metrics", res.Metrics)
			}
		}
	}
	rep.Finished = time.Now().UTC()
	rep.Medians = medians(rep.Results)
	if o.jsonFile != "" {
		doc, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return fmt.Errorf("encode report: %w", err)
		}
		if err := os.WriteFile(o.jsonFile, append(doc, '\n'), 0o644); err != nil {
			return fmt.Errorf("write -json-out: %w", err)
		}
	}
	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printTable(os.Stdout, rep)
	return nil
}
