package api

import (
	"context"
	"encoding/json"

	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/results"
)

// Redis is the Redis side of an API process (internal/results).
type Redis struct {
	Store     *results.Store
	Hub       *results.Hub       // the one subscription of this process
	Publisher *results.Publisher // events and snapshots of what API requests change
	Stats     *results.StatsCache
}

// Use fills the Redis-backed parts of d. Each of them degrades to Postgres when Redis
// is down; none of them fails a request because of Redis.
func (r Redis) Use(d *Deps) {
	d.RedisPing = r.Store.Ping
	d.Results = resultCache{r.Store}
	d.Events = hubSource{r.Hub}
	d.Publisher = publisher{r.Publisher}
	d.StatsChanged = r.Stats.Forget
	d.Stats = func(ctx context.Context) (queue.Stats, error) {
		b, err := r.Stats.Get(ctx)
		if err != nil {
			return queue.Stats{}, err
		}
		var s queue.Stats
		err = json.Unmarshal(b, &s)
		return s, err
	}
}

// StatsJSON is the compute function of a StatsCache over client.Stats.
func StatsJSON(client *queue.Client) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		s, err := client.Stats(ctx)
		if err != nil {
			return nil, err
		}
		return json.Marshal(s)
	}
}

type resultCache struct{ s *results.Store }

func (c resultCache) Job(ctx context.Context, id string) (queue.Job, bool, error) {
	j, ok := c.s.Job(ctx, id)
	return j, ok, nil
}

func (c resultCache) Forget(ctx context.Context, ids []string) error {
	c.s.Forget(ctx, ids...)
	return nil
}

type hubSource struct{ h *results.Hub }

// subscriberBuffer is how many batches a stream may fall behind before it is cut off.
// Batches are shared between subscribers, so a stream costs a few hundred bytes here
// however busy the workers are; a worker's batch holds up to 500 events.
const subscriberBuffer = 64

func (s hubSource) Live() bool { return s.h.Healthy() }

func (s hubSource) Subscribe(f EventFilter) (<-chan []Event, func()) {
	sub := s.h.Subscribe(f, subscriberBuffer)
	return sub.C, func() { s.h.Unsubscribe(sub) }
}

type publisher struct{ p *results.Publisher }

func (p publisher) Publish(_ context.Context, jobs []queue.Job) {
	for i := range jobs {
		j := jobs[i]
		var snapshot *queue.Job
		if queue.Finished(j.State) {
			snapshot = &j
		}
		p.p.Publish(results.JobEvent(&j, j.State), snapshot)
	}
}
