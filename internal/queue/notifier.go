package queue

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgqueue/queue/db"
)

// notifier sends NotifyChannel after jobs committed outside a caller's transaction.
// Pokes coalesce: at most one NOTIFY is in flight and one more is pending, so a burst of
// enqueues costs a couple of notifications, and the first of a burst is sent at once
// (leading edge). NOTIFY takes a global lock at commit; one per insert would serialise
// every enqueue (LESSONS.md).
type notifier struct {
	pool    *pgxpool.Pool
	pending chan struct{}
	stop    chan struct{}
	done    chan struct{}
	last    atomic.Int64 // unix nanoseconds of the last in-statement notification
}

// leadingEdgeGap is how long after one in-statement notification the next enqueues
// leave notifying to the coalescing notifier.
const leadingEdgeGap = 2 * time.Millisecond

// claimLeadingEdge reports whether this enqueue should notify in its own statement: the
// first of a burst does, so its job is picked up without waiting for a separate NOTIFY;
// the rest of the burst (within leadingEdgeGap) is coalesced, since NOTIFY takes a global
// lock at commit.
func (n *notifier) claimLeadingEdge() bool {
	now := time.Now().UnixNano()
	last := n.last.Load()
	return now-last >= int64(leadingEdgeGap) && n.last.CompareAndSwap(last, now)
}

// notifyTimeout bounds one NOTIFY; a missed one is covered by the workers' poll.
const notifyTimeout = 5 * time.Second

func newNotifier(pool *pgxpool.Pool) *notifier {
	n := &notifier{pool: pool, pending: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go n.run()
	return n
}

func (n *notifier) poke() {
	select {
	case n.pending <- struct{}{}:
	default: // one is pending already; it will cover this job too
	}
}

// run sends one NOTIFY per batch of pokes. A send in flight at close is finished, and
// so is one poked before close, so the last jobs of a short-lived producer do not wait
// for a poll (each bounded by notifyTimeout).
func (n *notifier) run() {
	defer close(n.done)
	q := db.New(n.pool)
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
		}
	}
}

func (n *notifier) send(q *db.Queries) {
	ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
	defer cancel()
	if err := q.QueueNotify(ctx); err != nil {
		slog.Warn("notify workers failed; they will find the job at their next poll", "err", err)
	}
}

func (n *notifier) close() {
	close(n.stop)
	<-n.done
}
