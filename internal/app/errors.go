package app

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/cms"
)

// Kind classifies an error for the callers that answer users (the API, the
// console, the CLI): what the user can do about it.
type Kind int

// The kinds of errors.
const (
	// KindInternal is a failure the user cannot fix: log it in full, show
	// only a reference to the log.
	KindInternal Kind = iota
	// KindInvalid is bad input (HTTP 400).
	KindInvalid
	// KindNotFound names something that does not exist (HTTP 404).
	KindNotFound
	// KindConflict is a request the current state does not allow (HTTP 409).
	KindConflict
	// KindTimeout is a request that ran out of time (HTTP 503).
	KindTimeout
)

// Problem is what an error means to a user: its kind, a one-line message
// without secrets ("" for KindInternal, whose details are for the log) and
// the request field at fault, if one is (a JSON field name: "name",
// "base_name", "backup_id"…).
type Problem struct {
	Kind  Kind
	Msg   string
	Field string
}

// HTTPStatus is the HTTP status code of the problem's kind.
func (p Problem) HTTPStatus() int {
	switch p.Kind {
	case KindInvalid:
		return http.StatusBadRequest
	case KindNotFound:
		return http.StatusNotFound
	case KindConflict:
		return http.StatusConflict
	case KindTimeout:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// NotFoundError is a request naming an instance, an orchestration or a
// backup that does not exist (HTTP 404). Err is the store's error
// (cms.ErrNotFound, duroxide.ErrNotFound…), for errors.Is.
type NotFoundError struct {
	Msg string
	Err error
}

func (e *NotFoundError) Error() string { return e.Msg }
func (e *NotFoundError) Unwrap() error { return e.Err }

// instanceNotFound turns cms.ErrNotFound from an operation on the named
// instance into a NotFoundError naming it ("instance %q not found"); other
// errors pass unchanged.
func instanceNotFound(name string, err error) error {
	return notFoundAs(err, "instance %q not found", name)
}

// notFoundAs turns cms.ErrNotFound into a NotFoundError with this message.
func notFoundAs(err error, format string, args ...any) error {
	var nf *NotFoundError
	if err == nil || !errors.Is(err, cms.ErrNotFound) || errors.As(err, &nf) {
		return err
	}
	return &NotFoundError{Msg: fmt.Sprintf(format, args...), Err: err}
}

// Describe says what err means to a user. It is the one mapping of errors
// to messages: the API turns the kind into its status code and the
// message and field into its error body; the console shows the message by
// the form field.
func Describe(err error) Problem {
	p := describe(err)
	p.Msg = oneLine(p.Msg)
	return p
}

// oneLine is the first line of s, trimmed.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	return s
}

func describe(err error) Problem {
	var (
		ve *ValidationError
		ce *ConflictError
		nf *NotFoundError
	)
	switch {
	case errors.As(err, &ce):
		return Problem{KindConflict, ce.Msg, ce.Field}
	case errors.As(err, &nf):
		return Problem{KindNotFound, nf.Msg, ""}
	case errors.As(err, &ve):
		return Problem{KindInvalid, ve.Msg, ve.Field}
	case errors.Is(err, cms.ErrNameTaken):
		return Problem{KindConflict, "the name is already in use by an active instance", ""}
	case errors.Is(err, cms.ErrInvalidTransition):
		return Problem{KindConflict, "the instance cannot make that state change", ""}
	case errors.Is(err, cms.ErrNotFound):
		return Problem{KindNotFound, "instance not found", ""}
	case errors.Is(err, cms.ErrBackupNotFound):
		return Problem{KindNotFound, "backup not found", ""}
	case errors.Is(err, duroxide.ErrNotFound):
		return Problem{KindNotFound, "orchestration not found", ""}
	case errors.Is(err, duroxide.ErrInstanceRunning):
		return Problem{KindConflict, "the orchestration is still running; cancel it first", ""}
	case errors.Is(err, duroxide.ErrInstanceExists):
		return Problem{KindConflict, "an orchestration with that id exists", ""}
	case errors.Is(err, duroxide.ErrInvalidInput):
		return Problem{KindInvalid, strings.TrimPrefix(err.Error(), "duroxide: "), ""}
	case errors.Is(err, context.DeadlineExceeded):
		return Problem{KindTimeout, "the request timed out", ""}
	}
	return Problem{Kind: KindInternal}
}
