package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgqueue/queue/internal/store"
)

// ErrNotFound means no job has that id.
var ErrNotFound = errors.New("job not found")

// Get reads one job.
func (c *Client) Get(ctx context.Context, id string) (Job, error) {
	r, err := store.New(c.pool).JobGetByID(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return Job{}, ErrNotFound
	}
	if err != nil {
		return Job{}, fmt.Errorf("get job: %w", err)
	}
	return jobFromRow(r), nil
}
