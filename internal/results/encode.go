package results

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/pgqueue/queue/internal/queue"
)

// The publisher encodes every event and snapshot a busy worker produces, so it writes
// them by hand instead of through encoding/json's reflection (which also re-validates
// each RawMessage and Timestamp it embeds). The documents are those json.Marshal gives,
// field for field (TestEncodersMatchEncodingJSON).

// appendEvent appends ev as a JSON object.
func appendEvent(b []byte, ev *Event) []byte {
	b = append(b, `{"event":`...)
	b = appendString(b, ev.Event)
	b = append(b, `,"id":`...)
	b = appendString(b, ev.ID)
	b = append(b, `,"type":`...)
	b = appendString(b, ev.Type)
	if ev.Queue != "" {
		b = append(b, `,"queue":`...)
		b = appendString(b, ev.Queue)
	}
	if ev.State != "" {
		b = append(b, `,"state":`...)
		b = appendString(b, ev.State)
	}
	if ev.Progress != nil {
		b = append(b, `,"progress":`...)
		b = strconv.AppendInt(b, int64(*ev.Progress), 10)
	}
	b = append(b, `,"at":`...)
	b = appendTime(b, ev.At.Time)
	return append(b, '}')
}

// appendJob appends the API's JSON object of j.
func appendJob(b []byte, j *queue.Job) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, j.ID)
	b = append(b, `,"type":`...)
	b = appendString(b, j.Type)
	b = append(b, `,"queue":`...)
	b = appendString(b, j.Queue)
	b = append(b, `,"group":`...)
	if j.Group == nil {
		b = append(b, "null"...)
	} else {
		b = appendString(b, *j.Group)
	}
	b = append(b, `,"state":`...)
	b = appendString(b, j.State)
	b = append(b, `,"data":`...)
	b = appendRaw(b, j.Data)
	b = append(b, `,"priority":`...)
	b = strconv.AppendInt(b, int64(j.Priority), 10)
	b = append(b, `,"attemptsMade":`...)
	b = strconv.AppendInt(b, int64(j.AttemptsMade), 10)
	b = append(b, `,"maxAttempts":`...)
	b = strconv.AppendInt(b, int64(j.MaxAttempts), 10)
	b = append(b, `,"progress":`...)
	b = strconv.AppendInt(b, int64(j.Progress), 10)
	b = append(b, `,"result":`...)
	b = appendRaw(b, j.Result)
	b = append(b, `,"error":`...)
	if j.Error == nil {
		b = append(b, "null"...)
	} else {
		b = appendString(b, *j.Error)
	}
	b = append(b, `,"errors":`...)
	if j.Errors == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, e := range j.Errors {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"attempt":`...)
			b = strconv.AppendInt(b, int64(e.Attempt), 10)
			b = append(b, `,"message":`...)
			b = appendString(b, e.Message)
			b = append(b, `,"at":`...)
			b = appendString(b, e.At)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, `,"createdAt":`...)
	b = appendTime(b, j.CreatedAt.Time)
	b = append(b, `,"runAt":`...)
	b = appendTime(b, j.RunAt.Time)
	b = append(b, `,"startedAt":`...)
	b = appendTimePtr(b, j.StartedAt)
	b = append(b, `,"finishedAt":`...)
	b = appendTimePtr(b, j.FinishedAt)
	return append(b, '}')
}

func appendTimePtr(b []byte, t *queue.Timestamp) []byte {
	if t == nil {
		return append(b, "null"...)
	}
	return appendTime(b, t.Time)
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, queue.TimeFormat)
	return append(b, '"')
}

// appendRaw embeds a JSON document; one that is missing or not valid JSON is null, as
// json.Marshal would refuse it.
func appendRaw(b []byte, raw json.RawMessage) []byte {
	if len(raw) == 0 || !json.Valid(raw) {
		return append(b, "null"...)
	}
	return append(b, raw...)
}

// appendString quotes s. Ids, types and states are plain ASCII and are copied as they
// are; anything else (error messages) goes through encoding/json's escaping.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
