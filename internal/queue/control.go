package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgqueue/queue/internal/store"
)

// ErrConflict means the job is not in a state that allows the operation.
var ErrConflict = errors.New("job state does not allow this")

// Cancel cancels a waiting, delayed or active job. ErrNotFound when it does not exist,
// ErrConflict when it has finished already.
func (c *Client) Cancel(ctx context.Context, id string) (Job, error) {
	r, err := store.New(c.pool).JobCancel(ctx, id)
	if err == nil {
		return jobFromRow(store.QueueJob(r)), nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Job{}, fmt.Errorf("cancel job: %w", err)
	}
	if _, err := c.Get(ctx, id); err != nil {
		return Job{}, err
	}
	return Job{}, ErrConflict
}

// SetPaused pauses or resumes claiming of every queue for every worker and returns the
// new value. It is separate from each queue's own switch.
func (c *Client) SetPaused(ctx context.Context, paused bool) (bool, error) {
	v, err := store.New(c.pool).QueueSetPaused(ctx, paused)
	if err != nil {
		return false, fmt.Errorf("set paused: %w", err)
	}
	return v, nil
}

// SetQueuePaused pauses or resumes one queue for every worker.
func (c *Client) SetQueuePaused(ctx context.Context, name string, paused bool) error {
	if !ValidQueueName(name) {
		v := &ValidationError{}
		v.Add("name", QueueNameRule)
		return v
	}
	if _, err := store.New(c.pool).QueueSetPausedOne(ctx, store.QueueSetPausedOneParams{Name: name, Paused: paused}); err != nil {
		return fmt.Errorf("set queue paused: %w", err)
	}
	return nil
}
