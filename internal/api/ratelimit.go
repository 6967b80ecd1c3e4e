package api

import (
	"math"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// submitLimiter allows perSecond submissions per client, with a burst of the same size.
// Clients are API keys when keys are set, else peer addresses; limiters of clients idle
// long enough to have a full bucket again are forgotten, so memory stays bounded.
type submitLimiter struct {
	perSecond int
	now       func() time.Time

	mu        sync.Mutex
	clients   map[string]*clientLimiter
	lastSweep time.Time
}

type clientLimiter struct {
	limiter  *rate.Limiter
	lastSeen time.Time
}

// limiterSweepEvery bounds how often the map is swept for idle clients.
const limiterSweepEvery = 30 * time.Second

func newSubmitLimiter(perSecond int) *submitLimiter {
	return &submitLimiter{perSecond: perSecond, now: time.Now, clients: map[string]*clientLimiter{}}
}

// allow takes one token for client. When none is left it returns how many whole seconds
// to wait (at least 1), for Retry-After.
func (l *submitLimiter) allow(client string) (ok bool, retryAfter string) {
	if l == nil || l.perSecond <= 0 {
		return true, ""
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > limiterSweepEvery {
		l.sweep(now)
	}
	cl, found := l.clients[client]
	if !found {
		cl = &clientLimiter{limiter: rate.NewLimiter(rate.Limit(l.perSecond), l.perSecond)}
		l.clients[client] = cl
	}
	cl.lastSeen = now
	r := cl.limiter.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
	}
	return true, ""
}

// sweep forgets clients whose bucket has refilled: a new limiter would behave the same.
func (l *submitLimiter) sweep(now time.Time) {
	l.lastSweep = now
	for k, cl := range l.clients {
		if now.Sub(cl.lastSeen) > 2*time.Second {
			delete(l.clients, k)
		}
	}
}
