package kinds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// greetData is a test kind's data: tag rules, a Check method and a nested list.
type greetData struct {
	Name  string      `json:"name" validate:"required,max=10"`
	Times *int        `json:"times" validate:"omitnil,min=1,max=3"`
	Tags  []greetTag  `json:"tags" validate:"omitempty,max=2,dive"`
	Extra RawObject   `json:"extra"`
	Path  string      `json:"path" validate:"omitempty,relpath"`
	When  string      `json:"when" validate:"omitempty,rfc3339"`
	Inner *greetInner `json:"inner"`
}

type greetTag struct {
	Label string `json:"label" validate:"required,nocrlf"`
}

type greetInner struct {
	Glob string `json:"glob" validate:"omitempty,globpattern"`
}

func (d *greetData) Check() []Problem {
	if d.Name == "nobody" {
		return []Problem{{Field: "name", Message: "must be somebody"}}
	}
	return nil
}

func greetKind(h Handler[greetData], extra ...func(*greetData) []Problem) Kind {
	return Define("GREET", h, extra...)
}

func TestCheckReportsEachProblem(t *testing.T) {
	t.Parallel()
	k := greetKind(nil)
	require.Nil(t, k.Check(json.RawMessage(`{"name":"Ann","times":2,"tags":[{"label":"x"}],"extra":{"a":[1]},"path":"a/b","when":"2026-01-01T00:00:00Z","inner":{"glob":"*.txt"}}`)))
	for _, c := range []struct {
		data     string
		problems []Problem
	}{
		{`[1]`, []Problem{{Message: "must be an object"}}},
		{`null`, []Problem{{Message: "must be an object"}}},
		{`{}`, []Problem{{Field: "name", Message: "is required"}}},
		{`{"name":1,"times":"2","bogus":true}`, []Problem{
			{Field: "bogus", Message: "unknown field"},
			{Field: "name", Message: "must be a string"},
			{Field: "times", Message: "must be an integer"},
		}},
		{`{"name":"nobody"}`, []Problem{{Field: "name", Message: "must be somebody"}}},
		{`{"name":"elevenchars","times":4}`, []Problem{
			{Field: "name", Message: "must be at most 10 characters long"},
			{Field: "times", Message: "must be at most 3"},
		}},
		{`{"name":"a","tags":[{"label":"ok"},{"label":"a\r\nb"}]}`, []Problem{{Field: "tags[1].label", Message: "must not contain CR or LF"}}},
		{`{"name":"a","tags":[{},{},{}]}`, []Problem{{Field: "tags", Message: "must have at most 2 items"}}},
		{`{"name":"a","tags":[{"label":"x","more":1}]}`, []Problem{{Field: "tags[0].more", Message: "unknown field"}}},
		{`{"name":"a","extra":[1]}`, []Problem{{Field: "extra", Message: "must be an object"}}},
		{`{"name":"a","path":"../x"}`, []Problem{{Field: "path", Message: "must be a relative path without .. segments or NUL"}}},
		{`{"name":"a","when":"yesterday"}`, []Problem{{Field: "when", Message: "must be an RFC 3339 time"}}},
		{`{"name":"a","inner":{"glob":"a/*"}}`, []Problem{{Field: "inner.glob", Message: "must be a valid path.Match pattern on file names (no /)"}}},
		{`{"name":"a","inner":5}`, []Problem{{Field: "inner", Message: "must be an object"}}},
	} {
		require.Equal(t, c.problems, k.Check(json.RawMessage(c.data)), c.data)
	}
}

func TestExtraChecksSkipFieldsAlreadyReported(t *testing.T) {
	t.Parallel()
	calls := 0
	k := greetKind(nil, func(d *greetData) []Problem {
		calls++
		return []Problem{{Field: "name", Message: "is taken"}, {Field: "times", Message: "is odd"}}
	})
	// name already failed its tags: only the extra problem of another field is added.
	require.Equal(t, []Problem{
		{Field: "name", Message: "must be a string"},
		{Field: "times", Message: "is odd"},
	}, k.Check(json.RawMessage(`{"name":5,"times":1}`)))
	require.Equal(t, 1, calls)
}

func TestRunDecodesOnceAndRefusesInvalidDataPermanently(t *testing.T) {
	t.Parallel()
	var got *greetData
	var progress []int
	k := greetKind(func(_ context.Context, job *Job, d *greetData) (any, error) {
		got = d
		job.SetProgress(-5)
		job.SetProgress(50)
		job.SetProgress(500)
		return "hi " + d.Name, nil
	})
	job := NewJob("j1", "GREET", "default", 1, 3, func(p int) { progress = append(progress, p) })
	res, err := k.Run(context.Background(), job, json.RawMessage(`{"name":"Ann","times":2}`))
	require.NoError(t, err)
	require.Equal(t, "hi Ann", res)
	require.Equal(t, "Ann", got.Name)
	require.Equal(t, 2, *got.Times)
	require.Equal(t, []int{0, 50, 100}, progress, "progress is clamped to 0..100")

	got = nil
	_, err = k.Run(context.Background(), job, json.RawMessage(`{"times":9,"x":1}`))
	require.True(t, IsPermanent(err), "%v", err)
	require.EqualError(t, err, "invalid data: name: is required; times: must be at most 3; x: unknown field")
	require.Nil(t, got, "the handler never sees invalid data")

	_, err = k.Run(context.Background(), job, json.RawMessage(`"text"`))
	require.EqualError(t, err, "invalid data: must be an object")

	// A kind declared without a handler (the API's) fails a job it is asked to run.
	_, err = greetKind(nil).Run(context.Background(), job, json.RawMessage(`{"name":"Ann"}`))
	require.True(t, IsPermanent(err))
	require.ErrorIs(t, err, errNoHandler)
}

// freeData decodes itself: any object passes.
type freeData struct{ raw json.RawMessage }

func (f *freeData) UnmarshalJSON(b []byte) error {
	if string(b) == `{"bad":true}` {
		return errors.New("bad is not allowed")
	}
	f.raw = append(f.raw[:0], b...)
	return nil
}

func TestDataThatDecodesItself(t *testing.T) {
	t.Parallel()
	var got string
	k := Define("FREE", func(_ context.Context, _ *Job, d *freeData) (any, error) {
		got = string(d.raw)
		return nil, nil
	})
	require.Nil(t, k.Check(json.RawMessage(`{"anything":[1,2],"else":null}`)))
	require.Equal(t, []Problem{{Message: "must be an object"}}, k.Check(json.RawMessage(` [1]`)))
	require.Equal(t, []Problem{{Message: "bad is not allowed"}}, k.Check(json.RawMessage(`{"bad":true}`)))
	_, err := k.Run(context.Background(), NewJob("j", "FREE", "default", 1, 1, nil), json.RawMessage(`{"a":1}`))
	require.NoError(t, err)
	require.Equal(t, `{"a":1}`, got)
}

func TestDefineRefusesBadDeclarations(t *testing.T) {
	t.Parallel()
	require.Panics(t, func() { Define[greetData]("bad name", nil) })
	require.Panics(t, func() { Define[greetData]("", nil) })
	require.Panics(t, func() { Define[int]("INT", nil) }, "data must be a struct")
	k := Define[greetData]("ns.kind:v1-2_x", nil)
	require.Equal(t, "ns.kind:v1-2_x", k.Name())
	require.Equal(t, "greetData", k.DataType().Name())
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	r := NewRegistry(Define[greetData]("B", nil), Define[greetData]("A", nil))
	require.Equal(t, []string{"A", "B"}, r.Names())
	require.True(t, r.Known("A"))
	require.False(t, r.Known("C"))
	k, ok := r.Kind("B")
	require.True(t, ok)
	require.Equal(t, "B", k.Name())
	_, ok = r.Kind("C")
	require.False(t, ok)
	require.Panics(t, func() { r.Add(Define[greetData]("A", nil)) }, "a name registered twice")

	require.Empty(t, r.Tasks())
	require.Panics(t, func() { r.AddTask(Task{Name: "no interval", Run: func(context.Context) error { return nil }}) })
	require.Panics(t, func() { r.AddTask(Task{Name: "no function", Every: time.Minute}) })
	r.AddTask(Task{Name: "t", Every: time.Minute, Run: func(context.Context) error { return nil }})
	tasks := r.Tasks()
	require.Len(t, tasks, 1)
	tasks[0].Name = "changed"
	require.Equal(t, "t", r.Tasks()[0].Name, "Tasks returns a copy")
}

func TestPermanent(t *testing.T) {
	t.Parallel()
	require.NoError(t, Permanent(nil))
	base := errors.New("boom")
	err := fmt.Errorf("wrapped: %w", Permanent(base))
	require.True(t, IsPermanent(err))
	require.ErrorIs(t, err, base)
	require.Equal(t, "wrapped: boom", err.Error())
	require.False(t, IsPermanent(base))
	pf := Permanentf("file %s: %w", "a", base)
	require.True(t, IsPermanent(pf))
	require.ErrorIs(t, pf, base)
	require.Equal(t, "file a: boom", pf.Error())
}

// Workers decode many jobs of a type they have not seen before at once: every one of
// those first decodes sees the type's whole field index, never a half-built one.
func TestFirstDecodesOfATypeSeeAllItsFields(t *testing.T) {
	t.Parallel()
	for round := range 200 {
		// A type no decode has seen yet, every round.
		fields := make([]reflect.StructField, 12)
		for i := range fields {
			fields[i] = reflect.StructField{Name: fmt.Sprintf("F%d", i), Type: reflect.TypeFor[string](),
				Tag: reflect.StructTag(fmt.Sprintf(`json:"f%d_%d"`, i, round))}
		}
		typ := reflect.StructOf(fields)
		raw := []byte(fmt.Sprintf(`{"f0_%d": "a", "f11_%d": "b"}`, round, round))
		var wg sync.WaitGroup
		start := make(chan struct{})
		problems := make([][]Problem, 8)
		for g := range problems {
			wg.Go(func() {
				<-start
				problems[g] = decodeStruct(raw, reflect.New(typ).Elem(), "")
			})
		}
		close(start)
		wg.Wait()
		for _, p := range problems {
			require.Empty(t, p, "round %d", round)
		}
	}
}
