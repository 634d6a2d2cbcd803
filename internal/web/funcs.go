package web

import (
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/toygres/toygres/internal/cli"
	"github.com/toygres/toygres/internal/historyview"
)

var funcs = template.FuncMap{
	"iso":      iso,
	"datetime": func(t time.Time) string { return fmtTime(t, "2006-01-02 15:04:05") },
	"clock":    func(t time.Time) string { return fmtTime(t, "15:04:05") },
	"dur":      fmtDur,
	"payload":  stepPayload,
	"orchURL":  orchURL,
	"ms":       func(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) },
	"pathEsc":  url.PathEscape,
	"bytes":    cli.Bytes,
	"queryEsc": url.QueryEscape,
	"add":      func(a, b int) int { return a + b },
	"pct": func(n, total int) string {
		if total == 0 {
			return "0%"
		}
		return fmt.Sprintf("%.0f%%", 100*float64(n)/float64(total))
	},
	"f1": func(f float64) string {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return "–"
		}
		return fmt.Sprintf("%.1f", f)
	},
	"f2": func(f float64) string {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return "–"
		}
		return fmt.Sprintf("%.2f", f)
	},
	"num": func(f float64) string {
		if f == math.Trunc(f) && math.Abs(f) < 1e15 {
			return fmt.Sprintf("%d", int64(f))
		}
		return fmt.Sprintf("%.2f", f)
	},
	"lower":   strings.ToLower,
	"deref":   func(s *string) string { return derefStr(s) },
	"notNil":  func(s *string) bool { return s != nil },
	"short":   func(s string, n int) string { return shorten(s, n) },
	"jsonStr": func(v any) string { b, _ := json.Marshal(v); return string(b) },
}

func iso(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtTime(t time.Time, layout string) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format(layout) + " UTC"
}

// fmtDur is a compact human duration: 850 ms, 2.5 s, 3m10s, 2h5m.
func fmtDur(d time.Duration) string { return historyview.FormatDuration(d) }

func derefStr(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func shorten(s string, n int) string { return historyview.Shorten(s, n) }
