package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgqueue/queue/internal/queue"
)

// readyTimeout bounds each dependency check of /api/ready.
const readyTimeout = 2 * time.Second

// maxCleanAgeMs keeps olderThan within what a time.Duration holds (about 292 years).
const maxCleanAgeMs = 100 * 365 * 24 * 3600 * 1000

func (s *Server) health(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// ready reports Postgres and Redis; only Postgres decides the status code.
func (s *Server) ready(c *gin.Context) {
	check := func(f func(context.Context) error) string {
		if f == nil {
			return "down"
		}
		ctx, cancel := context.WithTimeout(c.Request.Context(), readyTimeout)
		defer cancel()
		if err := f(ctx); err != nil {
			logger(c).Warn("readiness check failed", "err", err)
			return "down"
		}
		return "up"
	}
	pg := check(s.deps.Pool.Ping)
	rd := check(s.deps.RedisPing)
	status := http.StatusOK
	if pg != "up" {
		status = http.StatusServiceUnavailable
	}
	c.JSON(status, gin.H{"postgres": pg, "redis": rd})
}

func (s *Server) submit(c *gin.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	job, err := s.val.parseSubmission(body)
	if err != nil {
		return err
	}
	res, err := s.deps.Client.Enqueue(c.Request.Context(), s.deps.Pool, job)
	if err != nil {
		return unstorable(err, "data")
	}
	if !res.Created {
		c.JSON(http.StatusOK, res.Job)
		return nil
	}
	s.enqueued(c, res.Job)
	c.JSON(http.StatusCreated, res.Job)
	return nil
}

func (s *Server) submitBulk(c *gin.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	jobList, err := s.val.parseBulk(body)
	if err != nil {
		return err
	}
	res, err := s.deps.Client.EnqueueMany(c.Request.Context(), s.deps.Pool, jobList)
	if err != nil {
		return unstorable(err, "jobs")
	}
	out := make([]queue.Job, len(res))
	var created []queue.Job
	for i, r := range res {
		out[i] = r.Job
		if r.Created {
			created = append(created, r.Job)
		}
	}
	s.enqueued(c, created...)
	c.JSON(http.StatusCreated, gin.H{"jobs": out})
	return nil
}

// unstorable turns a Postgres data exception on insert (class 22: a value jsonb cannot
// hold that checkJSON did not catch, such as a number beyond numeric's range) into a
// client error naming field; other errors pass through.
func unstorable(err error, field string) error {
	var pg *pgconn.PgError
	if errors.As(err, &pg) && strings.HasPrefix(pg.Code, "22") {
		return validation(Detail{Field: field, Message: "holds a value that cannot be stored"})
	}
	return err
}

// enqueued counts and announces new jobs.
func (s *Server) enqueued(c *gin.Context, jobList ...queue.Job) {
	for _, j := range jobList {
		s.metrics.jobsSubmitted.WithLabelValues(j.Type).Inc()
	}
	s.publish(c, jobList...)
}

// publish announces the state each job is in now, when a publisher is configured.
func (s *Server) publish(c *gin.Context, jobList ...queue.Job) {
	if s.deps.Publisher == nil || len(jobList) == 0 {
		return
	}
	s.deps.Publisher.Publish(c.Request.Context(), jobList)
}

func (s *Server) get(c *gin.Context) error {
	job, err := s.lookup(c.Request.Context(), c, c.Param("id"))
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, job)
	return nil
}

// lookup reads a job from Postgres, falling back to the result cache for a job that
// retention removed.
func (s *Server) lookup(ctx context.Context, c *gin.Context, id string) (queue.Job, error) {
	job, err := s.deps.Client.Get(ctx, id)
	if !errors.Is(err, queue.ErrNotFound) {
		return job, err
	}
	return s.cached(ctx, c, id)
}

// cached answers a job that Postgres no longer has from the result cache; ErrNotFound
// when there is none.
func (s *Server) cached(ctx context.Context, c *gin.Context, id string) (queue.Job, error) {
	if s.deps.Results == nil {
		return queue.Job{}, queue.ErrNotFound
	}
	job, found, err := s.deps.Results.Job(ctx, id)
	if err != nil {
		logger(c).Warn("result cache read failed; answering from Postgres", "err", err, "job_id", id)
		return queue.Job{}, queue.ErrNotFound
	}
	if !found {
		return queue.Job{}, queue.ErrNotFound
	}
	return job, nil
}

func (s *Server) list(c *gin.Context) error {
	v := &queue.ValidationError{}
	f := queue.ListFilter{State: c.Query("state"), Type: c.Query("type"), Queue: c.Query("queue"), Group: c.Query("group"),
		Cursor: c.Query("cursor")}
	if f.State != "" && !slices.Contains(queue.States, f.State) {
		v.Add("state", "must be one of waiting, active, completed, failed, delayed, cancelled")
	}
	if f.Queue != "" && !queue.ValidQueueName(f.Queue) {
		v.Add("queue", queue.QueueNameRule)
	}
	if f.Group != "" && !queue.ValidGroup(f.Group) {
		v.Add("group", queue.GroupRule)
	}
	if raw, ok := c.GetQuery("limit"); ok {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > queue.MaxListLimit {
			v.Add("limit", "must be an integer between 1 and %d", queue.MaxListLimit)
		}
		f.Limit = n
	}
	if err := v.Err(); err != nil {
		return err
	}
	return s.streamPage(c, f)
}

// streamPage writes a page of jobs as they come from Postgres, one encoded job at a
// time, so that the page's size, not the jobs', bounds the memory a request takes. The
// page stops at MaxPageBytes of JSON (its nextCursor goes on from there). Errors before
// the first job get a normal error answer; after it, the connection is cut, so a client
// never takes a truncated page for a whole one.
func (s *Server) streamPage(c *gin.Context, f queue.ListFilter) error {
	w := c.Writer
	written, started := 0, false
	var encodeErr error
	next, err := s.deps.Client.ListScan(c.Request.Context(), f, func(j *queue.Job) bool {
		b, err := json.Marshal(j)
		if err != nil {
			encodeErr = err
			return false
		}
		if written > 0 && written+len(b)+1 > queue.MaxPageBytes {
			return false
		}
		if !started {
			started = true
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(http.StatusOK)
			_, _ = w.WriteString(`{"jobs":[`)
		} else {
			_, _ = w.WriteString(",")
		}
		_, werr := w.Write(b)
		written += len(b) + 1
		return werr == nil
	})
	if err == nil {
		err = encodeErr
	}
	if errors.Is(err, queue.ErrBadCursor) {
		return validation(Detail{Field: "cursor", Message: "is not a cursor this API returned"})
	}
	if err != nil {
		if started {
			logger(c).Error("listing jobs failed mid-page; the answer is cut off", "err", err)
			panic(http.ErrAbortHandler)
		}
		return err
	}
	if !started {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = w.WriteString(`{"jobs":[`)
	}
	cursor := []byte("null")
	if next != "" {
		cursor, _ = json.Marshal(next)
	}
	_, _ = w.WriteString(`],"nextCursor":` + string(cursor) + "}")
	return nil
}

func (s *Server) remove(c *gin.Context) error {
	ctx, id := c.Request.Context(), c.Param("id")
	err := s.deps.Client.Remove(ctx, id)
	if errors.Is(err, queue.ErrNotFound) {
		// Retention may have removed the job already: its cached copy goes too, so a
		// later GET is 404 as after any DELETE.
		if _, cerr := s.cached(ctx, c, id); cerr != nil {
			return err
		}
		err = nil
	}
	if err != nil {
		return err
	}
	s.metrics.operations.WithLabelValues("remove").Inc()
	s.forget(c, []string{id})
	c.Status(http.StatusNoContent)
	return nil
}

// forget drops cached results of removed jobs; a failure is logged, not answered.
func (s *Server) forget(c *gin.Context, ids []string) {
	if s.deps.Results == nil {
		return
	}
	if err := s.deps.Results.Forget(c.Request.Context(), ids); err != nil {
		logger(c).Warn("could not drop cached results of removed jobs", "err", err, "jobs", len(ids))
	}
}

func (s *Server) retry(c *gin.Context) error {
	job, err := s.deps.Client.Retry(c.Request.Context(), c.Param("id"))
	if err != nil {
		return err
	}
	s.metrics.operations.WithLabelValues("retry").Inc()
	s.publish(c, job)
	c.JSON(http.StatusOK, job)
	return nil
}

func (s *Server) cancel(c *gin.Context) error {
	job, err := s.deps.Client.Cancel(c.Request.Context(), c.Param("id"))
	if errors.Is(err, queue.ErrConflict) {
		return errConflict("the job has finished already and cannot be cancelled")
	}
	if err != nil {
		return err
	}
	s.metrics.operations.WithLabelValues("cancel").Inc()
	s.publish(c, job)
	c.JSON(http.StatusOK, job)
	return nil
}

func (s *Server) stats(c *gin.Context) error {
	st, err := s.deps.Stats(c.Request.Context())
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, st)
	return nil
}

func (s *Server) pause(paused bool) handlerFunc {
	return func(c *gin.Context) error {
		v, err := s.deps.Client.SetPaused(c.Request.Context(), paused)
		if err != nil {
			return err
		}
		s.statsChanged(c)
		c.JSON(http.StatusOK, gin.H{"paused": v})
		return nil
	}
}

// clean serves POST /api/queue/clean/{completed,failed} with an optional body
// {"olderThan": ms}.
func (s *Server) clean(target queue.CleanTarget, defaultAge time.Duration) handlerFunc {
	return func(c *gin.Context) error {
		body, err := readBody(c)
		if err != nil {
			return err
		}
		if err := checkJSON(body, true); err != nil {
			return err
		}
		age := defaultAge
		if len(body) > 0 {
			v := &queue.ValidationError{}
			if m, ok := decodeObject(body, "", []string{"olderThan"}, v); ok {
				if ms := decodeInt64(m["olderThan"], "olderThan", v); ms != nil {
					if *ms < 0 || *ms > maxCleanAgeMs {
						v.Add("olderThan", "must be an integer number of milliseconds between 0 and %d", int64(maxCleanAgeMs))
					} else {
						age = time.Duration(*ms) * time.Millisecond
					}
				}
			}
			if err := v.Err(); err != nil {
				return err
			}
		}
		n, err := s.deps.Client.Clean(c.Request.Context(), target, age, queue.CleanOptions{
			Removed: func(ctx context.Context, ids []string) { s.forget(c, ids) },
		})
		if err != nil {
			return err
		}
		s.metrics.cleaned.WithLabelValues(string(target)).Add(float64(n))
		if n > 0 {
			s.statsChanged(c)
		}
		c.JSON(http.StatusOK, gin.H{"removed": n})
		return nil
	}
}

// statsChanged drops cached stats after an operator's change (pause, resume, clean), so
// the next read shows it instead of waiting out STATS_TTL.
func (s *Server) statsChanged(c *gin.Context) {
	if s.deps.StatsChanged != nil {
		s.deps.StatsChanged(c.Request.Context())
	}
}
