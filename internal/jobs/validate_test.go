package jobs

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/kinds"
)

func fields(problems []kinds.Problem) []string {
	if problems == nil {
		return nil
	}
	out := make([]string, len(problems))
	for i, p := range problems {
		out[i] = p.Field
	}
	return out
}

func TestBuiltinRegistersSixTypesWithoutDependencies(t *testing.T) {
	t.Parallel()
	// The API builds the registry only to check data; it needs no dependency.
	reg := Builtin(Deps{})
	require.Equal(t, []string{"CACHE_WARM", "CLEANUP", "DATA_EXPORT", "EMAIL_SEND", "FILE_PROCESS", "USER_NOTIFICATION"}, reg.Names())
	email, ok := reg.Kind("EMAIL_SEND")
	require.True(t, ok)
	require.Empty(t, email.Check(json.RawMessage(`{"to":"user@example.com","subject":"Welcome","template":"welcome"}`)))
	require.False(t, reg.Known("NOPE"))
	_, ok = reg.Kind("NOPE")
	require.False(t, ok)
	// Without configuration no host is known, so a URL's host is left to the run.
	cacheWarm, ok := reg.Kind("CACHE_WARM")
	require.True(t, ok)
	require.Empty(t, cacheWarm.Check(json.RawMessage(`{"cacheKey":"k","dataSource":"https://api.example.com/x"}`)))
	// Nothing to delete without a retention and a folder: no periodic task.
	require.Empty(t, reg.Tasks())
}

func TestValidation(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return strings.Repeat("a", n) }
	cases := []struct {
		name   string
		typ    string
		data   string
		fields []string // problems expected, by field; nil means valid
	}{
		// EMAIL_SEND
		{"email ok", TypeEmailSend, `{"to":"a@example.com","subject":"Hi","template":"welcome","variables":{"name":"Ann","n":1},"attachments":[{"filename":"a.txt","path":"docs/a.txt"}],"userId":"u1"}`, nil},
		{"email missing all", TypeEmailSend, `{}`, []string{"subject", "template", "to"}},
		{"email bad values", TypeEmailSend, `{"to":"not-an-address","subject":"a\r\nBcc: x@y.z","template":"Bad Name"}`, []string{"subject", "template", "to"}},
		{"email wrong types each reported", TypeEmailSend, `{"to":1,"subject":true,"template":"test","variables":[1]}`, []string{"subject", "to", "variables"}},
		{"email unknown fields each reported", TypeEmailSend, `{"to":"a@example.com","subject":"Hi","template":"test","cc":"x","bcc":"y"}`, []string{"bcc", "cc"}},
		{"email subject too long", TypeEmailSend, `{"to":"a@example.com","subject":"` + long(999) + `","template":"test"}`, []string{"subject"}},
		{"email attachment paths", TypeEmailSend, `{"to":"a@example.com","subject":"Hi","template":"test","attachments":[
			{"filename":"a/b","path":"../etc/passwd"},{"filename":"ok","path":"/etc/passwd"},{"filename":"ok","path":"a\u0000b"},{"filename":"ok","path":"x","extra":1}]}`,
			[]string{"attachments[0].filename", "attachments[0].path", "attachments[1].path", "attachments[2].path", "attachments[3].extra"}},
		{"email too many attachments", TypeEmailSend, `{"to":"a@example.com","subject":"Hi","template":"test","attachments":[` +
			strings.TrimSuffix(strings.Repeat(`{"filename":"f","path":"p"},`, 11), ",") + `]}`, []string{"attachments"}},
		{"email userId empty", TypeEmailSend, `{"to":"a@example.com","subject":"Hi","template":"test","userId":""}`, []string{"userId"}},
		{"email userId too long", TypeEmailSend, `{"to":"a@example.com","subject":"Hi","template":"test","userId":"` + long(129) + `"}`, []string{"userId"}},
		{"not an object", TypeEmailSend, `[1,2]`, []string{""}},

		// USER_NOTIFICATION
		{"notification ok", TypeUserNotification, `{"userId":"u1","title":"t","body":"b","type":"warning","metadata":{"k":[1,2]}}`, nil},
		{"notification needs userId", TypeUserNotification, `{"title":"t","body":"b"}`, []string{"userId"}},
		{"notification bad values", TypeUserNotification, `{"userId":"u","title":"` + long(201) + `","body":"","type":"urgent","metadata":[]}`, []string{"body", "metadata", "title", "type"}},

		// DATA_EXPORT
		{"export ok", TypeDataExport, `{"exportType":"csv","filters":{"type":"EMAIL_SEND","state":"completed","from":"2026-01-01T00:00:00Z","to":"2026-02-01T00:00:00.5Z"},"columns":["id","state"]}`, nil},
		{"export events ok", TypeDataExport, `{"exportType":"xlsx","filters":{"source":"job_events"},"columns":["job_id","at","worker"]}`, nil},
		{"export needs filters", TypeDataExport, `{"exportType":"pdf"}`, []string{"exportType", "filters"}},
		{"export filter keys", TypeDataExport, `{"exportType":"json","filters":{"source":"users","owner":"x","from":"yesterday"}}`, []string{"filters.from", "filters.owner", "filters.source"}},
		{"export columns from the allow-list of the source", TypeDataExport, `{"exportType":"json","filters":{"source":"job_events"},"columns":["job_id","data","password"]}`, []string{"columns[1]", "columns[2]"}},
		{"export columns unique and not empty", TypeDataExport, `{"exportType":"json","filters":{},"columns":[]}`, []string{"columns"}},
		{"export columns repeated", TypeDataExport, `{"exportType":"json","filters":{},"columns":["id","id"]}`, []string{"columns"}},
		{"export from after to", TypeDataExport, `{"exportType":"json","filters":{"from":"2026-02-01T00:00:00Z","to":"2026-01-01T00:00:00Z"}}`, []string{"filters.to"}},

		// FILE_PROCESS
		{"resize ok", TypeFileProcess, `{"filePath":"img/a.png","operation":"resize","options":{"width":100}}`, nil},
		{"resize needs a size", TypeFileProcess, `{"filePath":"a.png","operation":"resize","options":{}}`, []string{"options"}},
		{"resize out of range", TypeFileProcess, `{"filePath":"a.png","operation":"resize","options":{"width":0,"height":10001}}`, []string{"options.height", "options.width"}},
		{"resize options of another operation", TypeFileProcess, `{"filePath":"a.png","operation":"resize","options":{"width":5,"quality":5}}`, []string{"options.quality"}},
		{"compress quality", TypeFileProcess, `{"filePath":"a.jpg","operation":"compress","options":{"quality":101}}`, []string{"options.quality"}},
		{"convert needs format", TypeFileProcess, `{"filePath":"a.png","operation":"convert"}`, []string{"options.format"}},
		{"convert format", TypeFileProcess, `{"filePath":"a.png","operation":"convert","options":{"format":"bmp"}}`, []string{"options.format"}},
		{"extract ok", TypeFileProcess, `{"filePath":"notes/a.md","operation":"extract_text"}`, nil},
		{"file path dot-dot", TypeFileProcess, `{"filePath":"a/../../b","operation":"extract_text"}`, []string{"filePath"}},
		{"file path absolute", TypeFileProcess, `{"filePath":"/etc/passwd","operation":"extract_text"}`, []string{"filePath"}},
		{"file path NUL", TypeFileProcess, `{"filePath":"a\u0000.txt","operation":"extract_text"}`, []string{"filePath"}},
		{"file operation", TypeFileProcess, `{"filePath":"a","operation":"delete"}`, []string{"operation"}},

		// CACHE_WARM
		{"cache stats", TypeCacheWarm, `{"cacheKey":"dash:stats","dataSource":"stats","ttl":60}`, nil},
		{"cache query", TypeCacheWarm, `{"cacheKey":"counts","dataSource":"query:job_counts_by_type"}`, nil},
		{"cache url", TypeCacheWarm, `{"cacheKey":"ext","dataSource":"https://api.example.com/v1/x?y=1"}`, nil},
		{"cache bad", TypeCacheWarm, `{"cacheKey":"bad key!","dataSource":"query:drop_everything","ttl":0}`, []string{"cacheKey", "dataSource", "ttl"}},
		{"cache file url", TypeCacheWarm, `{"cacheKey":"k","dataSource":"file:///etc/passwd"}`, []string{"dataSource"}},
		{"cache url credentials", TypeCacheWarm, `{"cacheKey":"k","dataSource":"http://u:p@example.com/"}`, []string{"dataSource"}},
		{"cache ttl too long", TypeCacheWarm, `{"cacheKey":"k","dataSource":"stats","ttl":604801}`, []string{"ttl"}},
		{"cache ttl not an integer", TypeCacheWarm, `{"cacheKey":"k","dataSource":"stats","ttl":1.5}`, []string{"ttl"}},

		// CLEANUP
		{"cleanup ok", TypeCleanup, `{"targetType":"temp_files","olderThan":0,"path":"uploads","pattern":"*.tmp"}`, nil},
		{"cleanup sessions ok", TypeCleanup, `{"targetType":"expired_sessions","olderThan":86400000}`, nil},
		{"cleanup needs olderThan", TypeCleanup, `{"targetType":"old_logs"}`, []string{"olderThan"}},
		{"cleanup bad values", TypeCleanup, `{"targetType":"everything","olderThan":-1,"path":"../..","pattern":"[a-"}`, []string{"olderThan", "path", "pattern", "targetType"}},
		{"cleanup pattern with a slash", TypeCleanup, `{"targetType":"temp_files","olderThan":1,"pattern":"a/*"}`, []string{"pattern"}},
		{"cleanup sessions ignore path and pattern", TypeCleanup, `{"targetType":"expired_sessions","olderThan":1,"path":"x","pattern":"*"}`, nil},
	}
	reg := Builtin(Deps{})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			kind, ok := reg.Kind(c.typ)
			require.True(t, ok, c.typ)
			problems := kind.Check(json.RawMessage(c.data))
			require.Equal(t, c.fields, fields(problems), "%+v", problems)
			for _, p := range problems {
				require.NotEmpty(t, p.Message)
			}
		})
	}
}

func TestValidationMessages(t *testing.T) {
	t.Parallel()
	problems := emailKind(Deps{}).Check(json.RawMessage(`{"to":"x","subject":"","template":"test","variables":"s","bogus":1}`))
	require.Equal(t, []kinds.Problem{
		{Field: "bogus", Message: "unknown field"},
		{Field: "subject", Message: "is required"},
		{Field: "to", Message: "must be an e-mail address"},
		{Field: "variables", Message: "must be an object"},
	}, problems)

	// The pattern rules the tags cannot say come from the data types' Check methods.
	problems = emailKind(Deps{}).Check(json.RawMessage(`{"to":"a@example.com","subject":"Hi","template":"Bad Name"}`))
	require.Equal(t, []kinds.Problem{{Field: "template", Message: "must match ^[a-z0-9_-]{1,64}$"}}, problems)
	problems = cacheWarmKind(Deps{}).Check(json.RawMessage(`{"cacheKey":"bad key!","dataSource":"query:drop_everything"}`))
	require.Equal(t, []kinds.Problem{
		{Field: "cacheKey", Message: "must match ^[A-Za-z0-9:_.-]{1,200}$"},
		{Field: "dataSource", Message: "unknown query; one of: job_counts_by_state, job_counts_by_type, queue_paused"},
	}, problems)
}
