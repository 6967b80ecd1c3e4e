package db

import (
	"context"
	"time"

	"github.com/pgqueue/queue/internal/queue"
)

// Limits changes the flow control of one queue. Every zero field keeps the queue's
// current setting, so Limits{} changes no setting and a limit goes away only when you
// say so (NoConcurrencyLimit, NoRateLimit, Off):
//
//	db.Limits{Rate: db.Rate(10, time.Second), GroupConcurrency: db.NoConcurrencyLimit()}
//
// The limits hold across every worker together, not per process, and workers apply a
// change within their poll interval. A job held back by a limit stays waiting and spends
// no attempt.
type Limits struct {
	// Concurrency: at most this many of the queue's jobs are active at once (1..100000).
	Concurrency ConcurrencyLimit
	// Rate: in any window of the period, at most this many of the queue's jobs start
	// (1..100000 per 1 ms..24 h).
	Rate RateLimit
	// GroupConcurrency and GroupRate: the same, for each group (Options.Group) on its
	// own; jobs without a group are one group.
	GroupConcurrency ConcurrencyLimit
	GroupRate        RateLimit
	// Fair: when several groups have jobs ready at the same priority, starts go
	// round-robin between them (earliest first inside each), so a small group never
	// waits behind a large one's backlog. Default off.
	Fair Switch
}

// ConcurrencyLimit is a setting of Limits.Concurrency or GroupConcurrency. The zero
// value keeps the current one; use Concurrency or NoConcurrencyLimit.
type ConcurrencyLimit struct{ s queue.Setting[int] }

// Concurrency allows at most n jobs active at once (1..100000).
func Concurrency(n int) ConcurrencyLimit { return ConcurrencyLimit{queue.To(n)} }

// NoConcurrencyLimit removes the limit.
func NoConcurrencyLimit() ConcurrencyLimit { return ConcurrencyLimit{queue.Clear[int]()} }

// RateLimit is a setting of Limits.Rate or GroupRate. The zero value keeps the current
// one; use Rate or NoRateLimit.
type RateLimit struct{ s queue.Setting[rate] }

type rate struct {
	limit int
	per   time.Duration
}

// Rate allows at most limit starts (1..100000) in any window of per, which is a whole
// number of milliseconds from 1 ms to 24 h.
func Rate(limit int, per time.Duration) RateLimit {
	return RateLimit{queue.To(rate{limit: limit, per: per})}
}

// NoRateLimit removes the limit.
func NoRateLimit() RateLimit { return RateLimit{queue.Clear[rate]()} }

// Switch is an on/off setting. The zero value keeps the current one; use On or Off.
type Switch struct{ s queue.Setting[bool] }

// On turns the setting on.
func On() Switch { return Switch{queue.To(true)} }

// Off turns the setting off.
func Off() Switch { return Switch{queue.To(false)} }

// SetQueueLimits changes the flow control of the named queue and returns the queue. A
// queue needs no jobs to be limited: the settings wait for its first job. Invalid values
// are a *ValidationError naming each field ("name", "concurrency", "rate.limit",
// "rate.period", "groupRate.period", ...); nothing changes then.
func (c *Client) SetQueueLimits(ctx context.Context, name string, l Limits) (Queue, error) {
	v := &ValidationError{}
	if !queue.ValidQueueName(name) {
		v.Add("name", queue.QueueNameRule)
	}
	e := queue.QueueLimits{
		Concurrency:      l.Concurrency.s,
		Rate:             l.Rate.engine("rate", v),
		GroupConcurrency: l.GroupConcurrency.s,
		GroupRate:        l.GroupRate.engine("groupRate", v),
		Fair:             l.Fair.s,
	}
	// The engine checks everything again, but only here can every problem be named at
	// once, the period's included.
	e.Validate("", v)
	if err := v.Err(); err != nil {
		return Queue{}, err
	}
	return c.q.SetQueueLimits(ctx, name, e)
}

// engine converts the period to the engine's milliseconds. A period that is not a whole
// number of them is refused, not rounded: a rounded window would be another limit.
func (r RateLimit) engine(field string, v *ValidationError) queue.Setting[queue.Rate] {
	if r.s.Value == nil {
		return queue.Setting[queue.Rate]{Set: r.s.Set}
	}
	per := r.s.Value.per
	if per%time.Millisecond != 0 {
		v.Add(field+".period", "must be a whole number of milliseconds, got %v", per)
	}
	// Out of range periods are the engine's to name.
	return queue.To(queue.Rate{Limit: r.s.Value.limit, Period: per.Milliseconds()})
}
