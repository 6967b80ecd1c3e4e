package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/pgqueue/queue/internal/store"
)

// Ranges of the flow-control settings.
const (
	MaxLimit        = 100000   // concurrency, groupConcurrency, rate.limit
	MaxRatePeriodMs = 86400000 // rate.period: one day
)

// Setting is one field of a settings change: Set says the change names it; a nil Value
// then clears the setting. In JSON, a field that is absent is not Set, and null clears.
type Setting[T any] struct {
	Set   bool
	Value *T
}

// UnmarshalJSON marks the setting as given; null clears it.
func (s *Setting[T]) UnmarshalJSON(b []byte) error {
	s.Set = true
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		s.Value = nil
		return nil
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	s.Value = &v
	return nil
}

// To returns a setting that sets v.
func To[T any](v T) Setting[T] { return Setting[T]{Set: true, Value: &v} }

// Clear returns a setting that clears the limit.
func Clear[T any]() Setting[T] { return Setting[T]{Set: true} }

// QueueLimits changes the flow control of one queue; fields not Set keep their value. The
// limits hold across every worker at once (see ClaimLimited).
type QueueLimits struct {
	// Concurrency: at most this many of the queue's jobs run at once (1..100000).
	Concurrency Setting[int] `json:"concurrency"`
	// Rate: at most Limit starts in any Period milliseconds.
	Rate Setting[Rate] `json:"rate"`
	// GroupConcurrency and GroupRate: the same for each group of the queue on its own
	// (jobs without a group are one group).
	GroupConcurrency Setting[int]  `json:"groupConcurrency"`
	GroupRate        Setting[Rate] `json:"groupRate"`
	// Fair: among groups with jobs ready at the same priority, starts go round-robin.
	// Clearing it puts it back to its default, off.
	Fair Setting[bool] `json:"fair"`
}

// Validate checks every given setting, naming fields after prefix.
func (l *QueueLimits) Validate(prefix string, v *ValidationError) {
	limit := func(field string, s Setting[int]) {
		if s.Value != nil && (*s.Value < 1 || *s.Value > MaxLimit) {
			v.Add(prefix+field, "must be between 1 and %d (or cleared, for no limit)", MaxLimit)
		}
	}
	rate := func(field string, s Setting[Rate]) {
		if s.Value == nil {
			return
		}
		if s.Value.Limit < 1 || s.Value.Limit > MaxLimit {
			v.Add(prefix+field+".limit", "must be between 1 and %d", MaxLimit)
		}
		if s.Value.Period < 1 || s.Value.Period > MaxRatePeriodMs {
			v.Add(prefix+field+".period", "must be between 1 and %d (milliseconds)", MaxRatePeriodMs)
		}
	}
	limit("concurrency", l.Concurrency)
	rate("rate", l.Rate)
	limit("groupConcurrency", l.GroupConcurrency)
	rate("groupRate", l.GroupRate)
}

// SetQueueLimits changes the flow control of one queue and returns the queue. Every
// worker applies the change at once (it is told through Postgres) or, should that
// notification be lost, within its poll interval.
func (c *Client) SetQueueLimits(ctx context.Context, name string, l QueueLimits) (Queue, error) {
	v := &ValidationError{}
	if !ValidQueueName(name) {
		v.Add("name", QueueNameRule)
	}
	l.Validate("", v)
	if err := v.Err(); err != nil {
		return Queue{}, err
	}
	p := store.QueueSetLimitsParams{
		Name:                name,
		SetConcurrency:      l.Concurrency.Set,
		Concurrency:         int32Ptr(l.Concurrency.Value),
		SetRate:             l.Rate.Set,
		SetGroupConcurrency: l.GroupConcurrency.Set,
		GroupConcurrency:    int32Ptr(l.GroupConcurrency.Value),
		SetGroupRate:        l.GroupRate.Set,
		Fair:                l.Fair.Value,
	}
	if l.Fair.Set && l.Fair.Value == nil {
		p.Fair = new(bool) // cleared: the default, off
	}
	p.RateLimit, p.RatePeriodMs = rateParams(l.Rate.Value)
	p.GroupRateLimit, p.GroupRatePeriodMs = rateParams(l.GroupRate.Value)
	if _, err := store.New(c.pool).QueueSetLimits(ctx, p); err != nil {
		return Queue{}, fmt.Errorf("set queue limits: %w", err)
	}
	return c.Queue(ctx, name)
}

func int32Ptr(v *int) *int32 {
	if v == nil {
		return nil
	}
	n := int32(*v)
	return &n
}

func rateParams(r *Rate) (limit, periodMs *int32) {
	if r == nil {
		return nil, nil
	}
	l, p := int32(r.Limit), int32(r.Period)
	return &l, &p
}

// applySettings copies a settings row into the queue object.
func (q *Queue) applySettings(s store.QueueQueue) {
	q.Paused = s.Paused
	q.Concurrency = intPtr(s.Concurrency)
	q.GroupConcurrency = intPtr(s.GroupConcurrency)
	q.Rate = rateOf(s.RateLimit, s.RatePeriodMs)
	q.GroupRate = rateOf(s.GroupRateLimit, s.GroupRatePeriodMs)
	q.Fair = s.Fair
	q.HeldBy = s.HeldBy
	q.HeldSince = timestampPtr(s.HeldSince)
	q.NextStartAt = timestampPtr(s.NextStartAt)
}

func rateOf(limit, periodMs *int32) *Rate {
	if limit == nil || periodMs == nil {
		return nil
	}
	return &Rate{Limit: int(*limit), Period: int64(*periodMs)}
}
