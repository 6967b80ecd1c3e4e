package worker

import (
	"context"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgqueue/queue/internal/queue"
)

// CancelChannel carries the seq of a cancelled active job to the worker that runs it.
const CancelChannel = "queue_cancel"

// listen holds one dedicated connection with LISTEN on the jobs and cancel channels
// (a pooled connection could be handed to someone else), and reconnects with backoff.
func (w *Worker) listen(ctx context.Context) {
	backoff := 100 * time.Millisecond
	failures := &throttledLog{every: 10 * time.Second}
	for ctx.Err() == nil {
		began := time.Now()
		err := w.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > 10*time.Second {
			backoff = 100 * time.Millisecond // it was up for a while: a fresh outage
		}
		failures.warn(w.log, "notification listener lost its connection; polling until it is back", "err", err, "retry_in", backoff)
		sleep(ctx, backoff)
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (w *Worker) listenOnce(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, w.pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, ch := range []string{queue.NotifyChannel, CancelChannel, SettingsChannel} {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return err
		}
	}
	// Jobs may have arrived, and limits changed, while we were not listening.
	signal(w.limitsChanged)
	w.wakeQueue("")
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		switch n.Channel {
		case queue.NotifyChannel:
			w.wakeQueue(n.Payload)
		case SettingsChannel:
			signal(w.limitsChanged)
		case CancelChannel:
			if seq, err := strconv.ParseInt(n.Payload, 10, 64); err == nil {
				if r := w.lookup(seq); r != nil {
					r.cancel(ErrJobCancelled)
				}
			}
		}
	}
}

// wakeQueue makes the producer of a queue claim now; "" wakes every producer.
func (w *Worker) wakeQueue(name string) {
	if name == "" {
		for _, p := range w.producers {
			signal(p.wake)
		}
		return
	}
	if p := w.producers[name]; p != nil {
		signal(p.wake)
	}
}
