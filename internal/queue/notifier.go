package queue

import (
	"context"
	"log/slog"
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
	stop    context.CancelFunc
	done    chan struct{}
}

// notifyTimeout bounds one NOTIFY; a missed one is covered by the workers' poll.
const notifyTimeout = 5 * time.Second

func newNotifier(pool *pgxpool.Pool) *notifier {
	ctx, cancel := context.WithCancel(context.Background())
	n := &notifier{pool: pool, pending: make(chan struct{}, 1), stop: cancel, done: make(chan struct{})}
	go n.run(ctx)
	return n
}

func (n *notifier) poke() {
	select {
	case n.pending <- struct{}{}:
	default: // one is pending already; it will cover this job too
	}
}

func (n *notifier) run(ctx context.Context) {
	defer close(n.done)
	q := db.New(n.pool)
	for {
		select {
		case <-ctx.Done():
			// Send what was poked before close, so no job waits for a poll.
			select {
			case <-n.pending:
				n.send(context.Background(), q)
			default:
			}
			return
		case <-n.pending:
			n.send(ctx, q)
		}
	}
}

func (n *notifier) send(ctx context.Context, q *db.Queries) {
	ctx, cancel := context.WithTimeout(ctx, notifyTimeout)
	defer cancel()
	if err := q.QueueNotify(ctx); err != nil {
		slog.Warn("notify workers failed; they will find the job at their next poll", "err", err)
	}
}

func (n *notifier) close() {
	n.stop()
	<-n.done
}
