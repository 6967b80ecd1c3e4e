package api

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/pgqueue/queue/internal/queue"
)

func (s *Server) listQueues(c *gin.Context) error {
	list, err := s.deps.Client.Queues(c.Request.Context())
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"queues": list})
	return nil
}

// queueName reads :name, refusing one that cannot name a queue.
func queueName(c *gin.Context) (string, error) {
	name := c.Param("name")
	if !queue.ValidQueueName(name) {
		return "", validation(Detail{Field: "name", Message: queue.QueueNameRule})
	}
	return name, nil
}

func (s *Server) getQueue(c *gin.Context) error {
	name, err := queueName(c)
	if err != nil {
		return err
	}
	q, err := s.deps.Client.Queue(c.Request.Context(), name)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, q)
	return nil
}

// pauseQueue serves POST /api/queue/queues/:name/pause and .../resume. A queue that has
// no jobs yet can be paused ahead of them.
func (s *Server) pauseQueue(paused bool) handlerFunc {
	return func(c *gin.Context) error {
		name, err := queueName(c)
		if err != nil {
			return err
		}
		ctx := c.Request.Context()
		if err := s.deps.Client.SetQueuePaused(ctx, name, paused); err != nil {
			return err
		}
		s.statsChanged(c)
		q, err := s.deps.Client.Queue(ctx, name)
		if err != nil {
			return err
		}
		c.JSON(http.StatusOK, q)
		return nil
	}
}

// setQueueLimits serves PUT /api/queue/queues/:name: it changes the flow control of one
// queue (creating its settings ahead of its jobs if need be) and answers the queue.
func (s *Server) setQueueLimits(c *gin.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	if err := checkJSON(body, false); err != nil {
		return err
	}
	v := &queue.ValidationError{}
	name := c.Param("name")
	if !queue.ValidQueueName(name) {
		v.Add("name", queue.QueueNameRule)
	}
	limits := decodeLimits(body, v)
	// Range problems are reported with the decoding ones, all in one answer.
	limits.Validate("", v)
	if err := v.Err(); err != nil {
		return err
	}
	q, err := s.deps.Client.SetQueueLimits(c.Request.Context(), name, limits)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, q)
	return nil
}

func (s *Server) listWorkers(c *gin.Context) error {
	list, err := s.deps.Client.Workers(c.Request.Context())
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"workers": list})
	return nil
}
