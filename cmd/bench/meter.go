package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// meter measures where a workload's time went: wall time, commits in the bench database,
// CPU of this process and of the Postgres backends serving it, and how busy the whole
// machine was (the difference is other people's load: the noise).
type meter struct {
	ctl      *pgx.Conn
	start    time.Time
	commits0 int64
	goCPU0   time.Duration
	pgCPU0   map[int]time.Duration
	machine0 cpuTimes
	pgCPU    time.Duration
	goCPU    time.Duration
	wall     time.Duration
	busy     float64
	sampler  *sampler
}

func (b *bench) startMeter(ctx context.Context, t *target) (*meter, error) {
	m, err := startMeter(ctx, t.ctl)
	if err != nil || !b.opts.profile {
		return m, err
	}
	if m.sampler, err = b.startSampler(ctx, t.name); err != nil {
		return nil, err
	}
	return m, nil
}

func startMeter(ctx context.Context, ctl *pgx.Conn) (*meter, error) {
	m := &meter{ctl: ctl}
	var err error
	if m.commits0, err = commitsSoFar(ctx, ctl); err != nil {
		return nil, err
	}
	if m.pgCPU0, err = backendCPU(ctx, ctl); err != nil {
		return nil, err
	}
	m.goCPU0 = processCPU()
	m.machine0 = readCPUTimes()
	m.start = time.Now()
	return m, nil
}

// stop ends the timed part. Call it before closing the workload's pools, so their
// backends' CPU can still be read.
func (m *meter) stop(ctx context.Context) {
	m.wall = time.Since(m.start)
	m.goCPU = processCPU() - m.goCPU0
	if now, err := backendCPU(ctx, m.ctl); err == nil {
		for pid, t := range now {
			m.pgCPU += t - m.pgCPU0[pid] // a backend born during the workload started at 0
		}
	}
	m.busy = readCPUTimes().busySince(m.machine0)
	if m.sampler != nil {
		m.sampler.stop()
		<-m.sampler.done
	}
}

// record writes the common metrics; jobs is what the workload moved. Call it after the
// pools are closed (their backends publish their commit counts on exit).
func (m *meter) record(ctx context.Context, r *result, jobs int) {
	if m.sampler != nil {
		m.sampler.finish(r)
	}
	time.Sleep(150 * time.Millisecond)
	if c, err := commitsSoFar(ctx, m.ctl); err == nil && jobs > 0 {
		r.set("commits_per_job", float64(c-m.commits0)/float64(jobs))
	}
	if jobs > 0 {
		r.set("pg_cpu_us_per_job", float64(m.pgCPU.Microseconds())/float64(jobs))
		r.set("go_cpu_us_per_job", float64(m.goCPU.Microseconds())/float64(jobs))
	}
	r.set("machine_busy_pct", m.busy*100)
	// What the machine did besides this bench: the noise of the figure.
	ours := (m.pgCPU + m.goCPU).Seconds() / (m.wall.Seconds() * float64(cpuCount()))
	r.set("others_busy_pct", max(0, m.busy-ours)*100)
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTick is USER_HZ, 100 on every Linux this runs on.
const clockTick = 10 * time.Millisecond

func backendCPU(ctx context.Context, ctl *pgx.Conn) (map[int]time.Duration, error) {
	pids, err := backendPIDs(ctx, ctl)
	if err != nil {
		return nil, err
	}
	out := make(map[int]time.Duration, len(pids))
	for _, pid := range pids {
		if t, ok := pidCPU(pid); ok {
			out[pid] = t
		}
	}
	return out, nil
}

// pidCPU reads utime+stime of a process from /proc/PID/stat.
func pidCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name may hold spaces; fields are counted after its closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(ut+st) * clockTick, true
}

type cpuTimes struct{ busy, total uint64 }

// readCPUTimes reads the machine-wide counters of /proc/stat.
func readCPUTimes() cpuTimes {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return cpuTimes{}
	}
	fields := strings.Fields(sc.Text())
	var t cpuTimes
	for i, v := range fields[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i >= 8 { // guest time is counted in user already
			break
		}
		t.total += n
		if i != 3 && i != 4 { // idle, iowait
			t.busy += n
		}
	}
	return t
}

func (t cpuTimes) busySince(then cpuTimes) float64 {
	if t.total <= then.total {
		return 0
	}
	return float64(t.busy-then.busy) / float64(t.total-then.total)
}

func cpuCount() int {
	n := 0
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "cpu") && len(l) > 3 && l[3] >= '0' && l[3] <= '9' {
			n++
		}
	}
	return max(n, 1)
}

func memTotalMB() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			var kb int64
			_, _ = fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb / 1024
		}
	}
	return 0
}
