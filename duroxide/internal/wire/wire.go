// Package wire encodes the records the stores write at every turn (history
// events and queue messages) as JSON without reflection. The output is
// byte for byte what encoding/json.Marshal produces for the same value
// (wire_test.go checks it against Marshal, and fuzzes it): the stores read
// it back with encoding/json, and older rows written by Marshal stay
// indistinguishable.
//
// Marshal costs about a microsecond and a half per event through
// reflection; a turn of a retry sequence writes a dozen events and
// messages, and a PostgreSQL run spent 5 % of the process's CPU there.
package wire

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/toygres/toygres/duroxide"
)

// AppendEvent appends the JSON form of e to dst.
func AppendEvent(dst []byte, e *duroxide.Event) ([]byte, error) {
	if len(e.CarryForward) > 0 || (e.Error != nil && len(e.Error.Payload) > 0) {
		return appendMarshal(dst, e) // rare: left to encoding/json
	}
	b := append(dst, `{"id":`...)
	b = strconv.AppendInt(b, e.EventID, 10)
	b = appendStringField(b, `,"type":`, string(e.Kind))
	b = appendIntOmit(b, `,"src":`, e.SourceEventID)
	b = appendIntOmit(b, `,"ts":`, e.TimestampMs)
	b = appendStringOmit(b, `,"name":`, e.Name)
	b = appendStringOmit(b, `,"version":`, e.Version)
	b = appendStringOmit(b, `,"input":`, e.Input)
	b = appendStringOmit(b, `,"result":`, e.Result)
	b = appendStringOmit(b, `,"instance":`, e.Instance)
	b = appendStringOmit(b, `,"data":`, e.Data)
	b = appendStringOmit(b, `,"reason":`, e.Reason)
	b = appendIntOmit(b, `,"fire_at":`, e.FireAtMs)
	b = appendStringOmit(b, `,"parent":`, e.ParentInstance)
	b = appendIntOmit(b, `,"parent_exec":`, e.ParentExecutionID)
	b = appendIntOmit(b, `,"parent_id":`, e.ParentID)
	b = appendIntOmit(b, `,"attempt":`, int64(e.Attempt))
	b = appendIntOmit(b, `,"max_attempts":`, int64(e.MaxAttempts))
	b = appendStringOmit(b, `,"policy":`, e.Policy)
	if e.RetryPolicy != nil {
		var err error
		if b, err = appendPolicy(append(b, `,"retry_policy":`...), e.RetryPolicy); err != nil {
			return dst, err
		}
	}
	b = appendStringOmit(b, `,"purpose":`, string(e.Purpose))
	if e.Error != nil {
		b = appendError(append(b, `,"error":`...), e.Error)
	}
	if e.CustomStatus != nil {
		b = appendStringField(b, `,"custom_status":`, *e.CustomStatus)
	}
	b = appendStringOmit(b, `,"trace":`, e.TraceContext)
	return append(b, '}'), nil
}

// AppendWorkItem appends the JSON form of w to dst.
func AppendWorkItem(dst []byte, w *duroxide.WorkItem) ([]byte, error) {
	if len(w.CarryForward) > 0 || (w.Error != nil && len(w.Error.Payload) > 0) {
		return appendMarshal(dst, w)
	}
	b := appendStringField(append(dst, '{'), `"kind":`, string(w.Kind))
	b = appendStringField(b, `,"instance":`, w.Instance)
	b = appendIntOmit(b, `,"exec":`, w.ExecutionID)
	b = appendIntOmit(b, `,"id":`, w.ID)
	b = appendStringOmit(b, `,"name":`, w.Name)
	b = appendStringOmit(b, `,"version":`, w.Version)
	b = appendStringOmit(b, `,"input":`, w.Input)
	b = appendStringOmit(b, `,"result":`, w.Result)
	b = appendStringOmit(b, `,"data":`, w.Data)
	b = appendStringOmit(b, `,"reason":`, w.Reason)
	if w.Error != nil {
		b = appendError(append(b, `,"error":`...), w.Error)
	}
	b = appendIntOmit(b, `,"fire_at":`, w.FireAtMs)
	b = appendStringOmit(b, `,"parent":`, w.ParentInstance)
	b = appendIntOmit(b, `,"parent_exec":`, w.ParentExecutionID)
	b = appendIntOmit(b, `,"parent_id":`, w.ParentID)
	b = appendStringOmit(b, `,"orch":`, w.OrchestrationName)
	if w.CustomStatus != nil {
		b = appendStringField(b, `,"custom_status":`, *w.CustomStatus)
	}
	b = appendStringOmit(b, `,"trace":`, w.TraceContext)
	b = appendIntOmit(b, `,"attempt":`, int64(w.Attempt))
	b = appendIntOmit(b, `,"max_attempts":`, int64(w.MaxAttempts))
	return append(b, '}'), nil
}

// Events returns the JSON form of each of evs. They are encoded into one
// buffer and converted to a string once: the results share it.
func Events(evs []duroxide.Event) ([]string, error) {
	return encodeAll(evs, AppendEvent, func(e *duroxide.Event) string { return "event " + strconv.FormatInt(e.EventID, 10) })
}

// WorkItems returns the JSON form of each of items, as Events does.
func WorkItems(items []duroxide.WorkItem) ([]string, error) {
	return encodeAll(items, AppendWorkItem, func(w *duroxide.WorkItem) string { return string(w.Kind) + " item" })
}

// encodeAll encodes each of recs with appendRec into one buffer and
// returns the substrings of its one string conversion; name names a record
// in an error.
func encodeAll[T any](recs []T, appendRec func([]byte, *T) ([]byte, error), name func(*T) string) ([]string, error) {
	if len(recs) == 0 {
		return []string{}, nil
	}
	var (
		buf  []byte
		ends = make([]int, len(recs))
		err  error
	)
	for i := range recs {
		if buf, err = appendRec(buf, &recs[i]); err != nil {
			return nil, fmt.Errorf("encode %s: %w", name(&recs[i]), err)
		}
		ends[i] = len(buf)
	}
	all, out, start := string(buf), make([]string, len(recs)), 0
	for i, end := range ends {
		out[i], start = all[start:end], end
	}
	return out, nil
}

// appendError appends d, which has no payload.
func appendError(b []byte, d *duroxide.ErrorDetails) []byte {
	b = appendStringField(append(b, '{'), `"category":`, string(d.Category))
	b = appendStringField(b, `,"message":`, d.Message)
	b = appendStringOmit(b, `,"go_type":`, d.Type)
	if d.NonRetryable {
		b = append(b, `,"non_retryable":true`...)
	}
	if d.Timeout {
		b = append(b, `,"timeout":true`...)
	}
	return append(b, '}')
}

func appendPolicy(b []byte, p *duroxide.PolicyRecord) ([]byte, error) {
	b = appendStringOmit(append(b, '{'), `"name":`, p.Name)
	if p.Name != "" {
		b = append(b, ',')
	}
	b = strconv.AppendInt(append(b, `"max_attempts":`...), int64(p.MaxAttempts), 10)
	b = appendStringOmit(b, `,"backoff":`, p.Backoff)
	b = appendDurationOmit(b, `,"base_ns":`, p.Base)
	var err error
	if p.Multiplier != 0 {
		if b, err = appendFloat(append(b, `,"multiplier":`...), p.Multiplier); err != nil {
			return nil, err
		}
	}
	b = appendDurationOmit(b, `,"max_ns":`, p.Max)
	b = appendDurationOmit(b, `,"timeout_ns":`, p.Timeout)
	b = appendDurationOmit(b, `,"total_timeout_ns":`, p.TotalTimeout)
	if p.Jitter != 0 {
		if b, err = appendFloat(append(b, `,"jitter":`...), p.Jitter); err != nil {
			return nil, err
		}
	}
	if p.TimeoutEndsSequence {
		b = append(b, `,"timeout_ends_sequence":true`...)
	}
	b = appendStringOmit(b, `,"source":`, p.Source)
	return append(b, '}'), nil
}

// appendMarshal appends v as encoding/json writes it.
func appendMarshal(dst []byte, v any) ([]byte, error) {
	out, err := json.Marshal(v)
	if err != nil {
		return dst, err
	}
	return append(dst, out...), nil
}

func appendIntOmit(b []byte, key string, v int64) []byte {
	if v == 0 {
		return b
	}
	return strconv.AppendInt(append(b, key...), v, 10)
}

func appendDurationOmit(b []byte, key string, d time.Duration) []byte {
	return appendIntOmit(b, key, int64(d))
}

func appendStringOmit(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendStringField(b, key, s)
}

func appendStringField(b []byte, key, s string) []byte {
	return appendString(append(b, key...), s)
}

// appendFloat writes f as encoding/json does: the shortest representation,
// in exponent form only for very small or large magnitudes.
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, &json.UnsupportedValueError{Str: strconv.FormatFloat(f, 'g', -1, 64)}
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 becomes e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string the way encoding/json does with
// HTML escaping (its default): <, > and & as \u003c, \u003e and \u0026,
// invalid UTF-8 as \ufffd, and U+2028 and U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(append(b, s[start:i]...), `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(append(b, s[start:]...), '"')
}
