package queue

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgqueue/queue/internal/store"
)

// notifier sends NotifyChannel (one per queue) after jobs committed outside a caller's
// transaction.
// NOTIFY takes a global lock at commit, so one per insert would serialise every enqueue
// (a known outage pattern of Postgres queues). An enqueue after a quiet spell notifies in its own statement (leading
// edge), so a lone job is picked up without a separate round trip. Enqueues that follow
// closely are announced by the background sender instead: at most one NOTIFY in flight
// and one pending, and at least trailingGap apart, so a sustained stream costs about
// one extra transaction per trailingGap rather than one per few jobs.
type notifier struct {
	pool    *pgxpool.Pool
	pending chan struct{}
	stop    chan struct{}
	done    chan struct{}
	last    atomic.Int64 // unix nanoseconds of the last enqueue through this client

	mu     sync.Mutex
	queues map[string]struct{} // queues to announce with the next send
}

// leadingEdgeGap is how quiet the client must have been for an enqueue to notify in its
// own statement.
const leadingEdgeGap = 2 * time.Millisecond

// trailingGap spaces the background notifications of a stream. Workers that are busy do
// not need them (they claim again as slots free up); an idle worker waits at most this
// long, and only for a job that came within leadingEdgeGap of another.
const trailingGap = 2 * time.Millisecond

// claimLeadingEdge records an enqueue and reports whether it is the first after a quiet
// spell and so should notify in its own statement.
func (n *notifier) claimLeadingEdge() bool {
	now := time.Now().UnixNano()
	last := n.last.Swap(now)
	return now-last >= int64(leadingEdgeGap)
}

// notifyTimeout bounds one NOTIFY; a missed one is covered by the workers' poll.
const notifyTimeout = 5 * time.Second

func newNotifier(pool *pgxpool.Pool) *notifier {
	n := &notifier{pool: pool, pending: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		queues: map[string]struct{}{}}
	go n.run()
	return n
}

// poke asks for a notification of queue.
func (n *notifier) poke(queue string) {
	n.mu.Lock()
	n.queues[queue] = struct{}{}
	n.mu.Unlock()
	select {
	case n.pending <- struct{}{}:
	default: // one is pending already; it will cover this job too
	}
}

// run sends one NOTIFY per batch of pokes, at least trailingGap apart. A send in flight
// at close is finished, and so is one poked before close, so the last jobs of a
// short-lived producer do not wait for a poll (each bounded by notifyTimeout).
func (n *notifier) run() {
	defer close(n.done)
	q := store.New(n.pool)
	for {
		select {
		case <-n.stop:
			select {
			case <-n.pending:
				n.send(q)
			default:
			}
			return
		case <-n.pending:
			n.send(q)
			select {
			case <-n.stop:
			case <-time.After(trailingGap):
			}
		}
	}
}

// send notifies every queue poked since the last send (usually one).
func (n *notifier) send(q *store.Queries) {
	n.mu.Lock()
	queues := slices.Collect(maps.Keys(n.queues))
	clear(n.queues)
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
	defer cancel()
	for _, name := range queues {
		if err := q.QueueNotify(ctx, name); err != nil {
			slog.Warn("notify workers failed; they will find the job at their next poll", "err", err, "queue", name)
			return
		}
	}
}

func (n *notifier) close() {
	close(n.stop)
	<-n.done
}
