// Package kinds is the contract between the engine and the job types it runs. A kind is
// a job type declared once: its name, a data struct whose rules are its field tags (and
// its Check method), and a handler that receives the decoded data. That one declaration
// drives the API's checks, the Go client's checks and the worker's decoding; the engine
// imports no kind, only this package.
//
// A new job type is one file that calls Define and one line that adds the kind to the
// registry the processes build; no migration and no list anywhere else.
package kinds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"time"
)

// Problem is one invalid field of a job's data, named from the data's root ("to",
// "attachments[1].path"); an empty Field means the data itself (not a JSON object).
type Problem struct {
	Field   string
	Message string
}

// Checker is implemented by data structs with rules their tags cannot say (rules that
// span fields, patterns). Check runs after the tag rules, on data that decoded.
type Checker interface {
	Check() []Problem
}

// Job is what a handler sees of the job it runs.
type Job struct {
	ID          string
	Type        string
	Queue       string
	Attempt     int // 1 for the first attempt
	MaxAttempts int

	progress func(int)
}

// NewJob is how the worker (or a test) builds a Job; progress receives SetProgress's
// values and may be nil.
func NewJob(id, typ, queue string, attempt, maxAttempts int, progress func(int)) *Job {
	return &Job{ID: id, Type: typ, Queue: queue, Attempt: attempt, MaxAttempts: maxAttempts, progress: progress}
}

// SetProgress reports progress 0..100 (clamped). Reports are coalesced: calling it often
// costs nothing extra.
func (j *Job) SetProgress(p int) {
	if j.progress != nil {
		j.progress(min(max(p, 0), 100))
	}
}

// Handler runs one attempt of a job with its decoded data. Its result is stored as JSON.
// An error is retried with the job's backoff, unless it is Permanent. ctx ends at the
// job's timeout, when the job is cancelled, or at worker shutdown.
type Handler[T any] func(ctx context.Context, job *Job, data *T) (any, error)

// Kind is one job type with its data type erased, as the registry holds it.
type Kind interface {
	// Name is the job type, as jobs and the API name it.
	Name() string
	// Check decodes data strictly and checks it by the kind's rules; nil means valid.
	Check(data json.RawMessage) []Problem
	// Run decodes and checks data once and calls the handler. Data that fails the checks
	// is a permanent error (a job enqueued in SQL is held to the same rules).
	Run(ctx context.Context, job *Job, data json.RawMessage) (any, error)
	// DataType is the Go type of the kind's data, for generated documentation.
	DataType() reflect.Type
}

// NamePattern is the shape of a job type's name (the schema checks it too).
var NamePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.:-]{0,127}$`)

type kind[T any] struct {
	name   string
	handle Handler[T]
	checks []func(*T) []Problem
}

// Define declares the kind name whose data is T. T's field tags (and its Check method,
// when it has one) are its rules; checks add rules that depend on settings, such as an
// allow-list from the environment. handle may be nil for a kind that a process only
// checks (the API), never runs.
func Define[T any](name string, handle Handler[T], checks ...func(*T) []Problem) Kind {
	if !NamePattern.MatchString(name) {
		panic(fmt.Sprintf("kinds: %q does not match %s", name, NamePattern))
	}
	if reflect.TypeFor[T]().Kind() != reflect.Struct {
		panic(fmt.Sprintf("kinds: the data of %s must be a struct", name))
	}
	return &kind[T]{name: name, handle: handle, checks: checks}
}

func (k *kind[T]) Name() string { return k.name }

func (k *kind[T]) DataType() reflect.Type { return reflect.TypeFor[T]() }

func (k *kind[T]) Check(data json.RawMessage) []Problem {
	_, problems := parse(data, k.checks)
	return problems
}

// errNoHandler fails a job on a process that declared the kind without a handler.
var errNoHandler = errors.New("this process has no handler for the job type")

func (k *kind[T]) Run(ctx context.Context, job *Job, data json.RawMessage) (any, error) {
	v, problems := parse(data, k.checks)
	if problems != nil {
		return nil, InvalidData(problems)
	}
	if k.handle == nil {
		return nil, Permanent(errNoHandler)
	}
	return k.handle(ctx, job, v)
}

// Task is periodic work that comes with kinds (deleting their expired output files, for
// example). The maintenance leader runs each task every Every, on one worker at a time.
type Task struct {
	Name  string
	Every time.Duration
	Run   func(ctx context.Context) error
}

// Registry maps names to kinds. Build it before the processes start; it is read-only
// afterwards and safe for concurrent use.
type Registry struct {
	kinds map[string]Kind
	tasks []Task
}

// NewRegistry returns a registry of the given kinds.
func NewRegistry(ks ...Kind) *Registry {
	r := &Registry{kinds: map[string]Kind{}}
	for _, k := range ks {
		r.Add(k)
	}
	return r
}

// Add registers a kind; a name registered twice is a programming error and panics.
func (r *Registry) Add(k Kind) {
	if _, dup := r.kinds[k.Name()]; dup {
		panic(fmt.Sprintf("kinds: %s registered twice", k.Name()))
	}
	r.kinds[k.Name()] = k
}

// AddTask registers periodic work for the maintenance leader.
func (r *Registry) AddTask(t Task) {
	if t.Every <= 0 || t.Run == nil {
		panic(fmt.Sprintf("kinds: task %q needs an interval and a function", t.Name))
	}
	r.tasks = append(r.tasks, t)
}

// Names lists the registered kinds, sorted.
func (r *Registry) Names() []string { return slices.Sorted(maps.Keys(r.kinds)) }

// Kind returns a registered kind.
func (r *Registry) Kind(name string) (Kind, bool) {
	k, ok := r.kinds[name]
	return k, ok
}

// Known reports whether name is registered.
func (r *Registry) Known(name string) bool {
	_, ok := r.kinds[name]
	return ok
}

// Tasks lists the periodic tasks.
func (r *Registry) Tasks() []Task { return slices.Clone(r.tasks) }

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
