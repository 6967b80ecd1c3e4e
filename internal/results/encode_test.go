package results

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/queue"
)

// sameJSON fails unless both documents decode to the same value.
func sameJSON(t *testing.T, want, got []byte) {
	t.Helper()
	require.True(t, json.Valid(got), "not JSON: %s", got)
	var w, g any
	require.NoError(t, json.Unmarshal(want, &w))
	require.NoError(t, json.Unmarshal(got, &g))
	require.Equal(t, w, g, "\nwant %s\n got %s", want, got)
}

func TestEncodersMatchEncodingJSON(t *testing.T) {
	at := queue.Timestamp{Time: time.Date(2026, 11, 27, 13, 5, 7, 123456789, time.FixedZone("X", 3600))}
	msg := "boom: \"quoted\" <tag> & \\ \n\t\u00e9\u2028 \xff"
	full := queue.Job{
		ID: "order-42.a:b_c", Type: "EMAIL_SEND", Queue: "mail.high-1", State: queue.StateFailed,
		Group:    &msg,
		Data:     json.RawMessage(`{"to": "a@b.c", "n": [1, 2.5, null, true], "s": "<&>"}`),
		Priority: 20, AttemptsMade: 3, MaxAttempts: 3, Progress: 40,
		Result: json.RawMessage(`{"ok": false}`), Error: &msg,
		Errors: []queue.AttemptError{{Attempt: 1, Message: msg, At: "2026-11-27T13:05:07.123Z"},
			{Attempt: 2, Message: "plain", At: "x"}},
		CreatedAt: at, RunAt: at, StartedAt: &at, FinishedAt: &at,
	}
	// Every field the API shows must be set above, so a new one cannot be forgotten here.
	v := reflect.ValueOf(full)
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if tag := f.Tag.Get("json"); tag != "" && tag != "-" {
			require.False(t, v.Field(i).IsZero(), "sample job leaves %s unset", f.Name)
		}
	}
	jobs := map[string]queue.Job{
		"full":    full,
		"fresh":   {ID: "17", Type: "CLEANUP", Queue: queue.DefaultQueue, State: queue.StateWaiting, Data: json.RawMessage(`{}`), Priority: 5, MaxAttempts: 3, Errors: []queue.AttemptError{}, CreatedAt: at, RunAt: at},
		"nils":    {ID: "1", Type: "CLEANUP", State: queue.StateActive, CreatedAt: at, RunAt: at},
		"bad raw": {ID: "2", Type: "CLEANUP", State: queue.StateCompleted, Data: json.RawMessage(`{}`), Result: json.RawMessage(`{not json`), CreatedAt: at, RunAt: at},
	}
	for name, j := range jobs {
		t.Run(name, func(t *testing.T) {
			got := appendJob(nil, &j)
			want, err := json.Marshal(&j)
			if name == "bad raw" {
				// json.Marshal refuses the document; we store the job with a null result.
				require.Error(t, err)
				j.Result = nil
				want, err = json.Marshal(&j)
			}
			require.NoError(t, err)
			sameJSON(t, want, got)
		})
	}

	p := 55
	for _, ev := range []Event{
		JobEvent(&queue.Job{ID: "order-42", Type: "EMAIL_SEND", Queue: "mail"}, queue.StateCompleted),
		JobEvent(&queue.Job{ID: "order-43", Type: "EMAIL_SEND"}, queue.StateActive), // no queue: omitted
		ProgressEvent(&full, 7),
		{Event: "progress", ID: "9", Type: "DATA_EXPORT", Queue: queue.DefaultQueue, Progress: &p, At: at},
		{Event: "job", ID: msg, Type: "X", At: at},
	} {
		want, err := json.Marshal(ev)
		require.NoError(t, err)
		sameJSON(t, want, appendEvent(nil, &ev))
	}
	require.Equal(t, `"a\u003cb"`, string(appendString(nil, "a<b")))
	require.Equal(t, `"plain-id_1.2:3"`, string(appendString(nil, "plain-id_1.2:3")))
	require.True(t, strings.HasPrefix(string(appendTime(nil, at.Time)), `"2026-11-27T12:05:07.123Z`))
}

func TestDecodeEventsTakesArraysAndSingleEvents(t *testing.T) {
	a := JobEvent(&queue.Job{ID: "1", Type: "CLEANUP", Queue: "q1"}, queue.StateActive)
	b := JobEvent(&queue.Job{ID: "2", Type: "CLEANUP", Queue: queue.DefaultQueue}, queue.StateCompleted)
	batch := string(append(appendEvent(append(appendEvent([]byte("["), &a), ','), &b), ']'))
	got := decodeEvents(batch)
	require.Len(t, got, 2)
	require.Equal(t, []string{"1", "2"}, []string{got[0].ID, got[1].ID})
	require.Equal(t, queue.StateCompleted, got[1].State)
	require.Equal(t, []string{"q1", queue.DefaultQueue}, []string{got[0].Queue, got[1].Queue})

	one := decodeEvents(string(appendEvent(nil, &a)))
	require.Len(t, one, 1)
	require.Equal(t, queue.StateActive, one[0].State)

	require.Empty(t, decodeEvents("not json"))
	require.Empty(t, decodeEvents("[{]"))
}
