package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/pgqueue/queue/internal/queue"
)

// Limits of `wait`.
const (
	defaultWaitTimeout = 30 * time.Second
	maxWaitTimeout     = 60 * time.Second
)

// sseWriteTimeout is how long one SSE write may block: a client that stops reading is
// disconnected rather than holding the stream.
const sseWriteTimeout = 10 * time.Second

// streamLimiter counts open wait and event streams of this process (MAX_STREAMS), in
// all and per client: one client (an API key, else an address) may hold at most half of
// them, so it cannot take every slot.
type streamLimiter struct {
	max       int64
	mu        sync.Mutex
	open      int64
	perClient map[string]int64
}

func newStreamLimiter(max int) *streamLimiter {
	return &streamLimiter{max: int64(max), perClient: map[string]int64{}}
}

// perClientMax is a client's share of the streams.
func (l *streamLimiter) perClientMax() int64 { return max(l.max/2, 1) }

// acquire takes a stream for client; release gives it back (once).
func (l *streamLimiter) acquire(client string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open >= l.max {
		return nil, errUnavailable("too many open wait and event streams on this API process; retry later")
	}
	if l.perClient[client] >= l.perClientMax() {
		return nil, errUnavailable("this client holds half of the API process's wait and event streams (MAX_STREAMS); close some or retry later")
	}
	l.open++
	l.perClient[client]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.open--
			if l.perClient[client]--; l.perClient[client] == 0 {
				delete(l.perClient, client)
			}
		})
	}, nil
}

// inUse is the number of open streams.
func (l *streamLimiter) inUse() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// extendDeadlines lifts the server's write timeout for a long stream (zero: no deadline),
// which would otherwise cut the answer of a wait longer than WriteTimeout.
func extendDeadlines(c *gin.Context, until time.Time) {
	_ = http.NewResponseController(c.Writer).SetWriteDeadline(until)
}

// parseWaitTimeout reads `timeout`: a Go duration ("30s") or integer milliseconds.
func parseWaitTimeout(raw string) (time.Duration, error) {
	if raw == "" {
		return defaultWaitTimeout, nil
	}
	bad := validation(Detail{Field: "timeout", Message: "must be a Go duration (30s) or integer milliseconds, between 0 and 60s"})
	var d time.Duration
	if ms, err := strconv.ParseInt(raw, 10, 64); err == nil {
		if ms < 0 || ms > maxWaitTimeout.Milliseconds() {
			return 0, bad
		}
		d = time.Duration(ms) * time.Millisecond
	} else if d, err = time.ParseDuration(raw); err != nil {
		return 0, bad
	}
	if d < 0 || d > maxWaitTimeout {
		return 0, bad
	}
	return d, nil
}

// wait serves GET /api/queue/jobs/:id/wait. It subscribes to the job's events first and
// reads the job second, so a completion right after the request arrives cannot slip
// between the two; then it reads the job again on each of its events. Postgres is the
// truth: an event only says "look again". Without a live event source (no Redis, or
// Redis down) it reads the job every WaitPoll instead.
func (s *Server) wait(c *gin.Context) error {
	timeout, err := parseWaitTimeout(c.Query("timeout"))
	if err != nil {
		return err
	}
	release, err := s.streams.acquire(clientKey(c))
	if err != nil {
		return err
	}
	defer release()

	ctx, id := c.Request.Context(), c.Param("id")
	var events <-chan []Event
	if s.deps.Events != nil {
		var unsubscribe func()
		events, unsubscribe = s.deps.Events.Subscribe(EventFilter{ID: id})
		defer unsubscribe()
	}
	job, err := s.lookup(ctx, c, id)
	if err != nil {
		return err
	}
	if queue.Finished(job.State) {
		c.JSON(http.StatusOK, job)
		return nil
	}
	extendDeadlines(c, time.Now().Add(timeout+10*time.Second))

	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTimer(s.pollInterval(events))
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stop:
			c.JSON(http.StatusOK, job)
			return nil
		case <-deadline.C:
			c.JSON(http.StatusOK, job)
			return nil
		case _, open := <-events:
			if !open {
				events = nil // dropped by the source: poll from now on
			}
		case <-poll.C:
		}
		poll.Reset(s.pollInterval(events))
		latest, err := s.deps.Client.Get(ctx, id)
		if errors.Is(err, queue.ErrNotFound) {
			// Retention may remove a job as it finishes.
			final, err := s.removedWhileWaiting(ctx, c, job)
			if err != nil {
				return err
			}
			c.JSON(http.StatusOK, final)
			return nil
		}
		if err != nil {
			return err
		}
		job = latest
		if queue.Finished(job.State) {
			c.JSON(http.StatusOK, job)
			return nil
		}
	}
}

// pollInterval is how often `wait` reads the job: rarely while a live subscription
// will wake it, often otherwise.
func (s *Server) pollInterval(events <-chan []Event) time.Duration {
	if events != nil && s.deps.Events.Live() {
		return max(WaitSafetyPoll, s.deps.WaitPoll)
	}
	return s.deps.WaitPoll
}

// removedWhileWaiting rebuilds the end of a job that disappeared during a wait: from the
// result cache when there is one, else from the audit trail (which outlives the job; the
// result itself is then unknown). A job removed before it finished is not found.
func (s *Server) removedWhileWaiting(ctx context.Context, c *gin.Context, last queue.Job) (queue.Job, error) {
	// Postgres just said the row is gone: only the cache can still have it.
	if cached, err := s.cached(ctx, c, last.ID); err == nil {
		return cached, nil
	}
	ev, err := s.deps.Client.LastEvent(ctx, last.ID)
	if err != nil {
		return queue.Job{}, err
	}
	if !queue.Finished(ev.State) {
		return queue.Job{}, queue.ErrNotFound
	}
	job := last
	job.State = ev.State
	job.AttemptsMade = max(job.AttemptsMade, ev.Attempt)
	job.FinishedAt = &queue.Timestamp{Time: ev.At}
	switch ev.State {
	case queue.StateCompleted:
		job.Progress = 100
	case queue.StateFailed:
		job.Error = ev.Message
		if ev.Message != nil {
			job.Errors = append(job.Errors, queue.AttemptError{
				Attempt: ev.Attempt, Message: *ev.Message, At: ev.At.UTC().Format(queue.TimeFormat),
			})
		}
	}
	return job, nil
}

// eventData is the JSON of one SSE message.
func eventData(e *Event) ([]byte, error) {
	at := e.At
	if e.Event == EventProgress {
		progress := 0
		if e.Progress != nil {
			progress = *e.Progress
		}
		return json.Marshal(struct {
			ID       string          `json:"id"`
			Progress int             `json:"progress"`
			At       queue.Timestamp `json:"at"`
		}{e.ID, progress, at})
	}
	return json.Marshal(struct {
		ID    string          `json:"id"`
		Type  string          `json:"type"`
		Queue string          `json:"queue,omitempty"`
		State string          `json:"state"`
		At    queue.Timestamp `json:"at"`
	}{e.ID, e.Type, e.Queue, e.State, at})
}

// events serves GET /api/queue/events as Server-Sent Events from the EventSource.
func (s *Server) events(c *gin.Context) error {
	if s.deps.Events == nil {
		return errUnavailable("the event stream is not available on this API process (it needs Redis)")
	}
	release, err := s.streams.acquire(clientKey(c))
	if err != nil {
		return err
	}
	defer release()
	ch, unsubscribe := s.deps.Events.Subscribe(EventFilter{ID: c.Query("id"), Type: c.Query("type"), Queue: c.Query("queue")})
	defer unsubscribe()
	ctx := c.Request.Context()

	extendDeadlines(c, time.Time{}) // each write below sets its own
	rc := http.NewResponseController(c.Writer)
	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // proxies must not buffer the stream
	c.Status(http.StatusOK)
	// Each write gets its own deadline: a client that stops reading is disconnected.
	write := func(msg string) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
		if _, err := c.Writer.WriteString(msg); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write(": connected\n\n") {
		return nil
	}
	heartbeat := time.NewTicker(s.deps.Heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stop:
			return nil
		case <-heartbeat.C:
			if !write(": heartbeat\n\n") {
				return nil
			}
		case batch, ok := <-ch:
			if !ok {
				return nil // the source dropped this subscriber (too slow) or stopped
			}
			for i := range batch {
				e := &batch[i]
				if e.Event != EventJob && e.Event != EventProgress {
					continue
				}
				data, err := eventData(e)
				if err != nil {
					continue
				}
				if !write(fmt.Sprintf("event: %s\ndata: %s\n\n", e.Event, data)) {
					return nil
				}
			}
		}
	}
}
