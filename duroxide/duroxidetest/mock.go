package duroxidetest

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Mock scripts the calls of one activity or sub-orchestration. Behaviours
// are consumed in the order they were added, one per call (Times changes
// that); the last one repeats for every further call. A Mock with no
// behaviour returns an empty result.
type Mock struct {
	name  string
	steps []*step
	calls int
}

type step struct {
	result any
	err    error
	panicV any
	panics bool
	fn     func(ctx context.Context, input json.RawMessage) (any, error)
	delay  time.Duration
	hang   bool
	times  int
	used   int
}

func (m *Mock) add(s *step) *Mock {
	s.times = 1
	m.steps = append(m.steps, s)
	return m
}

func (m *Mock) last() *step {
	if len(m.steps) == 0 {
		m.add(&step{})
	}
	return m.steps[len(m.steps)-1]
}

// Return makes the next call succeed with v (JSON-encoded; a
// json.RawMessage is used as is).
func (m *Mock) Return(v any) *Mock { return m.add(&step{result: v}) }

// Fail makes the next call fail with err. Wrap it with duroxide.NonRetryable
// to end a retry sequence.
func (m *Mock) Fail(err error) *Mock { return m.add(&step{err: err}) }

// Panic makes the next call panic with v; a runtime turns the panic into an
// "activity panicked" failure, and so does the kit.
func (m *Mock) Panic(v any) *Mock { return m.add(&step{panicV: v, panics: true}) }

// Do runs fn for the next call; its result is JSON-encoded like Return's.
// Func adapts a typed function.
func (m *Mock) Do(fn func(ctx context.Context, input json.RawMessage) (any, error)) *Mock {
	return m.add(&step{fn: fn})
}

// Hang makes the next call never finish: it ends only when the orchestration
// cancels it (a per-attempt timeout, a lost Select) or ends.
func (m *Mock) Hang() *Mock { return m.add(&step{hang: true}) }

// After makes the last added behaviour take d of virtual time before its
// result arrives.
func (m *Mock) After(d time.Duration) *Mock { m.last().delay = d; return m }

// Times makes the last added behaviour serve n calls (n ≥ 1).
func (m *Mock) Times(n int) *Mock {
	if n < 1 {
		n = 1
	}
	m.last().times = n
	return m
}

// Calls is how many times the mock was called.
func (m *Mock) Calls() int { return m.calls }

// next picks the behaviour of the next call.
func (m *Mock) next() *step {
	m.calls++
	for i, s := range m.steps {
		if s.used < s.times || i == len(m.steps)-1 {
			s.used++
			return s
		}
	}
	return &step{}
}

// outcome of one call: its JSON result or error, and whether it ever ends.
type outcome struct {
	result string
	err    error
	delay  time.Duration
	hang   bool
}

func (s *step) run(ctx context.Context, input string) (out outcome) {
	out.delay, out.hang = s.delay, s.hang
	if s.hang {
		return out
	}
	defer func() {
		if r := recover(); r != nil {
			out.result, out.err = "", fmt.Errorf("activity panicked: %v", r)
		}
	}()
	if s.panics {
		panic(s.panicV)
	}
	v, err := s.result, s.err
	if s.fn != nil {
		v, err = s.fn(ctx, json.RawMessage(input))
	}
	if err != nil {
		out.err = err
		return out
	}
	res, err := encode(v)
	if err != nil {
		out.err = fmt.Errorf("duroxidetest: encode mock result: %w", err)
		return out
	}
	out.result = res
	return out
}

func encode(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case json.RawMessage:
		return string(x), nil
	}
	b, err := json.Marshal(v)
	return string(b), err
}

// Func adapts a typed function for Mock.Do: the input is decoded into In.
func Func[In, Out any](fn func(ctx context.Context, in In) (Out, error)) func(context.Context, json.RawMessage) (any, error) {
	return func(ctx context.Context, raw json.RawMessage) (any, error) {
		var in In
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &in); err != nil {
				return nil, fmt.Errorf("duroxidetest: decode input: %w", err)
			}
		}
		return fn(ctx, in)
	}
}
