package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// result is one run of one workload in one configuration.
type result struct {
	Workload string             `json:"workload"`
	Variant  string             `json:"variant"`
	Run      int                `json:"run"`
	Metrics  map[string]float64 `json:"metrics"`
	Notes    []string           `json:"notes,omitempty"`
}

func (r *result) set(name string, v float64) {
	if r.Metrics == nil {
		r.Metrics = map[string]float64{}
	}
	r.Metrics[name] = v
}

func (r *result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// summary is the median of a metric over runs, with its spread.
type summary struct {
	Workload string  `json:"workload"`
	Variant  string  `json:"variant"`
	Metric   string  `json:"metric"`
	Median   float64 `json:"median"`
	Min      float64 `json:"min"`
	Max      float64 `json:"max"`
	Runs     int     `json:"runs"`
}

type report struct {
	Started  time.Time      `json:"started"`
	Finished time.Time      `json:"finished"`
	Options  map[string]any `json:"options"`
	Machine  machineInfo    `json:"machine"`
	Medians  []summary      `json:"medians"`
	Results  []result       `json:"results"`
}

func reportOptions(o options) map[string]any {
	names := make([]string, len(o.variants))
	for i, v := range o.variants {
		names[i] = v.Name
	}
	return map[string]any{"workloads": o.only, "variants": names, "runs": o.runs, "scale": o.scale}
}

// medians summarises every (workload, variant, metric) over its runs, and adds the
// ratio of single to the INSERT ceiling measured in the same run.
func medians(results []result) []summary {
	type key struct{ w, v, m string }
	values := map[key][]float64{}
	var order []key
	add := func(k key, x float64) {
		if _, ok := values[k]; !ok {
			order = append(order, k)
		}
		values[k] = append(values[k], x)
	}
	ceilingByRun := map[int]float64{}
	for _, r := range results {
		if r.Workload == "ceiling" {
			ceilingByRun[r.Run] = r.Metrics["insert_tps"]
		}
	}
	for _, r := range results {
		for _, m := range slices.Sorted(maps.Keys(r.Metrics)) {
			add(key{r.Workload, r.Variant, m}, r.Metrics[m])
		}
		if c := ceilingByRun[r.Run]; r.Workload == "single" && c > 0 {
			add(key{r.Workload, r.Variant, "pct_of_insert_ceiling"}, 100*r.Metrics["jobs_per_s"]/c)
		}
	}
	out := make([]summary, 0, len(order))
	for _, k := range order {
		xs := values[k]
		out = append(out, summary{Workload: k.w, Variant: k.v, Metric: k.m, Median: median(xs),
			Min: slices.Min(xs), Max: slices.Max(xs), Runs: len(xs)})
	}
	return out
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// percentile of sorted values, nearest rank.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// headline metrics come first in the table, the rest (costs, noise) after them.
var headline = []string{"jobs_per_s", "pct_of_insert_ceiling", "insert_tps", "update_tps",
	"p50_ms", "p95_ms", "p99_ms", "max_ms"}

func metricRank(m string) int {
	if i := slices.Index(headline, m); i >= 0 {
		return i
	}
	if strings.HasSuffix(m, "busy_pct") {
		return 1000
	}
	return 100
}

func printTable(w io.Writer, rep report) {
	fmt.Fprintf(w, "queue bench  %s  scale=%v runs=%v  %d CPUs, %d MB, Postgres %s, Redis %s, %s\n",
		rep.Started.Format(time.RFC3339), rep.Options["scale"], rep.Options["runs"], rep.Machine.CPUs,
		rep.Machine.MemoryMB, rep.Machine.Postgres, orDash(rep.Machine.Redis), rep.Machine.GoVersion)
	var settings []string
	for _, k := range slices.Sorted(maps.Keys(rep.Machine.PGSettings)) {
		settings = append(settings, k+"="+rep.Machine.PGSettings[k])
	}
	fmt.Fprintf(w, "postgres: %s\n", strings.Join(settings, " "))
	if rep.Machine.PGSettings["autovacuum"] == "off" {
		// Dead tuples then pile up during a workload, and claims and retention walk them.
		fmt.Fprintln(w, "WARNING: autovacuum is off on this server; figures are not those of stock settings")
	}
	fmt.Fprintf(w, "load average at start: %s; medians over runs, [min..max] in brackets\n\n", rep.Machine.LoadAvgStart)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tvariant\tmetric\tmedian\tmin..max\truns\t")
	sums := slices.Clone(rep.Medians)
	wRank := func(s string) int { return slices.Index(allWorkloads, s) }
	slices.SortStableFunc(sums, func(a, b summary) int {
		if d := wRank(a.Workload) - wRank(b.Workload); d != 0 {
			return d
		}
		if d := metricGroup(a.Metric) - metricGroup(b.Metric); d != 0 {
			return d
		}
		if d := metricRank(a.Metric) - metricRank(b.Metric); d != 0 {
			return d
		}
		if d := strings.Compare(a.Metric, b.Metric); d != 0 {
			return d
		}
		return strings.Compare(a.Variant, b.Variant)
	})
	last := ""
	for _, s := range sums {
		if s.Workload != last && last != "" {
			fmt.Fprintln(tw, "\t\t\t\t\t\t")
		}
		last = s.Workload
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t[%s..%s]\t%d\t\n", s.Workload, s.Variant, s.Metric,
			format(s.Median), format(s.Min), format(s.Max), s.Runs)
	}
	_ = tw.Flush()
	var notes []string
	for _, r := range rep.Results {
		for _, n := range r.Notes {
			notes = append(notes, fmt.Sprintf("%s/%s run %d: %s", r.Workload, r.Variant, r.Run, n))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range notes {
			fmt.Fprintln(w, "  "+n)
		}
	}
}

// metricGroup keeps the depth levels together (d1k_..., d100k_..., d1m_...), and the
// group counts of fair_claim (g1_..., g10_..., g1000_...), in order of size.
func metricGroup(m string) int {
	if lvl, _, ok := strings.Cut(m, "_"); ok && len(lvl) > 1 && (lvl[0] == 'd' || lvl[0] == 'g') && lvl[1] >= '0' && lvl[1] <= '9' {
		n, unit := 0, ""
		_, _ = fmt.Sscanf(lvl[1:], "%d%s", &n, &unit)
		switch unit {
		case "k":
			n *= 1_000
		case "m":
			n *= 1_000_000
		}
		return n
	}
	return 0
}

func format(x float64) string {
	switch {
	case x == 0:
		return "0"
	case x >= 1000 || x <= -1000:
		return fmt.Sprintf("%.0f", x)
	case x >= 100 || x <= -100:
		return fmt.Sprintf("%.1f", x)
	case x >= 1 || x <= -1:
		return fmt.Sprintf("%.2f", x)
	default:
		return fmt.Sprintf("%.3f", x)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
