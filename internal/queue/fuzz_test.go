package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/testutil"
)

// FuzzEnqueueArguments: queue.enqueue either inserts a job or raises 22023 naming the
// problem, never another error and never a half-written job; and it agrees with the Go
// checks (kinds.NamePattern, ValidJobID, Options.Validate) on what is valid.
func FuzzEnqueueArguments(f *testing.F) {
	f.Add(testutil.AnyName, `{}`, 5, int64(0), 3, "job-1", `{}`)
	f.Add(testutil.AnyName, `{"to":"a@b.c"}`, 0, int64(-1), 101, "123", `{"timeout":0}`)
	f.Add("bad type", `{}`, 5, int64(0), 3, "", `{"queue":"Emails"}`)
	f.Add("T9", `{}`, 5, int64(0), 3, "", `{"queue":"emails-2"}`)
	f.Add("NOPE", `[]`, 21, int64(1), 1, "a/b", `{"backoff":{"type":"linear"}}`)
	f.Add(testutil.AnyName, `{"a":1}`, 20, int64(1000), 100, "", `{"removeOnComplete":true,"removeOnFail":-1,"backoff":{"delay":86400000}}`)
	f.Add(testutil.AnyName, `{}`, 1, int64(0), 1, "x\x00y", `{"timeout":1.5}`)
	f.Add(testutil.AnyName, `null`, 1, int64(0), 1, "ok", `{"colour":1}`)
	pool := testutil.NewPool(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, typ, data string, priority int, delayMs int64, attempts int, jobID, options string) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck
		var id *string
		if jobID != "" {
			id = &jobID
		}
		var got string
		err = tx.QueryRow(ctx, `SELECT queue.enqueue($1, $2::text::jsonb, $3, $4 * interval '1 millisecond', $5, $6, $7::text::jsonb)`,
			typ, data, int32(priority), delayMs, int32(attempts), id, options).Scan(&got)
		var pg *pgconn.PgError
		if err != nil {
			if !errors.As(err, &pg) {
				t.Fatalf("not a database error: %v", err)
			}
			// 22023 is ours. The others are Postgres refusing the arguments before the
			// function runs: not JSON (22P02), a NUL or bad UTF-8 in text (22021), an
			// out-of-range number or interval (22003, 22008, 22015).
			switch pg.Code {
			case "22023", "22P02", "22021", "22003", "22008", "22015":
			default:
				t.Fatalf("unexpected error %s: %s", pg.Code, pg.Message)
			}
			return
		}
		if !kinds.NamePattern.MatchString(typ) {
			t.Fatalf("SQL accepted type %q that the kinds contract refuses", typ)
		}
		if jobID != "" && !queue.ValidJobID(jobID) {
			t.Fatalf("SQL accepted job id %q that Go refuses", jobID)
		}
		if priority < 1 || priority > 20 || attempts < 1 || attempts > 100 || delayMs < 0 {
			t.Fatalf("SQL accepted priority %d attempts %d delay %d", priority, attempts, delayMs)
		}
		var o queue.Options
		if json.Unmarshal([]byte(options), &o) == nil {
			v := &queue.ValidationError{}
			o.Validate("", v)
			if v.Err() != nil {
				t.Fatalf("SQL accepted options %s that Go refuses: %v", options, v)
			}
		}
		var n int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM queue.job_events WHERE job_id = $1", got).Scan(&n); err != nil || n > 1 {
			t.Fatalf("audit rows for %s: %d (%v)", got, n, err)
		}
	})
}
