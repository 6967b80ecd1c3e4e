package faults

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/mail"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/testutil"
)

// delivery is one message the SMTP sink received: which job sent it and when the
// conversation began and ended.
type delivery struct {
	jobID      string
	start, end time.Time
}

// slowSMTP is an SMTP server that takes its time over each message (delay says how
// long, per job and per delivery of that job) and records every delivery.
type slowSMTP struct {
	port     int
	delay    func(jobID string, nth int) time.Duration
	mu       sync.Mutex
	done     []delivery
	inflight int
	perJob   map[string]int
}

type smtpSession struct {
	sink  *slowSMTP
	start time.Time
}

func (s *smtpSession) Reset()        {}
func (s *smtpSession) Logout() error { return nil }
func (s *smtpSession) Mail(string, *smtp.MailOptions) error {
	s.start = time.Now()
	s.sink.mu.Lock()
	s.sink.inflight++
	s.sink.mu.Unlock()
	return nil
}
func (s *smtpSession) Rcpt(string, *smtp.RcptOptions) error { return nil }

// Data reads the message, names its job from the Message-ID (the job id, then a dot),
// holds the conversation for the job's delay, and records the delivery.
func (s *smtpSession) Data(r io.Reader) error {
	defer func() {
		s.sink.mu.Lock()
		s.sink.inflight--
		s.sink.mu.Unlock()
	}()
	msg, err := mail.ReadMessage(r)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, msg.Body)
	jobID, _, _ := strings.Cut(strings.Trim(msg.Header.Get("Message-Id"), "<>"), ".")
	s.sink.mu.Lock()
	nth := s.sink.perJob[jobID]
	s.sink.perJob[jobID]++
	s.sink.mu.Unlock()
	time.Sleep(s.sink.delay(jobID, nth))
	s.sink.mu.Lock()
	s.sink.done = append(s.sink.done, delivery{jobID: jobID, start: s.start, end: time.Now()})
	s.sink.mu.Unlock()
	return nil
}

func startSlowSMTP(t *testing.T, delay func(jobID string, nth int) time.Duration) *slowSMTP {
	t.Helper()
	sink := &slowSMTP{delay: delay, perJob: map[string]int{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &smtpSession{sink: sink}, nil
	}))
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = time.Minute, time.Minute
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	sink.port = l.Addr().(*net.TCPAddr).Port
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return sink
}

func (s *slowSMTP) env() []string {
	return []string{"SMTP_HOST=127.0.0.1", "SMTP_PORT=" + strconv.Itoa(s.port), "SMTP_TLS=none"}
}

func (s *slowSMTP) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight > 0
}

func (s *slowSMTP) deliveries() []delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.done)
}

func emailJob(id string) map[string]any {
	return map[string]any{
		"type": "EMAIL_SEND", "data": map[string]any{"to": "user@example.com", "subject": "Hi " + id, "template": "test"},
		"options": map[string]any{"jobId": id, "attempts": 10, "backoff": map[string]any{"type": "fixed", "delay": 100}},
	}
}

// period is one claim of a job in the audit trail: from its active row to the row that
// ended it (the outcome, a rescue, a hand-back).
type period struct {
	worker     string
	attempt    int
	start, end time.Time
}

// periods reads each job's claims from the audit trail.
func (s *system) periods(ids []string) map[string][]period {
	s.t.Helper()
	out := map[string][]period{}
	conn := s.connect()
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), `
		SELECT job_id, state, at, attempt, coalesce(worker, '') FROM queue.job_events
		WHERE job_id = ANY($1) ORDER BY job_id, id`, ids)
	require.NoError(s.t, err)
	defer rows.Close()
	open := map[string]*period{}
	for rows.Next() {
		var id, state, worker string
		var at time.Time
		var attempt int
		require.NoError(s.t, rows.Scan(&id, &state, &at, &attempt, &worker))
		if p := open[id]; p != nil {
			p.end = at
			out[id] = append(out[id], *p)
			open[id] = nil
		}
		if state == "active" {
			open[id] = &period{worker: worker, attempt: attempt, start: at}
		}
	}
	require.NoError(s.t, rows.Err())
	for id, p := range open {
		if p != nil {
			out[id] = append(out[id], *p)
		}
	}
	return out
}

// Postgres crashes (immediate stop) while handlers send e-mails. The WAL writer is slowed
// so that a commit that did not flush its WAL is lost: a claim that committed
// asynchronously would vanish while its handler runs, the same worker could claim the
// job again at the same attempt, and the first run's outcome would land on the second
// claim. None of that may happen: every delivery lies within a claim of its job that
// the audit trail shows, and no two deliveries of one job overlap (the leases held
// throughout: the crashes are shorter than QUEUE_LEASE).
func TestPostgresCrashesDuringRuns(t *testing.T) {
	t.Parallel()
	crashes := 5
	if os.Getenv("FAULTS_FULL") == "1" {
		crashes = 20
	} else {
		scale(t) // skip under -short
	}
	pg := testutil.StartPostgresWith(t, "wal_writer_delay=10s")
	sink := startSlowSMTP(t, func(string, int) time.Duration { return 300 * time.Millisecond })
	s := newSystem(t, pg.URL("queue"), testutil.RedisURL(t), append(sink.env(), "QUEUE_LEASE=8s", "QUEUE_CONCURRENCY=4")...)
	s.startAPI()
	s.startWorkers(2)

	total := crashes * 30
	var jobs []map[string]any
	for i := range total {
		jobs = append(jobs, emailJob(fmt.Sprintf("crash-%d", i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i := 0; i < total; i += 100 {
		s.submit(ctx, jobs[i:min(i+100, total)])
	}
	for range crashes {
		require.Eventually(t, sink.busy, time.Minute, time.Millisecond, "a handler is sending")
		time.Sleep(100 * time.Millisecond) // claims and sends under way, some not yet flushed
		pg.Crash()
		pg.Start()
		time.Sleep(500 * time.Millisecond)
	}
	s.waitAllFinished(total, 3*time.Minute)
	require.Equal(t, total, s.count("SELECT count(*) FROM queue.jobs WHERE state = 'completed'"), "every e-mail job completes")

	ids := make([]string, total)
	for i := range ids {
		ids[i] = fmt.Sprintf("crash-%d", i)
	}
	claims := s.periods(ids)
	byJob := map[string][]delivery{}
	for _, d := range sink.deliveries() {
		byJob[d.jobID] = append(byJob[d.jobID], d)
	}
	const slack = 5 * time.Millisecond // the database's and the test's clocks, same host
	extra := 0
	for _, id := range ids {
		ds := byJob[id]
		require.NotEmpty(t, ds, "job %s sent its e-mail", id)
		extra += len(ds) - 1
		slices.SortFunc(ds, func(a, b delivery) int { return a.start.Compare(b.start) })
		for i, d := range ds {
			if i > 0 {
				require.False(t, d.start.Before(ds[i-1].end), "job %s: two sends at once: %+v and %+v", id, ds[i-1], d)
			}
			inClaim := slices.ContainsFunc(claims[id], func(p period) bool {
				return !d.start.Before(p.start.Add(-slack)) && !p.end.IsZero() && !d.end.After(p.end.Add(slack))
			})
			require.True(t, inClaim, "job %s: the send %v..%v lies within no claim of the audit trail %+v (an outcome landed on another claim, or a claim was lost)",
				id, d.start.Format(time.StampMicro), d.end.Format(time.StampMicro), claims[id])
		}
	}
	expired := s.count("SELECT count(*) FROM queue.job_events WHERE message LIKE 'lease expired%'")
	require.Zero(t, expired, "no lease expired: every second send is a retry after a failed attempt")
	twice := s.ranTwiceExplained()
	report(t, "postgres crashes: jobs=%d crashes=%d lost=0 sends_outside_their_claim=0 overlapping_sends=0 extra_sends=%d ran_twice=%d",
		total, crashes, extra, twice)
}

// A frozen leader (SIGSTOP: its connections stay open) is replaced: another worker
// promotes a due delayed job and rescues the frozen worker's expired lease within
// QUEUE_LEASE + 2 s. Woken up (SIGCONT), the old leader neither revives its lease nor
// changes anything as leader.
func TestFrozenLeaderIsReplaced(t *testing.T) {
	t.Parallel()
	scale(t) // skip under -short
	const lease = 2 * time.Second
	sink := startSlowSMTP(t, func(jobID string, nth int) time.Duration {
		if jobID == "frozen-send" && nth == 0 {
			return 6 * time.Second // the frozen worker's send outlives the freeze
		}
		return 0
	})
	s := newSystem(t, testutil.NewMigratedDatabase(t), testutil.RedisURL(t),
		append(sink.env(), "QUEUE_LEASE="+lease.String(), "QUEUE_POLL_INTERVAL=100ms")...)
	s.startAPI()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	s.startWorkers(1)
	frozen := s.workers[0]
	frozenID := s.workerID(frozen)
	require.Eventually(t, func() bool { return s.leader() == frozenID }, 30*time.Second, 20*time.Millisecond, "the only worker leads")
	s.submit(ctx, []map[string]any{emailJob("frozen-send")})
	require.Eventually(t, sink.busy, 30*time.Second, time.Millisecond, "the first worker is sending")
	s.startWorkers(1)
	healthyID := s.workerID(s.workers[1])

	s.submit(ctx, []map[string]any{{"type": "CLEANUP", "data": map[string]any{"targetType": "temp_files", "olderThan": 0},
		"options": map[string]any{"jobId": "due-while-frozen", "delay": 500}}})
	frozeAt := s.dbNow()
	require.NoError(t, frozen.cmd.Process.Signal(syscall.SIGSTOP))
	t.Cleanup(func() { _ = frozen.cmd.Process.Signal(syscall.SIGCONT) })

	s.waitJobState("due-while-frozen", "completed", 30*time.Second)
	s.waitJobState("frozen-send", "completed", 30*time.Second)
	var promotedAt, rescuedAt time.Time
	var promoter, rescuer string
	s.scan(`SELECT at, worker FROM queue.job_events WHERE job_id = 'due-while-frozen' AND state = 'waiting' AND worker IS NOT NULL`, &promotedAt, &promoter)
	s.scan(`SELECT at, worker FROM queue.job_events WHERE job_id = 'frozen-send' AND message LIKE 'lease expired%'`, &rescuedAt, &rescuer)
	require.Equal(t, healthyID, promoter, "the healthy worker promoted the due job")
	require.Equal(t, healthyID, rescuer, "and rescued the frozen worker's job")
	require.Less(t, promotedAt.Sub(frozeAt), lease+2*time.Second)
	require.Less(t, rescuedAt.Sub(frozeAt), lease+2*time.Second)
	require.Equal(t, healthyID, s.leader())

	require.NoError(t, frozen.cmd.Process.Signal(syscall.SIGCONT))
	// The old leader's send ends (6 s after it began) and it reports its outcome; it
	// renews nothing and runs no maintenance.
	require.Eventually(t, func() bool { return len(sink.deliveries()) >= 2 }, 30*time.Second, 20*time.Millisecond)
	s.submit(ctx, []map[string]any{{"type": "CLEANUP", "data": map[string]any{"targetType": "temp_files", "olderThan": 0},
		"options": map[string]any{"jobId": "due-after-wake", "delay": 300}}})
	s.waitJobState("due-after-wake", "completed", 30*time.Second)
	time.Sleep(4 * lease / 3) // a heartbeat and several maintenance passes of the old leader
	require.Equal(t, healthyID, s.leader(), "the old leader did not take the lease back")
	require.Zero(t, s.count(`SELECT count(*) FROM queue.job_events WHERE worker = $1 AND at > $2 AND state <> 'active'
		AND NOT (job_id = 'due-after-wake' AND state = 'completed')`, frozenID, frozeAt),
		"the old leader changed nothing after the freeze: no promotion, no rescue, no outcome on the job it lost")
	require.Equal(t, 1, s.count(`SELECT count(*) FROM queue.job_events WHERE job_id = 'due-after-wake' AND state = 'waiting' AND worker IS NOT NULL`),
		"promoted once")
	require.Equal(t, 1, s.count(`SELECT count(*) FROM queue.job_events WHERE job_id = 'frozen-send' AND state = 'completed'`))
	var completer string
	s.scan(`SELECT worker, worker FROM queue.job_events WHERE job_id = 'frozen-send' AND state = 'completed'`, &completer, &completer)
	require.Equal(t, healthyID, completer, "the outcome is the rescued run's")
	require.NoError(t, frozen.stop(), "the woken worker is healthy and stops gracefully")
	report(t, "frozen leader: lease=%s promoted_after=%s rescued_after=%s old_leader_changes_after_wake=0",
		lease, promotedAt.Sub(frozeAt).Round(time.Millisecond), rescuedAt.Sub(frozeAt).Round(time.Millisecond))
}
