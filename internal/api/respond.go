package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/redact"
)

// apiError is an error with the HTTP status and the one-line message the
// client sees.
type apiError struct {
	status int
	msg    string
	field  string // the request field at fault, if one is
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...)}
}

// fieldErrorf is errorf about one field of the request body.
func fieldErrorf(status int, field, format string, args ...any) error {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...), field: field}
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":"internal error: encoding the response failed"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// writeError writes {"error": msg}. msg must be one line without secrets.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, ErrorResponse{Error: oneLine(msg)})
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	return s
}

// fail maps err to a status and message, logging internal errors in full
// (with the request id the client sees) but never returning them.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg, field := s.problem(r, err)
	writeJSON(w, status, ErrorResponse{Error: oneLine(msg), Field: field})
}

// problem is err's status, message and field: the API's own errors
// (apiError: bad JSON, query parameters…) as they are, the others as
// app.Describe says. An internal error is logged in full and answered
// with the request id only.
func (s *Server) problem(r *http.Request, err error) (status int, msg, field string) {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status, ae.msg, ae.field
	}
	p := app.Describe(err)
	if p.Kind == app.KindInternal {
		id := info(r).id
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "request_id", id, "error", err.Error())
		return http.StatusInternalServerError, "internal error (request id " + id + "); see the server log", ""
	}
	return p.HTTPStatus(), p.Msg, p.Field
}

// decodeJSON reads a JSON body into v: at most 1 MiB, one value, no unknown
// fields, Content-Type application/json (or none). Error messages describe
// the problem without quoting the body.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return errorf(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		}
	}
	return decodeJSONBody(w, r, v, false)
}

func decodeJSONBody(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	data, err := io.ReadAll(r.Body)
	if err != nil {
		return jsonError(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			if allowEmpty {
				return nil
			}
			return errorf(http.StatusBadRequest, "request body is empty; expected a JSON object")
		}
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errorf(http.StatusBadRequest, "invalid JSON: unexpected data after the JSON object")
	}
	// encoding/json turns invalid UTF-8 and unpaired surrogate escapes into
	// U+FFFD without a word: a password would silently become another one.
	if field, bad := invalidText(data); bad {
		if field == "" {
			return errorf(http.StatusBadRequest, "invalid JSON: the body is not valid UTF-8 text")
		}
		return fieldErrorf(http.StatusBadRequest, field, "invalid JSON: field %q is not valid UTF-8 text", field)
	}
	return nil
}

func jsonError(err error) error {
	var (
		mbe  *http.MaxBytesError
		se   *json.SyntaxError
		ute  *json.UnmarshalTypeError
		ne   net.Error
		msg  = err.Error()
		unkn = strings.HasPrefix(msg, "json: unknown field ")
	)
	switch {
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, "%s", tooLarge(mbe.Limit))
	case errors.As(err, &ne) && ne.Timeout():
		return errorf(http.StatusRequestTimeout, "the request body was not received in time")
	case errors.As(err, &se):
		return errorf(http.StatusBadRequest, "invalid JSON at byte %d", se.Offset)
	case errors.As(err, &ute):
		if ute.Field != "" {
			return fieldErrorf(http.StatusBadRequest, ute.Field, "invalid JSON: field %q must be %s", ute.Field, jsonKind(ute.Type.Kind().String()))
		}
		return errorf(http.StatusBadRequest, "invalid JSON: expected an object")
	case unkn:
		return fieldErrorf(http.StatusBadRequest, strings.Trim(strings.TrimPrefix(msg, "json: unknown field "), `"`),
			"invalid JSON: %s", strings.TrimPrefix(msg, "json: "))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(http.StatusBadRequest, "invalid JSON: unexpected end of the body")
	}
	return errorf(http.StatusBadRequest, "invalid JSON")
}

func jsonKind(k string) string {
	switch k {
	case "int", "int64", "int32", "uint", "uint64", "float64":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return "of another type"
}

// payload turns a stored payload into JSON for a response (secrets masked:
// see redact.JSON).
func payload(s string) json.RawMessage { return redact.JSON(s) }

// queryInt reads an integer query parameter within [lo, hi]; def if absent.
func queryInt(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, errorf(http.StatusBadRequest, "query parameter %s must be an integer from %d to %d", name, lo, hi)
	}
	return n, nil
}

func queryBool(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, errorf(http.StatusBadRequest, "query parameter %s must be true or false", name)
	}
	return b, nil
}
