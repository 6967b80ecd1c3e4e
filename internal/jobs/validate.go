package jobs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/go-playground/validator/v10"
)

// The data checks of every type run in two steps: decodeStrict turns the JSON into the
// payload struct, reporting each unknown field and each value of the wrong JSON type on
// its own (encoding/json stops at the first); then go-playground/validator checks the
// struct tags. Validators are pure: the API runs them without any dependency.

var validate = newValidator()

func newValidator() *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			return ""
		}
		return name
	})
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	must(v.RegisterValidation("relpath", func(fl validator.FieldLevel) bool {
		return relPathProblem(fl.Field().String()) == ""
	}))
	must(v.RegisterValidation("nocrlf", func(fl validator.FieldLevel) bool {
		return !strings.ContainsAny(fl.Field().String(), "\r\n")
	}))
	must(v.RegisterValidation("filename", func(fl validator.FieldLevel) bool {
		s := fl.Field().String()
		return !strings.ContainsFunc(s, func(r rune) bool { return r == '/' || r == '\\' || r < 0x20 || r == 0x7f })
	}))
	must(v.RegisterValidation("templatename", func(fl validator.FieldLevel) bool {
		return templateName.MatchString(fl.Field().String())
	}))
	must(v.RegisterValidation("cachekey", func(fl validator.FieldLevel) bool {
		return cacheKeyPattern.MatchString(fl.Field().String())
	}))
	must(v.RegisterValidation("globpattern", func(fl validator.FieldLevel) bool {
		p := fl.Field().String()
		_, err := path.Match(p, "")
		return err == nil && !strings.ContainsAny(p, "/\x00")
	}))
	must(v.RegisterValidation("rfc3339", func(fl validator.FieldLevel) bool {
		_, err := time.Parse(time.RFC3339, fl.Field().String())
		return err == nil
	}))
	return v
}

var (
	templateName    = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)
	cacheKeyPattern = regexp.MustCompile(`^[A-Za-z0-9:_.-]{1,200}$`)
)

// maxPathLen bounds a relative path; Linux's PATH_MAX is 4096.
const maxPathLen = 1024

// relPathProblem says what is wrong with a path that must stay under its root: it is
// relative, has no ".." segment and no NUL. An empty result means the path is fine. The
// run-time os.Root open still refuses symlinks that lead out.
func relPathProblem(p string) string {
	switch {
	case p == "":
		return "must not be empty"
	case len(p) > maxPathLen:
		return fmt.Sprintf("must be at most %d bytes", maxPathLen)
	case strings.ContainsRune(p, 0):
		return "must not contain NUL"
	case strings.HasPrefix(p, "/") || strings.HasPrefix(p, `\`):
		return "must be a relative path, not an absolute one"
	}
	for _, seg := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' }) {
		if seg == ".." {
			return "must not contain .. segments"
		}
	}
	return ""
}

// parseData decodes and checks data into a T; extra runs after the tag checks for rules
// that span fields. Handlers call it too, so a job stored without the API's check (SQL
// enqueue) is held to the same rules.
func parseData[T any](data json.RawMessage, extra func(*T) []FieldProblem) (*T, []FieldProblem) {
	v := new(T)
	problems := decodeStrict(data, v)
	if len(problems) == 1 && problems[0].Field == "" {
		return nil, problems
	}
	problems = append(problems, structProblems(v, problems)...)
	if extra != nil {
		problems = append(problems, withoutFields(extra(v), problems)...)
	}
	if len(problems) > 0 {
		slices.SortStableFunc(problems, func(a, b FieldProblem) int { return strings.Compare(a.Field, b.Field) })
		return nil, problems
	}
	return v, nil
}

// validatorFor adapts parseData to a Validator.
func validatorFor[T any](extra func(*T) []FieldProblem) Validator {
	return func(data json.RawMessage) []FieldProblem {
		_, problems := parseData(data, extra)
		return problems
	}
}

// invalidData is the permanent error of a handler given data that does not pass its
// type's checks.
func invalidData(problems []FieldProblem) error {
	msgs := make([]string, len(problems))
	for i, p := range problems {
		msgs[i] = p.Field + ": " + p.Message
	}
	return Permanentf("invalid data: %s", strings.Join(msgs, "; "))
}

// withoutFields drops the problems of fields (or their children) already reported, so a
// value of the wrong type is not also "required".
func withoutFields(problems, reported []FieldProblem) []FieldProblem {
	var out []FieldProblem
	for _, p := range problems {
		if !slices.ContainsFunc(reported, func(r FieldProblem) bool {
			return p.Field == r.Field || strings.HasPrefix(p.Field, r.Field+".") || strings.HasPrefix(p.Field, r.Field+"[")
		}) {
			out = append(out, p)
		}
	}
	return out
}

func structProblems(v any, reported []FieldProblem) []FieldProblem {
	err := validate.Struct(v)
	if err == nil {
		return nil
	}
	verrs, ok := err.(validator.ValidationErrors)
	if !ok {
		return []FieldProblem{{Message: err.Error()}}
	}
	var out []FieldProblem
	for _, fe := range verrs {
		// Namespace is "structName.field.sub"; drop the struct name.
		_, field, _ := strings.Cut(fe.Namespace(), ".")
		out = append(out, FieldProblem{Field: field, Message: fieldMessage(fe)})
	}
	return withoutFields(out, reported)
}

func fieldMessage(fe validator.FieldError) string {
	kind := fe.Kind()
	isString := kind == reflect.String
	isList := kind == reflect.Slice || kind == reflect.Map || kind == reflect.Array
	switch fe.Tag() {
	case "required":
		return "is required"
	case "email":
		return "must be an e-mail address"
	case "oneof":
		return "must be one of " + strings.Join(strings.Fields(fe.Param()), ", ")
	case "min", "max":
		bound := map[string]string{"min": "at least", "max": "at most"}[fe.Tag()]
		switch {
		case isString:
			return fmt.Sprintf("must be %s %s characters long", bound, fe.Param())
		case isList:
			return fmt.Sprintf("must have %s %s items", bound, fe.Param())
		default:
			return fmt.Sprintf("must be %s %s", bound, fe.Param())
		}
	case "relpath":
		return "must be a relative path without .. segments or NUL"
	case "nocrlf":
		return "must not contain CR or LF"
	case "filename":
		return "must be a file name without / or control characters"
	case "templatename":
		return "must match ^[a-z0-9_-]{1,64}$"
	case "cachekey":
		return "must match ^[A-Za-z0-9:_.-]{1,200}$"
	case "globpattern":
		return "must be a valid path.Match pattern on file names (no /)"
	case "rfc3339":
		return "must be an RFC 3339 time"
	case "unique":
		return "must not repeat an item"
	}
	return "is invalid (" + fe.Tag() + ")"
}

// rawObject is a JSON value that must be an object; it is kept as written (numbers keep
// their precision when stored as jsonb).
type rawObject json.RawMessage

// decodeStrict decodes a JSON object into the struct dst points to. Each unknown field and
// each value of the wrong JSON type is one problem; JSON null leaves a field unset. A
// problem with an empty Field means the data itself is not an object.
func decodeStrict(data json.RawMessage, dst any) []FieldProblem {
	return decodeStruct(data, reflect.ValueOf(dst).Elem(), "")
}

func joinField(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

func decodeStruct(raw []byte, v reflect.Value, prefix string) []FieldProblem {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return []FieldProblem{{Field: prefix, Message: "must be an object"}}
	}
	index := map[string]int{}
	for i := range v.NumField() {
		name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			index[name] = i
		}
	}
	var problems []FieldProblem
	for _, key := range slices.Sorted(maps.Keys(fields)) {
		i, known := index[key]
		if !known {
			problems = append(problems, FieldProblem{Field: joinField(prefix, key), Message: "unknown field"})
			continue
		}
		problems = append(problems, decodeValue(fields[key], v.Field(i), joinField(prefix, key))...)
	}
	return problems
}

var rawObjectType = reflect.TypeFor[rawObject]()

func decodeValue(raw json.RawMessage, v reflect.Value, field string) []FieldProblem {
	raw = bytes.TrimSpace(raw)
	if bytes.Equal(raw, []byte("null")) {
		return nil
	}
	t := v.Type()
	switch {
	case t == rawObjectType:
		if len(raw) == 0 || raw[0] != '{' {
			return []FieldProblem{{Field: field, Message: "must be an object"}}
		}
		v.Set(reflect.ValueOf(rawObject(slices.Clone(raw))))
		return nil
	case t.Kind() == reflect.Struct:
		return decodeStruct(raw, v, field)
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct:
		v.Set(reflect.New(t.Elem()))
		return decodeStruct(raw, v.Elem(), field)
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return []FieldProblem{{Field: field, Message: "must be an array"}}
		}
		v.Set(reflect.MakeSlice(t, len(items), len(items)))
		var problems []FieldProblem
		for i, item := range items {
			problems = append(problems, decodeValue(item, v.Index(i), fmt.Sprintf("%s[%d]", field, i))...)
		}
		return problems
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(v.Addr().Interface()); err != nil {
		return []FieldProblem{{Field: field, Message: typeMessage(t)}}
	}
	return nil
}

func typeMessage(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "must be a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "must be an integer"
	case reflect.Float32, reflect.Float64:
		return "must be a number"
	case reflect.Bool:
		return "must be true or false"
	case reflect.Map:
		return "must be an object"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.String {
			return "must be an array of strings"
		}
		return "must be an array"
	}
	return "has the wrong type"
}
