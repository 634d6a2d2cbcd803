package duroxide

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"testing"
)

type codeErr struct{ Code int }

func (e codeErr) Error() string { return fmt.Sprint("code ", e.Code) }

type quietErr struct{ code int }

func (e *quietErr) Error() string { return fmt.Sprint("quiet ", e.code) }

type textErr struct{ code int }

func (e textErr) Error() string                { return "text" }
func (e textErr) MarshalText() ([]byte, error) { return []byte(fmt.Sprint(e.code)), nil }

type ptrJSONErr struct{ code int }

func (e *ptrJSONErr) Error() string                { return "ptr json" }
func (e *ptrJSONErr) MarshalJSON() ([]byte, error) { return []byte(fmt.Sprint(e.code)), nil }

type inner struct{ Field string }

type embedErr struct {
	inner
}

func (e embedErr) Error() string { return "embed" }

type strErr string

func (e strErr) Error() string { return string(e) }

// The shortcut of detailsFromError (no json.Marshal for types that always
// encode as {}) must keep every payload that json.Marshal gives.
func TestErrorPayloadMatchesJSON(t *testing.T) {
	for _, err := range []error{
		errors.New("plain"),
		fmt.Errorf("wrapped: %w", errors.New("inner")),
		codeErr{Code: 7},
		&codeErr{Code: 8},
		&quietErr{code: 9},
		textErr{code: 10},
		&ptrJSONErr{code: 11},
		embedErr{inner{Field: "x"}},
		strErr("s"),
		&fs.PathError{Op: "open", Path: "/x", Err: fs.ErrNotExist},
	} {
		for range 2 { // the second call is answered from the cache
			want := ""
			if b, jerr := json.Marshal(err); jerr == nil && string(b) != "{}" && string(b) != "null" {
				want = string(b)
			}
			if got := string(detailsFromError(err).Payload); got != want {
				t.Errorf("%T: payload %q, want %q", err, got, want)
			}
		}
	}
	if !marshalsEmpty(reflect.TypeOf(errors.New("x"))) {
		t.Errorf("errors.New's type should skip json.Marshal")
	}
}
