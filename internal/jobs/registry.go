// Package jobs holds the job types: for each, its payload, validation and handler, and
// the Registry that maps a type name to both. It imports neither the engine nor the API:
// the worker hands each handler what it needs through the Job it runs.
package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Job is what a handler sees of the job it runs.
type Job struct {
	ID          string
	Type        string
	Data        json.RawMessage
	Attempt     int // 1 for the first attempt
	MaxAttempts int

	progress func(int)
}

// NewJob is how the worker builds a Job; progress receives SetProgress's values.
func NewJob(id, typ string, data json.RawMessage, attempt, maxAttempts int, progress func(int)) *Job {
	return &Job{ID: id, Type: typ, Data: data, Attempt: attempt, MaxAttempts: maxAttempts, progress: progress}
}

// SetProgress reports progress 0..100 (clamped). Reports are coalesced: calling it often
// costs nothing extra.
func (j *Job) SetProgress(p int) {
	if j.progress != nil {
		j.progress(min(max(p, 0), 100))
	}
}

// Handler runs one attempt of a job. Its result is stored as JSON. An error is retried
// with the job's backoff, unless it is Permanent. ctx ends at the job's timeout, when the
// job is cancelled, or at worker shutdown.
type Handler interface {
	Handle(ctx context.Context, job *Job) (any, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, job *Job) (any, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, job *Job) (any, error) { return f(ctx, job) }

// Validator checks a type's data and returns one problem per field, named from the
// data's root ("to", "attachments[1].path"); nil when the data is valid.
type Validator func(data json.RawMessage) []FieldProblem

// FieldProblem is one invalid field of a job's data.
type FieldProblem struct {
	Field   string
	Message string
}

type entry struct {
	handler  Handler
	validate Validator
}

// Registry maps job types to handlers and validators. Register everything before the
// worker starts; it is read-only afterwards.
type Registry struct {
	types map[string]entry
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{types: map[string]entry{}} }

// Register adds a type. validate may be nil (any JSON object is accepted). The type must
// also be known to the database (queue.job_types(), extended by a migration).
func (r *Registry) Register(typ string, h Handler, validate Validator) {
	if _, dup := r.types[typ]; dup {
		panic(fmt.Sprintf("jobs: type %s registered twice", typ))
	}
	r.types[typ] = entry{handler: h, validate: validate}
}

// Types lists the registered types, sorted.
func (r *Registry) Types() []string { return slices.Sorted(maps.Keys(r.types)) }

// Handler returns the handler of a type.
func (r *Registry) Handler(typ string) (Handler, bool) {
	e, ok := r.types[typ]
	return e.handler, ok
}

// Validate checks data for a type; an unregistered type is a problem of its own.
func (r *Registry) Validate(typ string, data json.RawMessage) []FieldProblem {
	e, ok := r.types[typ]
	if !ok {
		return []FieldProblem{{Field: "type", Message: "unknown job type"}}
	}
	if e.validate == nil {
		return nil
	}
	return e.validate(data)
}

// PermanentError is an error that retrying cannot fix: the job fails at once.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as not worth retrying.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// Permanentf is Permanent(fmt.Errorf(...)).
func Permanentf(format string, args ...any) error { return Permanent(fmt.Errorf(format, args...)) }

// IsPermanent reports whether err, or an error it wraps, is permanent.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}
