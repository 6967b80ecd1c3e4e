package jobs

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/config"
)

func fields(problems []FieldProblem) []string {
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
	// The API builds the registry only to validate; it needs no dependency.
	reg, err := Builtin(Deps{})
	require.NoError(t, err)
	require.Equal(t, []string{"CACHE_WARM", "CLEANUP", "DATA_EXPORT", "EMAIL_SEND", "FILE_PROCESS", "USER_NOTIFICATION"}, reg.Types())
	require.Empty(t, reg.Validate("EMAIL_SEND", json.RawMessage(`{"to":"user@example.com","subject":"Welcome","template":"welcome"}`)))
	require.Equal(t, []FieldProblem{{Field: "type", Message: "unknown job type"}}, reg.Validate("NOPE", json.RawMessage(`{}`)))
	// Without configuration no host is known, so a URL's host is left to the run.
	require.Empty(t, reg.Validate("CACHE_WARM", json.RawMessage(`{"cacheKey":"k","dataSource":"https://api.example.com/x"}`)))
}

func TestBuiltinValidatesCacheWarmHostsWithConfig(t *testing.T) {
	t.Parallel()
	cfg, err := config.LoadFrom(func(k string) (string, bool) {
		if k == "CACHE_WARM_ALLOWED_HOSTS" {
			return "api.example.com", true
		}
		return "", false
	})
	require.NoError(t, err)
	reg, err := Builtin(Deps{Config: cfg})
	require.NoError(t, err)
	require.Empty(t, reg.Validate("CACHE_WARM", json.RawMessage(`{"cacheKey":"k","dataSource":"https://API.example.com:443/x"}`)))
	require.Empty(t, reg.Validate("CACHE_WARM", json.RawMessage(`{"cacheKey":"k","dataSource":"stats"}`)))
	require.Equal(t, []string{"dataSource"}, fields(reg.Validate("CACHE_WARM", json.RawMessage(`{"cacheKey":"k","dataSource":"http://169.254.169.254/latest"}`))))
}

func TestValidation(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return strings.Repeat("a", n) }
	cases := []struct {
		name     string
		validate Validator
		data     string
		fields   []string // problems expected, by field; nil means valid
	}{
		// EMAIL_SEND
		{"email ok", ValidateEmail, `{"to":"a@example.com","subject":"Hi","template":"welcome","variables":{"name":"Ann","n":1},"attachments":[{"filename":"a.txt","path":"docs/a.txt"}],"userId":"u1"}`, nil},
		{"email missing all", ValidateEmail, `{}`, []string{"subject", "template", "to"}},
		{"email bad values", ValidateEmail, `{"to":"not-an-address","subject":"a\r\nBcc: x@y.z","template":"Bad Name"}`, []string{"subject", "template", "to"}},
		{"email wrong types each reported", ValidateEmail, `{"to":1,"subject":true,"template":"test","variables":[1]}`, []string{"subject", "to", "variables"}},
		{"email unknown fields each reported", ValidateEmail, `{"to":"a@example.com","subject":"Hi","template":"test","cc":"x","bcc":"y"}`, []string{"bcc", "cc"}},
		{"email subject too long", ValidateEmail, `{"to":"a@example.com","subject":"` + long(999) + `","template":"test"}`, []string{"subject"}},
		{"email attachment paths", ValidateEmail, `{"to":"a@example.com","subject":"Hi","template":"test","attachments":[
			{"filename":"a/b","path":"../etc/passwd"},{"filename":"ok","path":"/etc/passwd"},{"filename":"ok","path":"a\u0000b"},{"filename":"ok","path":"x","extra":1}]}`,
			[]string{"attachments[0].filename", "attachments[0].path", "attachments[1].path", "attachments[2].path", "attachments[3].extra"}},
		{"email too many attachments", ValidateEmail, `{"to":"a@example.com","subject":"Hi","template":"test","attachments":[` +
			strings.TrimSuffix(strings.Repeat(`{"filename":"f","path":"p"},`, 11), ",") + `]}`, []string{"attachments"}},
		{"email userId empty", ValidateEmail, `{"to":"a@example.com","subject":"Hi","template":"test","userId":""}`, []string{"userId"}},
		{"email userId too long", ValidateEmail, `{"to":"a@example.com","subject":"Hi","template":"test","userId":"` + long(129) + `"}`, []string{"userId"}},
		{"not an object", ValidateEmail, `[1,2]`, []string{""}},

		// USER_NOTIFICATION
		{"notification ok", ValidateNotification, `{"userId":"u1","title":"t","body":"b","type":"warning","metadata":{"k":[1,2]}}`, nil},
		{"notification needs userId", ValidateNotification, `{"title":"t","body":"b"}`, []string{"userId"}},
		{"notification bad values", ValidateNotification, `{"userId":"u","title":"` + long(201) + `","body":"","type":"urgent","metadata":[]}`, []string{"body", "metadata", "title", "type"}},

		// DATA_EXPORT
		{"export ok", ValidateExport, `{"exportType":"csv","filters":{"type":"EMAIL_SEND","state":"completed","from":"2026-01-01T00:00:00Z","to":"2026-02-01T00:00:00.5Z"},"columns":["id","state"]}`, nil},
		{"export events ok", ValidateExport, `{"exportType":"xlsx","filters":{"source":"job_events"},"columns":["job_id","at","worker"]}`, nil},
		{"export needs filters", ValidateExport, `{"exportType":"pdf"}`, []string{"exportType", "filters"}},
		{"export filter keys", ValidateExport, `{"exportType":"json","filters":{"source":"users","owner":"x","from":"yesterday"}}`, []string{"filters.from", "filters.owner", "filters.source"}},
		{"export columns from the allow-list of the source", ValidateExport, `{"exportType":"json","filters":{"source":"job_events"},"columns":["job_id","data","password"]}`, []string{"columns[1]", "columns[2]"}},
		{"export columns unique and not empty", ValidateExport, `{"exportType":"json","filters":{},"columns":[]}`, []string{"columns"}},
		{"export columns repeated", ValidateExport, `{"exportType":"json","filters":{},"columns":["id","id"]}`, []string{"columns"}},
		{"export from after to", ValidateExport, `{"exportType":"json","filters":{"from":"2026-02-01T00:00:00Z","to":"2026-01-01T00:00:00Z"}}`, []string{"filters.to"}},

		// FILE_PROCESS
		{"resize ok", ValidateFileProcess, `{"filePath":"img/a.png","operation":"resize","options":{"width":100}}`, nil},
		{"resize needs a size", ValidateFileProcess, `{"filePath":"a.png","operation":"resize","options":{}}`, []string{"options"}},
		{"resize out of range", ValidateFileProcess, `{"filePath":"a.png","operation":"resize","options":{"width":0,"height":10001}}`, []string{"options.height", "options.width"}},
		{"resize options of another operation", ValidateFileProcess, `{"filePath":"a.png","operation":"resize","options":{"width":5,"quality":5}}`, []string{"options.quality"}},
		{"compress quality", ValidateFileProcess, `{"filePath":"a.jpg","operation":"compress","options":{"quality":101}}`, []string{"options.quality"}},
		{"convert needs format", ValidateFileProcess, `{"filePath":"a.png","operation":"convert"}`, []string{"options.format"}},
		{"convert format", ValidateFileProcess, `{"filePath":"a.png","operation":"convert","options":{"format":"bmp"}}`, []string{"options.format"}},
		{"extract ok", ValidateFileProcess, `{"filePath":"notes/a.md","operation":"extract_text"}`, nil},
		{"file path dot-dot", ValidateFileProcess, `{"filePath":"a/../../b","operation":"extract_text"}`, []string{"filePath"}},
		{"file path absolute", ValidateFileProcess, `{"filePath":"/etc/passwd","operation":"extract_text"}`, []string{"filePath"}},
		{"file path NUL", ValidateFileProcess, `{"filePath":"a\u0000.txt","operation":"extract_text"}`, []string{"filePath"}},
		{"file operation", ValidateFileProcess, `{"filePath":"a","operation":"delete"}`, []string{"operation"}},

		// CACHE_WARM
		{"cache stats", ValidateCacheWarm, `{"cacheKey":"dash:stats","dataSource":"stats","ttl":60}`, nil},
		{"cache query", ValidateCacheWarm, `{"cacheKey":"counts","dataSource":"query:job_counts_by_type"}`, nil},
		{"cache url", ValidateCacheWarm, `{"cacheKey":"ext","dataSource":"https://api.example.com/v1/x?y=1"}`, nil},
		{"cache bad", ValidateCacheWarm, `{"cacheKey":"bad key!","dataSource":"query:drop_everything","ttl":0}`, []string{"cacheKey", "dataSource", "ttl"}},
		{"cache file url", ValidateCacheWarm, `{"cacheKey":"k","dataSource":"file:///etc/passwd"}`, []string{"dataSource"}},
		{"cache url credentials", ValidateCacheWarm, `{"cacheKey":"k","dataSource":"http://u:p@example.com/"}`, []string{"dataSource"}},
		{"cache ttl too long", ValidateCacheWarm, `{"cacheKey":"k","dataSource":"stats","ttl":604801}`, []string{"ttl"}},
		{"cache ttl not an integer", ValidateCacheWarm, `{"cacheKey":"k","dataSource":"stats","ttl":1.5}`, []string{"ttl"}},

		// CLEANUP
		{"cleanup ok", ValidateCleanup, `{"targetType":"temp_files","olderThan":0,"path":"uploads","pattern":"*.tmp"}`, nil},
		{"cleanup sessions ok", ValidateCleanup, `{"targetType":"expired_sessions","olderThan":86400000}`, nil},
		{"cleanup needs olderThan", ValidateCleanup, `{"targetType":"old_logs"}`, []string{"olderThan"}},
		{"cleanup bad values", ValidateCleanup, `{"targetType":"everything","olderThan":-1,"path":"../..","pattern":"[a-"}`, []string{"olderThan", "path", "pattern", "targetType"}},
		{"cleanup pattern with a slash", ValidateCleanup, `{"targetType":"temp_files","olderThan":1,"pattern":"a/*"}`, []string{"pattern"}},
		{"cleanup sessions ignore path and pattern", ValidateCleanup, `{"targetType":"expired_sessions","olderThan":1,"path":"x","pattern":"*"}`, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			problems := c.validate(json.RawMessage(c.data))
			require.Equal(t, c.fields, fields(problems), "%+v", problems)
			for _, p := range problems {
				require.NotEmpty(t, p.Message)
			}
		})
	}
}

func TestValidationMessages(t *testing.T) {
	t.Parallel()
	problems := ValidateEmail(json.RawMessage(`{"to":"x","subject":"","template":"test","variables":"s","bogus":1}`))
	require.Equal(t, []FieldProblem{
		{Field: "bogus", Message: "unknown field"},
		{Field: "subject", Message: "is required"},
		{Field: "to", Message: "must be an e-mail address"},
		{Field: "variables", Message: "must be an object"},
	}, problems)
}
