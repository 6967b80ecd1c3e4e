package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/pgqueue/queue/internal/jobs"
	"github.com/pgqueue/queue/internal/queue"
)

// fuzzValidator decodes and validates like the API, without a database: the accepted
// types are the built-in kinds with their real data rules, as cmd/api registers them.
// The client only checks here; nothing is enqueued, so it needs no pool.
func fuzzValidator(f *testing.F) validator {
	client, err := queue.NewClient(nil, queue.ClientConfig{Kinds: jobs.Builtin(jobs.Deps{})})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(client.Close)
	return validator{client: client}
}

// checkOutcome holds for every body: an accepted job is valid by the engine's own rules;
// a refusal is one of the API's client errors, with a named field per problem.
func checkOutcome(t *testing.T, val validator, jobList []queue.NewJob, err error) {
	t.Helper()
	if err == nil {
		for i, j := range jobList {
			v := &queue.ValidationError{}
			j.Validate("", val.client.Kinds(), v)
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
	f.Add([]byte(`{"type":"EMAIL_SEND","data":{"to":"a@example.com","subject":"Hi","template":"welcome"},"options":{"priority":10}}`))
	f.Add([]byte(`{"jobs":[{"type":"CLEANUP","data":{"targetType":"temp_files","olderThan":0},"options":{"queue":"maintenance"}}]}`))
	val := fuzzValidator(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		j, err := val.parseSubmission(body)
		checkOutcome(t, val, []queue.NewJob{j}, err)
		list, err := val.parseBulk(body)
		checkOutcome(t, val, list, err)
	})
}
