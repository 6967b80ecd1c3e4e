package kinds

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-playground/validator/v10"
)

// The data checks of every kind run in two steps: decodeStrict turns the JSON into the
// data struct, reporting each unknown field and each value of the wrong JSON type on its
// own (encoding/json stops at the first); then go-playground/validator checks the struct
// tags, and the struct's own Check method (and the kind's extra checks) what tags cannot
// say. Checks are pure: the API and the Go client run them without any dependency.
//
// Tags a data struct may use besides the validator's own (required, min, max, oneof,
// email, dive, unique, ...):
//
//	relpath      a path relative to its root: not absolute, no .. segment, no NUL
//	nocrlf       no CR or LF (mail headers)
//	filename     a file name: no /, \ or control characters
//	globpattern  a path.Match pattern on file names (no /)
//	rfc3339      an RFC 3339 time

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
		return RelPathProblem(fl.Field().String()) == ""
	}))
	must(v.RegisterValidation("nocrlf", func(fl validator.FieldLevel) bool {
		return !strings.ContainsAny(fl.Field().String(), "\r\n")
	}))
	must(v.RegisterValidation("filename", func(fl validator.FieldLevel) bool {
		s := fl.Field().String()
		return !strings.ContainsFunc(s, func(r rune) bool { return r == '/' || r == '\\' || r < 0x20 || r == 0x7f })
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

// MaxPathLen bounds a relative path; Linux's PATH_MAX is 4096.
const MaxPathLen = 1024

// RelPathProblem says what is wrong with a path that must stay under its root: it is
// relative, has no ".." segment and no NUL. An empty result means the path is fine. The
// run-time os.Root open still refuses symlinks that lead out.
func RelPathProblem(p string) string {
	switch {
	case p == "":
		return "must not be empty"
	case len(p) > MaxPathLen:
		return fmt.Sprintf("must be at most %d bytes", MaxPathLen)
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

// parse decodes data strictly into a new T and checks it: the struct's tags, then its
// own Check method when it has one, then extra. Problems are sorted by field; nil
// problems means the data is valid.
func parse[T any](data json.RawMessage, extra []func(*T) []Problem) (*T, []Problem) {
	v := new(T)
	problems := decodeStrict(data, v)
	if len(problems) == 1 && problems[0].Field == "" {
		return nil, problems
	}
	problems = append(problems, structProblems(v, problems)...)
	if c, ok := any(v).(Checker); ok {
		problems = append(problems, withoutFields(c.Check(), problems)...)
	}
	for _, check := range extra {
		problems = append(problems, withoutFields(check(v), problems)...)
	}
	if len(problems) > 0 {
		slices.SortStableFunc(problems, func(a, b Problem) int { return strings.Compare(a.Field, b.Field) })
		return nil, problems
	}
	return v, nil
}

// InvalidData is the permanent error of a run whose data does not pass its kind's
// checks (a job enqueued without them, in SQL).
func InvalidData(problems []Problem) error {
	msgs := make([]string, len(problems))
	for i, p := range problems {
		if p.Field == "" {
			msgs[i] = p.Message
		} else {
			msgs[i] = p.Field + ": " + p.Message
		}
	}
	return Permanentf("invalid data: %s", strings.Join(msgs, "; "))
}

// withoutFields drops the problems of fields (or their children) already reported, so a
// value of the wrong type is not also "required".
func withoutFields(problems, reported []Problem) []Problem {
	var out []Problem
	for _, p := range problems {
		if !slices.ContainsFunc(reported, func(r Problem) bool {
			return p.Field == r.Field || strings.HasPrefix(p.Field, r.Field+".") || strings.HasPrefix(p.Field, r.Field+"[")
		}) {
			out = append(out, p)
		}
	}
	return out
}

func structProblems(v any, reported []Problem) []Problem {
	if !hasRules(reflect.TypeOf(v)) {
		return nil // the validator's walk costs microseconds per run
	}
	err := validate.Struct(v)
	if err == nil {
		return nil
	}
	verrs, ok := err.(validator.ValidationErrors)
	if !ok {
		return []Problem{{Message: err.Error()}}
	}
	var out []Problem
	for _, fe := range verrs {
		// Namespace is "structName.field.sub"; drop the struct name.
		_, field, _ := strings.Cut(fe.Namespace(), ".")
		out = append(out, Problem{Field: field, Message: fieldMessage(fe)})
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
	case "globpattern":
		return "must be a valid path.Match pattern on file names (no /)"
	case "rfc3339":
		return "must be an RFC 3339 time"
	case "unique":
		return "must not repeat an item"
	}
	return "is invalid (" + fe.Tag() + ")"
}

// RawObject is a data field that must be a JSON object; it is kept as written (numbers
// keep their precision when stored as jsonb).
type RawObject json.RawMessage

// MarshalJSON writes the object as it was given (null when unset).
func (r RawObject) MarshalJSON() ([]byte, error) {
	if len(r) == 0 {
		return []byte("null"), nil
	}
	return r, nil
}

// decodeStrict decodes a JSON object into the struct dst points to. Each unknown field and
// each value of the wrong JSON type is one problem; JSON null leaves a field unset. A
// problem with an empty Field means the data itself is not an object.
//
// A data struct that implements json.Unmarshaler decodes itself instead (free-form data,
// or a shape the tags cannot describe); its error is a problem of the whole data.
func decodeStrict(data json.RawMessage, dst any) []Problem {
	if u, ok := dst.(json.Unmarshaler); ok {
		if t := bytes.TrimSpace(data); len(t) == 0 || t[0] != '{' {
			return []Problem{{Message: "must be an object"}}
		}
		if err := u.UnmarshalJSON(data); err != nil {
			return []Problem{{Message: err.Error()}}
		}
		return nil
	}
	return decodeStruct(data, reflect.ValueOf(dst).Elem(), "")
}

func joinField(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

func decodeStruct(raw []byte, v reflect.Value, prefix string) []Problem {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return []Problem{{Field: prefix, Message: "must be an object"}}
	}
	index := fieldIndex(v.Type())
	var problems []Problem
	for _, key := range slices.Sorted(maps.Keys(fields)) {
		i, known := index[key]
		if !known {
			problems = append(problems, Problem{Field: joinField(prefix, key), Message: "unknown field"})
			continue
		}
		problems = append(problems, decodeValue(fields[key], v.Field(i), joinField(prefix, key))...)
	}
	return problems
}

var rawObjectType = reflect.TypeFor[RawObject]()

// typeInfo is what decoding needs of a data struct type, worked out once per type.
type typeInfo struct {
	index map[string]int // JSON name -> field
	rules bool           // some field, at any depth, has validate tags
}

var typeInfos sync.Map // reflect.Type -> *typeInfo, published only once complete

// infoOf returns t's decoding information, working it out on first use. It is built
// apart and published whole: workers decode many jobs of a new type at once, and a
// half-built index would call valid fields unknown.
func infoOf(t reflect.Type) *typeInfo {
	if ti, ok := typeInfos.Load(t); ok {
		return ti.(*typeInfo)
	}
	ti, _ := typeInfos.LoadOrStore(t, buildInfo(t, map[reflect.Type]*typeInfo{}))
	return ti.(*typeInfo)
}

// buildInfo works out t's information; building holds the types being worked out up
// the walk, so a type that contains itself ends it.
func buildInfo(t reflect.Type, building map[reflect.Type]*typeInfo) *typeInfo {
	if ti, ok := building[t]; ok {
		return ti
	}
	ti := &typeInfo{index: map[string]int{}}
	building[t] = ti
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
			ti.index[name] = i
		}
		if f.Tag.Get("validate") != "" || rulesIn(f.Type, building) {
			ti.rules = true
		}
	}
	return ti
}

func fieldIndex(t reflect.Type) map[string]int { return infoOf(t).index }

// hasRules reports whether a type (a struct, or a pointer, slice or map of one) carries
// validate tags anywhere.
func hasRules(t reflect.Type) bool { return rulesIn(t, nil) }

func rulesIn(t reflect.Type, building map[reflect.Type]*typeInfo) bool {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == rawObjectType {
		return false
	}
	if building == nil {
		return infoOf(t).rules
	}
	if ti, ok := typeInfos.Load(t); ok {
		return ti.(*typeInfo).rules
	}
	return buildInfo(t, building).rules
}

func decodeValue(raw json.RawMessage, v reflect.Value, field string) []Problem {
	raw = bytes.TrimSpace(raw)
	if bytes.Equal(raw, []byte("null")) {
		return nil
	}
	t := v.Type()
	switch {
	case t == rawObjectType:
		if len(raw) == 0 || raw[0] != '{' {
			return []Problem{{Field: field, Message: "must be an object"}}
		}
		v.Set(reflect.ValueOf(RawObject(slices.Clone(raw))))
		return nil
	case t.Kind() == reflect.Struct:
		return decodeStruct(raw, v, field)
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct:
		v.Set(reflect.New(t.Elem()))
		return decodeStruct(raw, v.Elem(), field)
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return []Problem{{Field: field, Message: "must be an array"}}
		}
		v.Set(reflect.MakeSlice(t, len(items), len(items)))
		var problems []Problem
		for i, item := range items {
			problems = append(problems, decodeValue(item, v.Index(i), fmt.Sprintf("%s[%d]", field, i))...)
		}
		return problems
	}
	if plain(t) {
		// Scalars (and lists of them) decode the same without a Decoder's options, and
		// without its buffers.
		if err := json.Unmarshal(raw, v.Addr().Interface()); err != nil {
			return []Problem{{Field: field, Message: typeMessage(t)}}
		}
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(v.Addr().Interface()); err != nil {
		return []Problem{{Field: field, Message: typeMessage(t)}}
	}
	return nil
}

// plain reports a string, number or boolean type, or a pointer or slice of one: no
// interface for UseNumber to matter, no struct for DisallowUnknownFields.
func plain(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return true
	}
	return false
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
