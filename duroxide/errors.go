package duroxide

import (
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
)

// Sentinel errors matched with errors.Is.
var (
	// ErrTimeout matches a task that failed because a timeout elapsed: the
	// last attempt of a retry policy with a per-attempt timeout, or its
	// total timeout.
	ErrTimeout = errors.New("duroxide: timeout")
	// ErrCancelled matches a cancelled task or instance.
	ErrCancelled = errors.New("duroxide: cancelled")
	// ErrNondeterminism matches an instance failed because its code no
	// longer matches its history.
	ErrNondeterminism = errors.New("nondeterministic")
	// ErrInvalidPolicy matches a retry policy that cannot be used.
	ErrInvalidPolicy = errors.New("duroxide: invalid retry policy")
)

// NonRetryable marks err as permanent: a retry policy stops at once when an
// activity returns it, whatever attempts remain. The error's type and message
// still reach the orchestration.
func NonRetryable(err error) error {
	if err == nil {
		return nil
	}
	return &nonRetryableError{err: err}
}

type nonRetryableError struct{ err error }

func (e *nonRetryableError) Error() string { return e.err.Error() }
func (e *nonRetryableError) Unwrap() error { return e.err }

// IsNonRetryable reports whether err was marked with NonRetryable, either in
// this process or, for a TaskError, by the worker that ran the activity.
func IsNonRetryable(err error) bool {
	var nr *nonRetryableError
	if errors.As(err, &nr) {
		return true
	}
	var te *TaskError
	return errors.As(err, &te) && te.Details.NonRetryable
}

// TaskError is the error an orchestration sees when an activity or a
// sub-orchestration fails. It carries the durable ErrorDetails; errors.As
// with a pointer to the original Go error type rebuilds that error from its
// JSON form (exported fields survive the trip, unexported ones do not).
type TaskError struct {
	Kind     string // "activity" or "sub-orchestration"
	Name     string
	Details  ErrorDetails
	Attempts int // attempts made under a retry policy (0 without one)
}

func (e *TaskError) Error() string {
	if e.Attempts > 0 {
		return fmt.Sprintf("%s %s failed after %d attempt(s): %s", e.Kind, e.Name, e.Attempts, e.Details.Display())
	}
	return fmt.Sprintf("%s %s failed: %s", e.Kind, e.Name, e.Details.Display())
}

// Is matches ErrTimeout, ErrCancelled and ErrNondeterminism by category,
// and ErrCircuitOpen by the recorded error type.
func (e *TaskError) Is(target error) bool {
	switch target {
	case ErrTimeout:
		return e.Details.Timeout
	case ErrCancelled:
		return e.Details.Category == CategoryCancelled
	case ErrNondeterminism:
		return e.Details.Category == CategoryConfiguration
	case ErrCircuitOpen:
		return e.Details.Type == circuitOpenType
	}
	return false
}

const circuitOpenType = "*duroxide.CircuitOpenError"

// As rebuilds the original error when target points to a variable of the
// error's recorded Go type.
func (e *TaskError) As(target any) bool {
	return detailsAs(&e.Details, target)
}

func detailsAs(d *ErrorDetails, target any) bool {
	if d.Type == "" || target == nil {
		return false
	}
	tv := reflect.ValueOf(target)
	if tv.Kind() != reflect.Pointer || tv.IsNil() {
		return false
	}
	elem := tv.Type().Elem()
	if elem.String() != d.Type {
		return false
	}
	if elem.Kind() == reflect.Pointer {
		v := reflect.New(elem.Elem())
		if len(d.Payload) > 0 {
			if err := json.Unmarshal(d.Payload, v.Interface()); err != nil {
				return false
			}
		}
		tv.Elem().Set(v)
		return true
	}
	v := reflect.New(elem)
	if len(d.Payload) > 0 {
		if err := json.Unmarshal(d.Payload, v.Interface()); err != nil {
			return false
		}
	}
	tv.Elem().Set(v.Elem())
	return true
}

// OrchestrationError is the error of a failed or cancelled instance, as
// returned by Client.WaitForCompletion and OrchestrationStatus.Err.
type OrchestrationError struct {
	Instance string
	Details  ErrorDetails
}

func (e *OrchestrationError) Error() string {
	return fmt.Sprintf("orchestration %s failed: %s", e.Instance, e.Details.Display())
}

// Is matches ErrTimeout, ErrCancelled and ErrNondeterminism.
func (e *OrchestrationError) Is(target error) bool {
	return (&TaskError{Details: e.Details}).Is(target)
}

// As rebuilds the original error type, like TaskError.As.
func (e *OrchestrationError) As(target any) bool { return detailsAs(&e.Details, target) }

// detailsFromError converts an application error into its durable form.
func detailsFromError(err error) *ErrorDetails {
	d := &ErrorDetails{Category: CategoryApplication, Message: err.Error()}
	var nr *nonRetryableError
	if errors.As(err, &nr) {
		d.NonRetryable = true
		err = nr.err
	}
	var te *TaskError
	if errors.As(err, &te) {
		// Propagate a child's failure with its original type.
		d.Type, d.Payload, d.Timeout = te.Details.Type, te.Details.Payload, te.Details.Timeout
		if te.Details.NonRetryable {
			d.NonRetryable = true
		}
		return d
	}
	if errors.Is(err, ErrTimeout) {
		d.Timeout = true
	}
	t := reflect.TypeOf(err)
	d.Type = t.String()
	if marshalsEmpty(t) {
		return d
	}
	if b, jerr := json.Marshal(err); jerr == nil && string(b) != "{}" && string(b) != "null" {
		d.Payload = b
	}
	return d
}

// emptyJSON caches marshalsEmpty by type.
var emptyJSON sync.Map // reflect.Type → bool

// marshalsEmpty reports whether encoding/json encodes every value of t as
// {} or null: a struct (or pointer to one) without exported or embedded
// fields and without a marshalling method of its own. The errors of the
// standard library (errors.New, fmt.Errorf) are such types; skipping
// json.Marshal for them saves an activity failure a reflective walk.
func marshalsEmpty(t reflect.Type) bool {
	if v, ok := emptyJSON.Load(t); ok {
		return v.(bool)
	}
	empty := structWithoutJSONFields(t)
	emptyJSON.Store(t, empty)
	return empty
}

var (
	jsonMarshaler = reflect.TypeFor[json.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
)

func structWithoutJSONFields(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		if t.Implements(jsonMarshaler) || t.Implements(textMarshaler) {
			return false
		}
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.Implements(jsonMarshaler) || t.Implements(textMarshaler) ||
		reflect.PointerTo(t).Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(textMarshaler) {
		return false
	}
	for i := range t.NumField() {
		if f := t.Field(i); f.IsExported() || f.Anonymous {
			return false
		}
	}
	return true
}
