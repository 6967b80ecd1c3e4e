package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/pgqueue/queue/internal/jobs"
	"github.com/pgqueue/queue/internal/queue"
)

// fuzzValidator decodes and validates like the API, without a database: the known types
// are the migration's, and EMAIL_SEND has a small data validator.
func fuzzValidator() validator {
	reg := jobs.NewRegistry()
	noop := jobs.HandlerFunc(func(context.Context, *jobs.Job) (any, error) { return nil, nil })
	reg.Register("EMAIL_SEND", noop, func(data json.RawMessage) []jobs.FieldProblem {
		var m map[string]any
		if json.Unmarshal(data, &m) != nil {
			return []jobs.FieldProblem{{Message: "must be an object"}}
		}
		if _, ok := m["to"].(string); !ok {
			return []jobs.FieldProblem{{Field: "to", Message: "is required"}}
		}
		return nil
	})
	reg.Register("CLEANUP", noop, nil)
	known := []string{"EMAIL_SEND", "USER_NOTIFICATION", "DATA_EXPORT", "FILE_PROCESS", "CACHE_WARM", "CLEANUP"}
	return validator{knownToDB: func(t string) bool { return slices.Contains(known, t) }, registry: reg}
}

// checkOutcome holds for every body: an accepted job is valid by the engine's own rules;
// a refusal is one of the API's client errors, with a named field per problem.
func checkOutcome(t *testing.T, val validator, jobList []queue.NewJob, err error) {
	t.Helper()
	if err == nil {
		for i, j := range jobList {
			v := &queue.ValidationError{}
			j.Validate("", val.known, v)
			if v.Err() != nil {
				t.Fatalf("job %d accepted but invalid: %v", i, v)
			}
			if d := bytes.TrimSpace(j.Data); len(d) == 0 || d[0] != '{' || !json.Valid(d) {
				t.Fatalf("job %d accepted with data %q", i, j.Data)
			}
		}
		return
	}
	var he *httpError
	var ve *queue.ValidationError
	switch {
	case errors.As(err, &ve):
		if len(ve.Problems) == 0 {
			t.Fatal("validation error without problems")
		}
		for _, p := range ve.Problems {
			if p.Field == "" || p.Message == "" {
				t.Fatalf("problem without field or message: %+v", p)
			}
		}
	case errors.As(err, &he):
		if he.status != 400 {
			t.Fatalf("unexpected status %d", he.status)
		}
	default:
		t.Fatalf("unexpected error type %T: %v", err, err)
	}
}

// FuzzSubmitBody feeds arbitrary bodies to the submission and bulk decoders; the seed
// corpus lives in testdata/fuzz/FuzzSubmitBody. Run longer with
// go test -run '^$' -fuzz FuzzSubmitBody -fuzztime 30s ./internal/api/
func FuzzSubmitBody(f *testing.F) {
	f.Add([]byte(`{"type":"EMAIL_SEND","data":{"to":"a@example.com"},"options":{"priority":10}}`))
	f.Add([]byte(`{"jobs":[{"type":"CLEANUP","data":{}}]}`))
	val := fuzzValidator()
	f.Fuzz(func(t *testing.T, body []byte) {
		j, err := val.parseSubmission(body)
		checkOutcome(t, val, []queue.NewJob{j}, err)
		list, err := val.parseBulk(body)
		checkOutcome(t, val, list, err)
	})
}
