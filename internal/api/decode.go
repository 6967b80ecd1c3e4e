package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/pgqueue/queue/internal/queue"
)

// Request limits.
const (
	maxBodyBytes = 1 << 20
	maxJSONDepth = 32
)

// readBody reads the whole request body, refusing more than maxBodyBytes.
func readBody(c *gin.Context) ([]byte, error) {
	if c.Request.ContentLength > maxBodyBytes {
		return nil, errTooLarge()
	}
	b, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errTooLarge()
		}
		return nil, errBadRequest("the request body could not be read")
	}
	return b, nil
}

// checkJSON accepts one JSON value in UTF-8, nested at most maxJSONDepth levels, that
// Postgres can store as jsonb. An empty body is accepted only when allowEmpty (the body
// is optional).
func checkJSON(body []byte, allowEmpty bool) error {
	if len(bytes.TrimSpace(body)) == 0 {
		if allowEmpty {
			return nil
		}
		return errBadRequest("the body is empty; a JSON object is expected")
	}
	if !utf8.Valid(body) || !json.Valid(body) {
		return errBadRequest("the body is not JSON")
	}
	depth, storable := queue.ScanJSON(body)
	if depth > maxJSONDepth {
		return validation(Detail{Field: "body", Message: "JSON is nested deeper than " + strconv.Itoa(maxJSONDepth) + " levels"})
	}
	if !storable {
		return validation(Detail{Field: "body", Message: `contains \u0000 or an unpaired UTF-16 surrogate escape, which cannot be stored`})
	}
	return nil
}

// fieldName joins a prefix ("", "jobs[3].", "options.") and a key; an empty key is
// shown quoted, so that every problem names a field.
func fieldName(prefix, key string) string {
	if key == "" {
		key = `""`
	}
	return prefix + key
}

// objectName is how a prefix names its own object ("jobs[3]." → "jobs[3]", "" → "body").
func objectName(prefix string) string {
	if prefix == "" {
		return "body"
	}
	return strings.TrimSuffix(prefix, ".")
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

// decodeObject reads raw as a JSON object with only the allowed keys; each unknown key is
// a problem of its own. ok is false when raw is not an object.
func decodeObject(raw json.RawMessage, prefix string, allowed []string, v *queue.ValidationError) (map[string]json.RawMessage, bool) {
	raw = bytes.TrimSpace(raw)
	var m map[string]json.RawMessage
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &m) != nil {
		v.Add(objectName(prefix), "must be an object")
		return nil, false
	}
	var unknown []string
	for k := range m {
		if !slices.Contains(allowed, k) {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	for _, k := range unknown {
		v.Add(fieldName(prefix, k), "unknown field")
	}
	return m, true
}

func decodeString(raw json.RawMessage, field string, v *queue.ValidationError) *string {
	if isNull(raw) {
		return nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		v.Add(field, "must be a string")
		return nil
	}
	return &s
}

func decodeInt64(raw json.RawMessage, field string, v *queue.ValidationError) *int64 {
	if isNull(raw) {
		return nil
	}
	// A JSON number only: json.Number would also take "5", a string.
	if t := bytes.TrimSpace(raw); len(t) == 0 || (t[0] != '-' && (t[0] < '0' || t[0] > '9')) {
		v.Add(field, "must be an integer")
		return nil
	}
	var n json.Number
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&n); err != nil {
		v.Add(field, "must be an integer")
		return nil
	}
	i, err := n.Int64()
	if err != nil {
		v.Add(field, "must be an integer within range")
		return nil
	}
	return &i
}

func decodeInt(raw json.RawMessage, field string, v *queue.ValidationError) *int {
	p := decodeInt64(raw, field, v)
	if p == nil {
		return nil
	}
	if *p < -1<<31 || *p > 1<<31-1 {
		v.Add(field, "must be an integer within range")
		return nil
	}
	i := int(*p)
	return &i
}

func decodeBool(raw json.RawMessage, field string, v *queue.ValidationError) *bool {
	if isNull(raw) {
		return nil
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err != nil {
		v.Add(field, "must be true or false")
		return nil
	}
	return &b
}

func decodeRetention(raw json.RawMessage, field string, v *queue.ValidationError) *queue.Retention {
	if isNull(raw) {
		return nil
	}
	var r queue.Retention
	if err := json.Unmarshal(raw, &r); err != nil {
		v.Add(field, "must be a boolean or an integer")
		return nil
	}
	return &r
}

var (
	submissionKeys = []string{"type", "data", "options"}
	optionKeys     = []string{"queue", "group", "priority", "delay", "attempts", "backoff", "jobId", "removeOnComplete", "removeOnFail", "timeout"}
	backoffKeys    = []string{"type", "delay"}
)

// decodeJob reads one submission {type, data, options}, naming fields after prefix. It
// records decoding problems (wrong JSON types, unknown fields) only; ranges are checked
// by validateJobs.
// ok is false when raw is not an object (nothing more is checked then).
func decodeJob(raw json.RawMessage, prefix string, v *queue.ValidationError) (j queue.NewJob, ok bool) {
	m, ok := decodeObject(raw, prefix, submissionKeys, v)
	if !ok {
		return j, false
	}
	if t := decodeString(m["type"], prefix+"type", v); t != nil {
		j.Type = *t
	}
	if !isNull(m["data"]) {
		j.Data = m["data"]
	}
	if !isNull(m["options"]) {
		j.Options = decodeOptions(m["options"], prefix+"options.", v)
	}
	return j, true
}

func decodeOptions(raw json.RawMessage, prefix string, v *queue.ValidationError) queue.Options {
	var o queue.Options
	m, ok := decodeObject(raw, prefix, optionKeys, v)
	if !ok {
		return o
	}
	o.Queue = decodeString(m["queue"], prefix+"queue", v)
	o.Group = decodeString(m["group"], prefix+"group", v)
	o.Priority = decodeInt(m["priority"], prefix+"priority", v)
	o.Delay = decodeInt64(m["delay"], prefix+"delay", v)
	o.Attempts = decodeInt(m["attempts"], prefix+"attempts", v)
	o.JobID = decodeString(m["jobId"], prefix+"jobId", v)
	o.RemoveOnComplete = decodeRetention(m["removeOnComplete"], prefix+"removeOnComplete", v)
	o.RemoveOnFail = decodeRetention(m["removeOnFail"], prefix+"removeOnFail", v)
	o.Timeout = decodeInt64(m["timeout"], prefix+"timeout", v)
	if !isNull(m["backoff"]) {
		if bm, ok := decodeObject(m["backoff"], prefix+"backoff.", backoffKeys, v); ok {
			b := &queue.BackoffOption{Delay: decodeInt64(bm["delay"], prefix+"backoff.delay", v)}
			if t := decodeString(bm["type"], prefix+"backoff.type", v); t != nil {
				b.Type = *t
				if b.Type == "" {
					v.Add(prefix+"backoff.type", `must be "fixed" or "exponential"`)
				}
			}
			o.Backoff = b
		}
	}
	return o
}

var (
	limitKeys = []string{"concurrency", "rate", "groupConcurrency", "groupRate", "fair"}
	rateKeys  = []string{"limit", "period"}
)

// decodeLimits reads the body of PUT /api/queue/queues/:name. A field that is absent
// keeps its value and null clears it, so each field's presence is kept apart from its
// value. It records decoding problems only; ranges are checked by QueueLimits.Validate.
func decodeLimits(raw json.RawMessage, v *queue.ValidationError) queue.QueueLimits {
	var l queue.QueueLimits
	m, ok := decodeObject(raw, "", limitKeys, v)
	if !ok {
		return l
	}
	l.Concurrency = settingOf(m, "concurrency", decodeInt, v)
	l.Rate = settingOf(m, "rate", decodeRate, v)
	l.GroupConcurrency = settingOf(m, "groupConcurrency", decodeInt, v)
	l.GroupRate = settingOf(m, "groupRate", decodeRate, v)
	l.Fair = settingOf(m, "fair", decodeBool, v)
	return l
}

// settingOf reads m[key] as a settings change: absent is not Set, null clears.
func settingOf[T any](m map[string]json.RawMessage, key string,
	decode func(json.RawMessage, string, *queue.ValidationError) *T, v *queue.ValidationError) queue.Setting[T] {
	raw, ok := m[key]
	switch {
	case !ok:
		return queue.Setting[T]{}
	case isNull(raw):
		return queue.Clear[T]()
	}
	p := decode(raw, key, v)
	if p == nil {
		return queue.Setting[T]{} // its problem is recorded; nothing may be cleared by mistake
	}
	return queue.Setting[T]{Set: true, Value: p}
}

// decodeRate reads {"limit", "period"}; both are required.
func decodeRate(raw json.RawMessage, field string, v *queue.ValidationError) *queue.Rate {
	m, ok := decodeObject(raw, field+".", rateKeys, v)
	if !ok {
		return nil
	}
	var r queue.Rate
	if isNull(m["limit"]) {
		v.Add(field+".limit", "is required")
	} else if n := decodeInt(m["limit"], field+".limit", v); n != nil {
		r.Limit = *n
	}
	if isNull(m["period"]) {
		v.Add(field+".period", "is required")
	} else if n := decodeInt64(m["period"], field+".period", v); n != nil {
		r.Period = *n
	}
	return &r
}

// validator checks decoded submissions with the engine's checks: the type is one of the
// client's kinds, the data passes that kind's rules, the options are in range, and no
// jobId repeats in one request.
type validator struct {
	client *queue.Client
}

// validate checks jobs[i] named after prefixes[i], except those marked skip (not objects).
func (val validator) validate(jobList []queue.NewJob, prefixes []string, skip []bool, v *queue.ValidationError) {
	val.client.ValidateBatch(jobList, prefixes, skip, v)
}

// parseSubmission turns the body of POST /api/queue/jobs into a valid job, or an error
// for respondError (bad_request or validation_failed with every problem).
func (val validator) parseSubmission(body []byte) (queue.NewJob, error) {
	if err := checkJSON(body, false); err != nil {
		return queue.NewJob{}, err
	}
	v := &queue.ValidationError{}
	j, ok := decodeJob(body, "", v)
	jobList := []queue.NewJob{j}
	val.validate(jobList, []string{""}, []bool{!ok}, v)
	if err := v.Err(); err != nil {
		return queue.NewJob{}, err
	}
	return jobList[0], nil
}

// parseBulk turns the body of POST /api/queue/jobs/bulk into valid jobs, naming problems
// "jobs[i].field".
func (val validator) parseBulk(body []byte) ([]queue.NewJob, error) {
	if err := checkJSON(body, false); err != nil {
		return nil, err
	}
	v := &queue.ValidationError{}
	m, ok := decodeObject(body, "", []string{"jobs"}, v)
	if !ok {
		return nil, v
	}
	var raws []json.RawMessage
	if isNull(m["jobs"]) {
		v.Add("jobs", "is required")
		return nil, v
	}
	if err := json.Unmarshal(m["jobs"], &raws); err != nil {
		v.Add("jobs", "must be an array")
		return nil, v
	}
	if len(raws) == 0 || len(raws) > queue.MaxBulk {
		v.Add("jobs", "must hold 1..%d jobs", queue.MaxBulk)
		return nil, v
	}
	jobList := make([]queue.NewJob, len(raws))
	prefixes := make([]string, len(raws))
	skip := make([]bool, len(raws))
	for i, raw := range raws {
		prefixes[i] = "jobs[" + strconv.Itoa(i) + "]."
		var ok bool
		jobList[i], ok = decodeJob(raw, prefixes[i], v)
		skip[i] = !ok
	}
	val.validate(jobList, prefixes, skip, v)
	if err := v.Err(); err != nil {
		return nil, err
	}
	return jobList, nil
}
