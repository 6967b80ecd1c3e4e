package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/pgqueue/queue/internal/kinds"
)

// Submission limits, shared by the Go clients, the API and (in SQL) queue.enqueue.
const (
	DefaultPriority     = 5
	MinPriority         = 1
	MaxPriority         = 20
	DefaultAttempts     = 3
	MaxAttempts         = 100
	MaxDelayMs          = 365 * 24 * 3600 * 1000
	DefaultBackoffType  = "exponential"
	DefaultBackoffDelay = 1000
	MaxBackoffDelayMs   = 86400000
	MaxTimeoutMs        = 86400000
	MaxDataBytes        = 256 << 10
	MaxJobIDLength      = 255

	RetainForever = -1 // removeOnComplete/removeOnFail: false
	RemoveAtOnce  = 0  // removeOnComplete/removeOnFail: true

	DefaultQueue = "default"
)

// Priority names; the field itself is an integer.
const (
	PriorityLow    = 1
	PriorityNormal = 5
	PriorityHigh   = 10
	PriorityUrgent = 20
)

var (
	jobIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}$`)
	allDigits    = regexp.MustCompile(`^[0-9]+$`)
	queuePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
)

// ValidJobID reports whether id may be given as a custom job id.
func ValidJobID(id string) bool {
	return jobIDPattern.MatchString(id) && !allDigits.MatchString(id)
}

// ValidQueueName reports whether name may name a queue: 1..64 characters of
// [a-z0-9_-], starting with a letter or digit.
func ValidQueueName(name string) bool { return queuePattern.MatchString(name) }

// QueueNameRule is how a bad queue name is explained.
const QueueNameRule = "must be 1..64 characters of [a-z0-9_-] starting with a letter or digit"

// MaxGroupLength is the longest group name, in characters.
const MaxGroupLength = 128

// ValidGroup reports whether name may name a group: 1..128 characters of valid UTF-8,
// none of them a control character.
func ValidGroup(name string) bool {
	if !utf8.ValidString(name) || name == "" || utf8.RuneCountInString(name) > MaxGroupLength {
		return false
	}
	return !strings.ContainsFunc(name, unicode.IsControl)
}

// GroupRule is how a bad group name is explained.
const GroupRule = "must be 1..128 characters without control characters"

// Retention is removeOnComplete / removeOnFail: JSON true (0), false (-1) or an integer N
// (keep the N most recent finished jobs of that state).
type Retention int

// UnmarshalJSON accepts a boolean or an integer; range checks are Validate's.
func (r *Retention) UnmarshalJSON(b []byte) error {
	switch string(bytes.TrimSpace(b)) {
	case "true":
		*r = RemoveAtOnce
		return nil
	case "false":
		*r = RetainForever
		return nil
	}
	// A JSON number only: json.Number would also take "5", a string.
	if t := bytes.TrimSpace(b); len(t) == 0 || (t[0] != '-' && (t[0] < '0' || t[0] > '9')) {
		return errors.New("must be a boolean or an integer")
	}
	var n json.Number
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&n); err != nil {
		return errors.New("must be a boolean or an integer")
	}
	v, err := n.Int64()
	if err != nil || v < -1<<31 || v > 1<<31-1 {
		return errors.New("must be a boolean or an integer")
	}
	*r = Retention(v)
	return nil
}

// Options are a job's submission options, by their API names. A nil field takes its
// default (the API must tell "not given" from a zero it has to refuse; the public Go
// client's value options map onto these).
type Options struct {
	Queue            *string        `json:"queue,omitempty"`
	Group            *string        `json:"group,omitempty"`
	Priority         *int           `json:"priority,omitempty"`
	Delay            *int64         `json:"delay,omitempty"` // milliseconds
	Attempts         *int           `json:"attempts,omitempty"`
	Backoff          *BackoffOption `json:"backoff,omitempty"`
	JobID            *string        `json:"jobId,omitempty"`
	RemoveOnComplete *Retention     `json:"removeOnComplete,omitempty"`
	RemoveOnFail     *Retention     `json:"removeOnFail,omitempty"`
	Timeout          *int64         `json:"timeout,omitempty"` // milliseconds
}

// BackoffOption is the backoff option; a missing field takes its default (exponential,
// 1000 ms).
type BackoffOption struct {
	Type  string `json:"type,omitempty"`
	Delay *int64 `json:"delay,omitempty"`
}

// resolve fills the defaults.
func (b *BackoffOption) resolve() Backoff {
	out := Backoff{Type: DefaultBackoffType, Delay: DefaultBackoffDelay}
	if b == nil {
		return out
	}
	if b.Type != "" {
		out.Type = b.Type
	}
	if b.Delay != nil {
		out.Delay = *b.Delay
	}
	return out
}

// NewJob is a job to enqueue.
type NewJob struct {
	Type    string          `json:"type"`
	Data    json.RawMessage `json:"data"`
	Options Options         `json:"options"`
}

// FieldError is one problem with one field, named as the API names it ("options.priority").
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// ValidationError lists every problem found in a submission.
type ValidationError struct {
	Problems []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Field + ": " + p.Message
	}
	return "validation failed: " + strings.Join(parts, "; ")
}

// Add records a problem.
func (e *ValidationError) Add(field, format string, args ...any) {
	e.Problems = append(e.Problems, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// Err returns e when it holds a problem, else nil.
func (e *ValidationError) Err() error {
	if len(e.Problems) == 0 {
		return nil
	}
	return e
}

// Validate checks the type, data and options of a job, naming fields after prefix (""
// or "jobs[3]."). The type must be one of reg's kinds, and the data must pass that
// kind's rules.
func (j *NewJob) Validate(prefix string, reg *kinds.Registry, v *ValidationError) {
	var kind kinds.Kind
	if j.Type == "" {
		v.Add(prefix+"type", "is required")
	} else if k, ok := reg.Kind(j.Type); ok {
		kind = k
	} else {
		v.Add(prefix+"type", "unknown job type %q", j.Type)
	}
	data := bytes.TrimSpace(j.Data)
	switch {
	case len(data) == 0 || string(data) == "null":
		v.Add(prefix+"data", "is required")
	case data[0] != '{':
		v.Add(prefix+"data", "must be an object")
	case len(data) > MaxDataBytes:
		v.Add(prefix+"data", "must be at most 256 KiB")
	case kind != nil:
		for _, p := range kind.Check(data) {
			field := prefix + "data"
			switch {
			case p.Field == "":
			case strings.HasPrefix(p.Field, "["):
				field += p.Field
			default:
				field += "." + p.Field
			}
			v.Add(field, "%s", p.Message)
		}
	}
	j.Options.Validate(prefix+"options.", v)
}

// Validate checks every option's range, naming fields after prefix.
func (o *Options) Validate(prefix string, v *ValidationError) {
	if o.Queue != nil && !ValidQueueName(*o.Queue) {
		v.Add(prefix+"queue", QueueNameRule)
	}
	if o.Group != nil && !ValidGroup(*o.Group) {
		v.Add(prefix+"group", GroupRule)
	}
	if o.Priority != nil && (*o.Priority < MinPriority || *o.Priority > MaxPriority) {
		v.Add(prefix+"priority", "must be between %d and %d", MinPriority, MaxPriority)
	}
	if o.Delay != nil && (*o.Delay < 0 || *o.Delay > MaxDelayMs) {
		v.Add(prefix+"delay", "must be between 0 and %d (365 days in ms)", MaxDelayMs)
	}
	if o.Attempts != nil && (*o.Attempts < 1 || *o.Attempts > MaxAttempts) {
		v.Add(prefix+"attempts", "must be between 1 and %d", MaxAttempts)
	}
	if b := o.Backoff; b != nil {
		if b.Type != "" && b.Type != "fixed" && b.Type != "exponential" {
			v.Add(prefix+"backoff.type", `must be "fixed" or "exponential"`)
		}
		if b.Delay != nil && (*b.Delay < 0 || *b.Delay > MaxBackoffDelayMs) {
			v.Add(prefix+"backoff.delay", "must be between 0 and %d", MaxBackoffDelayMs)
		}
	}
	if o.JobID != nil && !ValidJobID(*o.JobID) {
		v.Add(prefix+"jobId", "must be 1..255 characters of [A-Za-z0-9_.:-], start with a letter or digit, and not be all digits")
	}
	if o.RemoveOnComplete != nil && *o.RemoveOnComplete < RetainForever {
		v.Add(prefix+"removeOnComplete", "must be a boolean or an integer >= -1")
	}
	if o.RemoveOnFail != nil && *o.RemoveOnFail < RetainForever {
		v.Add(prefix+"removeOnFail", "must be a boolean or an integer >= -1")
	}
	if o.Timeout != nil && (*o.Timeout < 1 || *o.Timeout > MaxTimeoutMs) {
		v.Add(prefix+"timeout", "must be between 1 and %d", MaxTimeoutMs)
	}
}
