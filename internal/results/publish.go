package results

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgqueue/queue/internal/queue"
)

// Event is one message on the events channel.
type Event struct {
	Event    string          `json:"event"` // "job" or "progress"
	ID       string          `json:"id"`
	Type     string          `json:"type"`
	Queue    string          `json:"queue,omitempty"`
	State    string          `json:"state,omitempty"`
	Progress *int            `json:"progress,omitempty"`
	At       queue.Timestamp `json:"at"`
}

// JobEvent is the event of a job entering a state.
func JobEvent(j *queue.Job, state string) Event {
	return Event{Event: "job", ID: j.ID, Type: j.Type, Queue: j.Queue, State: state, At: queue.Timestamp{Time: time.Now()}}
}

// ProgressEvent is the event of a job reporting progress.
func ProgressEvent(j *queue.Job, progress int) Event {
	return Event{Event: "progress", ID: j.ID, Type: j.Type, Queue: j.Queue, Progress: &progress, At: queue.Timestamp{Time: time.Now()}}
}

type publication struct {
	event    Event
	snapshot *queue.Job // written to the job's key before the event is published
}

// Publisher writes snapshots and events in the background, many per pipeline, so a busy
// worker pays one Redis round trip per batch rather than per job, and a Redis outage
// never slows a job down. When its buffer is full, publications are dropped and counted.
type Publisher struct {
	store   *Store
	queue   chan publication
	dropped atomic.Uint64
	stop    chan struct{}
	done    chan struct{}
}

const (
	publishBuffer   = 10_000
	maxPublishBatch = 500
	publishTimeout  = 5 * time.Second
)

// NewPublisher starts a publisher; Close flushes it.
func (s *Store) NewPublisher() *Publisher {
	p := &Publisher{store: s, queue: make(chan publication, publishBuffer), stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

// Publish queues an event, and a snapshot of the job when it is not nil.
func (p *Publisher) Publish(ev Event, snapshot *queue.Job) {
	select {
	case p.queue <- publication{event: ev, snapshot: snapshot}:
	default:
		p.dropped.Add(1)
		p.store.fail("publish", errBufferFull)
	}
}

var errBufferFull = errors.New("publish buffer full; events dropped")

// Dropped counts publications lost to a full buffer.
func (p *Publisher) Dropped() uint64 { return p.dropped.Load() }

// Close sends what is queued (within a few seconds) and stops.
func (p *Publisher) Close() {
	close(p.stop)
	<-p.done
}

func (p *Publisher) run() {
	defer close(p.done)
	for {
		select {
		case first := <-p.queue:
			p.send(p.collect(first))
		case <-p.stop:
			for {
				select {
				case first := <-p.queue:
					p.send(p.collect(first))
				default:
					return
				}
			}
		}
	}
}

func (p *Publisher) collect(first publication) []publication {
	batch := []publication{first}
	for len(batch) < maxPublishBatch {
		select {
		case next := <-p.queue:
			batch = append(batch, next)
		default:
			return batch
		}
	}
	return batch
}

// send writes a batch in one pipeline: the snapshots first, then all the events in one
// message (a JSON array), so a subscriber that hears of a finished job finds its
// snapshot, and Redis handles one PUBLISH per batch instead of one per event.
func (p *Publisher) send(batch []publication) {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	s := p.store
	events := make([]byte, 0, 128*len(batch))
	events = append(events, '[')
	_, err := s.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, pub := range batch {
			if pub.snapshot != nil {
				pipe.Set(ctx, s.JobKey(pub.snapshot.ID), appendJob(make([]byte, 0, 512), pub.snapshot), s.ttl)
			}
			if i > 0 {
				events = append(events, ',')
			}
			events = appendEvent(events, &pub.event)
		}
		pipe.Publish(ctx, s.EventsChannel(), append(events, ']'))
		return nil
	})
	if err != nil {
		s.fail("publish", err)
	}
}
