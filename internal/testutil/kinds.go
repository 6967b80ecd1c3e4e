package testutil

import (
	"context"
	"encoding/json"

	"github.com/pgqueue/queue/internal/kinds"
)

// KindName is the job type of the tests' own kind; tests never borrow a built-in one.
const KindName = "TEST_JOB"

// Data is the test kind's data. It names its type, so the public client can enqueue it
// as it is.
type Data struct {
	N       int    `json:"n,omitempty"`
	SleepMs int    `json:"sleepMs,omitempty"`
	Fail    string `json:"fail,omitempty"` // an error message for the handler to return
	Pad     string `json:"pad,omitempty"`
}

// Kind names the test kind.
func (Data) Kind() string { return KindName }

// Kinds is a registry of the test kind with handler h (nil h: a registry that only
// checks data, an API's or a client's), and of the free-form kind, which does nothing.
func Kinds(h kinds.Handler[Data]) *kinds.Registry {
	return kinds.NewRegistry(kinds.Define(KindName, h),
		kinds.Define(AnyName, func(context.Context, *kinds.Job, *Any) (any, error) { return nil, nil }))
}

// Noop is a handler that does nothing.
func Noop(context.Context, *kinds.Job, *Data) (any, error) { return nil, nil }

// AnyName is a test kind whose data may be any JSON object (engine tests that care about
// rows, not data).
const AnyName = "TEST_ANY"

// Any is free-form data: it decodes itself, so any object passes.
type Any struct{ Raw json.RawMessage }

// UnmarshalJSON keeps the object as it is.
func (a *Any) UnmarshalJSON(b []byte) error {
	a.Raw = append(a.Raw[:0], b...)
	return nil
}
