package web

import (
	"encoding/json"
	"fmt"

	"github.com/toygres/toygres/internal/redact"
)

// The orchestration page shows an execution's history as the steps of
// package historyview (and its raw events); this file holds what is left
// to the page: payloads as readable text.

// prettyPayload shows a stored payload: JSON indented with secrets masked
// (package redact), other text as is; at most limit bytes.
func prettyPayload(s string, limit int) string {
	if s == "" || s == "null" {
		return ""
	}
	out := redact.Indented(s)
	if len(out) > limit {
		out = shorten(out, limit) + fmt.Sprintf("\n(%d bytes in all)", len(out))
	}
	return out
}

// stepPayload shows a step's payload (already masked JSON) for the page.
func stepPayload(raw json.RawMessage) string { return prettyPayload(string(raw), 4000) }
