package results

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Hub holds the one subscription to the events channel of an API process and fans
// events out to its wait and event-stream requests.
type Hub struct {
	store   *Store
	mu      sync.Mutex
	subs    map[*Subscription]struct{}
	healthy atomic.Bool
	ps      *redis.PubSub
	stop    context.CancelFunc
	done    chan struct{}
}

// Filter selects events; an empty field matches anything.
type Filter struct {
	ID    string
	Type  string
	Queue string
}

func (f Filter) any() bool { return f == Filter{} }

func (f Filter) match(ev *Event) bool {
	return (f.ID == "" || f.ID == ev.ID) && (f.Type == "" || f.Type == ev.Type) && (f.Queue == "" || f.Queue == ev.Queue)
}

// Subscription receives, in order, the batches of events that match its filter (each
// message of the channel is one batch; subscribers without a filter share the hub's
// slice, so they must not change it). C is closed when the hub stops or when the
// subscriber fell more than its buffer of batches behind (a slow client is
// disconnected rather than buffered without bound).
type Subscription struct {
	C      chan []Event
	filter Filter
	closed bool // guarded by Hub.mu
}

// receiveTimeout bounds a silent wait on the subscription; a ping then proves the
// connection alive, or go-redis reconnects and resubscribes.
const receiveTimeout = 5 * time.Second

// NewHub subscribes and starts dispatching; Close stops it.
func (s *Store) NewHub() *Hub {
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{store: s, subs: map[*Subscription]struct{}{}, stop: cancel, done: make(chan struct{})}
	h.ps = s.rdb.Subscribe(ctx)
	go h.run(ctx)
	return h
}

// Healthy reports whether the subscription is confirmed and live. While it is not,
// waiters must poll Postgres (events may be missed).
func (h *Hub) Healthy() bool { return h.healthy.Load() }

// Subscribe returns a subscription to the events f selects, with room for buffer
// batches.
func (h *Hub) Subscribe(f Filter, buffer int) *Subscription {
	sub := &Subscription{C: make(chan []Event, buffer), filter: f}
	h.mu.Lock()
	h.subs[sub] = struct{}{}
	h.mu.Unlock()
	return sub
}

// Unsubscribe stops delivery to sub and closes its channel.
func (h *Hub) Unsubscribe(sub *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closeLocked(sub)
}

func (h *Hub) closeLocked(sub *Subscription) {
	if !sub.closed {
		sub.closed = true
		close(sub.C)
		delete(h.subs, sub)
	}
}

// Close ends the subscription and closes every subscriber's channel.
func (h *Hub) Close() {
	h.stop()
	_ = h.ps.Close() // interrupts a blocked receive
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		h.closeLocked(sub)
	}
}

func (h *Hub) run(ctx context.Context) {
	defer close(h.done)
	ps := h.ps
	// A ping after the subscribe comes back after its confirmation, on the same
	// connection: its pong proves the subscription live. (With RESP3, go-redis may
	// consume the confirmation itself.)
	confirm := func() {
		if err := ps.Subscribe(ctx, h.store.EventsChannel()); err == nil {
			_ = ps.Ping(ctx)
		}
	}
	confirm()
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, receiveTimeout)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var timeout interface{ Timeout() bool }
			if errors.As(err, &timeout) && timeout.Timeout() {
				// Quiet channel: the pong of this ping proves it alive.
				if ps.Ping(ctx) == nil {
					continue
				}
			}
			if h.healthy.Swap(false) {
				h.store.fail("subscribe", err)
			}
			sleepCtx(ctx, 200*time.Millisecond)
			// Reconnects (go-redis resubscribes the channel) and asks for a pong.
			confirm()
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			h.healthy.Store(m.Kind == "subscribe")
		case *redis.Pong:
			h.healthy.Store(true)
		case *redis.Message:
			h.healthy.Store(true)
			if batch := decodeEvents(m.Payload); len(batch) > 0 {
				h.dispatch(batch)
			}
		}
	}
}

// dispatch hands one batch to every subscriber whose filter matches some of it: the
// batch itself to those without a filter, the matching events to the others.
func (h *Hub) dispatch(batch []Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		out := batch
		if !sub.filter.any() {
			out = nil
			for i := range batch {
				if sub.filter.match(&batch[i]) {
					out = append(out, batch[i])
				}
			}
			if len(out) == 0 {
				continue
			}
		}
		select {
		case sub.C <- out:
		default:
			h.closeLocked(sub) // too slow: disconnect rather than block everyone
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// decodeEvents reads one message of the events channel: a JSON array of events (what
// the publisher sends) or a single event object (what other publishers may send).
// Anything else is ignored.
func decodeEvents(payload string) []Event {
	if strings.HasPrefix(strings.TrimSpace(payload), "[") {
		var evs []Event
		if json.Unmarshal([]byte(payload), &evs) != nil {
			return nil
		}
		return evs
	}
	var ev Event
	if json.Unmarshal([]byte(payload), &ev) != nil {
		return nil
	}
	return []Event{ev}
}
