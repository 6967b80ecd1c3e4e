package main

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The pgbench scripts are embedded so that a built bench binary runs anywhere; make
// bench-ceiling and docs/BENCHMARKS.md point at the same files.
//
//go:embed pgbench/*.sql
var pgbenchFS embed.FS

const ceilingClients = 8

// ceiling: pgbench on the bench's own database, 8 clients, 20 s each: one single-row
// INSERT per transaction, then one single-row UPDATE per transaction. This is the
// machine's one-write-per-commit ceiling that single is compared with.
func (b *bench) ceiling(ctx context.Context, t *target) (result, error) {
	var res result
	bin, err := b.pgbenchPath()
	if err != nil {
		return res, err
	}
	setup, _ := pgbenchFS.ReadFile("pgbench/setup.sql")
	if _, err := t.ctl.Exec(ctx, string(setup)); err != nil {
		return res, fmt.Errorf("ceiling tables: %w", err)
	}
	dir, err := os.MkdirTemp("", "queue-bench-pgbench")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	duration := b.scaledDuration(20*time.Second, 2*time.Second)
	for _, script := range []string{"insert", "update"} {
		body, _ := pgbenchFS.ReadFile("pgbench/" + script + ".sql")
		file := filepath.Join(dir, script+".sql")
		if err := os.WriteFile(file, body, 0o600); err != nil {
			return res, err
		}
		tps, lat, err := b.runPgbench(ctx, bin, t.name, file, duration)
		if err != nil {
			return res, fmt.Errorf("pgbench %s: %w", script, err)
		}
		res.set(script+"_tps", tps)
		res.set(script+"_latency_ms", lat)
	}
	return res, nil
}

func (b *bench) pgbenchPath() (string, error) {
	if b.opts.pgbench != "" {
		return b.opts.pgbench, nil
	}
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p, nil
	}
	const debian = "/usr/lib/postgresql/15/bin/pgbench"
	if _, err := os.Stat(debian); err == nil {
		return debian, nil
	}
	return "", fmt.Errorf("pgbench not found: install the Postgres client tools or pass -pgbench")
}

var (
	tpsLine     = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	latencyLine = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
)

// runPgbench runs one script with the connection of DATABASE_URL, prepared statements as
// the engine uses them, and returns tps and mean latency.
func (b *bench) runPgbench(ctx context.Context, bin, database, file string, d time.Duration) (float64, float64, error) {
	cc := b.connConfig(database)
	args := []string{"-n", "-M", "prepared", "-c", strconv.Itoa(ceilingClients), "-j", "2",
		"-T", strconv.Itoa(int(d.Seconds())), "-f", file,
		"-h", cc.Host, "-p", strconv.Itoa(int(cc.Port)), "-U", cc.User, database}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+cc.Password)
	if cc.TLSConfig == nil {
		cmd.Env = append(cmd.Env, "PGSSLMODE=disable")
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	b.progress("running", "cmd", bin+" "+strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		return 0, 0, fmt.Errorf("%w: %s", err, out.String())
	}
	m := tpsLine.FindStringSubmatch(out.String())
	if m == nil {
		return 0, 0, fmt.Errorf("no tps in pgbench output: %s", out.String())
	}
	tps, _ := strconv.ParseFloat(m[1], 64)
	var lat float64
	if l := latencyLine.FindStringSubmatch(out.String()); l != nil {
		lat, _ = strconv.ParseFloat(l[1], 64)
	}
	return tps, lat, nil
}
