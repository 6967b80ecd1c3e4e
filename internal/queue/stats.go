package queue

import (
	"context"
	"fmt"

	"github.com/pgqueue/queue/db"
)

// Counts are the jobs in each state.
type Counts struct {
	Waiting   int64 `json:"waiting"`
	Active    int64 `json:"active"`
	Completed int64 `json:"completed"`
	Failed    int64 `json:"failed"`
	Delayed   int64 `json:"delayed"`
	Cancelled int64 `json:"cancelled"`
}

func (c *Counts) add(state string, n int64) {
	switch state {
	case StateWaiting:
		c.Waiting += n
	case StateActive:
		c.Active += n
	case StateCompleted:
		c.Completed += n
	case StateFailed:
		c.Failed += n
	case StateDelayed:
		c.Delayed += n
	case StateCancelled:
		c.Cancelled += n
	}
}

// Stats are the exact counts of existing jobs, overall and by type, and the pause switch.
type Stats struct {
	Counts
	Paused bool              `json:"paused"`
	ByType map[string]Counts `json:"byType"`
}

// Stats counts the jobs that exist now.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	q := db.New(c.pool)
	rows, err := q.JobCountByStateAndType(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("count jobs: %w", err)
	}
	s := Stats{ByType: map[string]Counts{}}
	for _, r := range rows {
		s.add(r.State, r.Jobs)
		t := s.ByType[r.Type]
		t.add(r.State, r.Jobs)
		s.ByType[r.Type] = t
	}
	if s.Paused, err = q.QueuePaused(ctx); err != nil {
		return Stats{}, fmt.Errorf("read pause state: %w", err)
	}
	return s, nil
}
