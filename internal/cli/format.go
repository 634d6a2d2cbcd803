package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Masked is what a hidden secret prints as.
const Masked = "***"

// MaskSecret hides a secret value: "" stays empty (unset), anything else
// becomes "***".
func MaskSecret(v string) string {
	if v == "" {
		return ""
	}
	return Masked
}

// MaskURL hides the password of a URL (user:***@host) and the values of
// secret-looking query parameters (password, token, secret, key). A value
// that does not parse as a URL with a scheme is hidden entirely, since it
// may be a key=value connection string with a password in it.
func MaskURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return Masked
	}
	const mark = "TOYGRESMASKEDSECRET"
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), mark)
		}
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			if IsSecretName(k) {
				q.Set(k, mark)
			}
		}
		u.RawQuery = q.Encode()
	}
	return strings.ReplaceAll(u.String(), mark, Masked)
}

// IsSecretName reports whether a setting's or parameter's name says it
// holds a secret (password, token, secret, key, credential).
func IsSecretName(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"password", "passwd", "pass", "pwd", "token", "secret", "key", "credential"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// Percent prints n as a share of total ("66.7%"; "-" when total is 0).
func Percent(n, total int) string {
	if total <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", float64(n)*100/float64(total))
}

// CompactJSON prints a JSON value on one line, cut to max characters with
// "…" (max <= 0: no limit). Invalid JSON is printed as it is.
func CompactJSON(raw json.RawMessage, max int) string {
	if len(raw) == 0 {
		return ""
	}
	var buf bytes.Buffer
	s := string(raw)
	if json.Compact(&buf, raw) == nil {
		s = buf.String()
	}
	return Truncate(s, max)
}

// Truncate cuts s to max characters, ending with "…" when cut (max <= 0:
// no limit). Line breaks become spaces.
func Truncate(s string, max int) string {
	s = strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
	if max <= 0 || utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	return string(r[:max-1]) + "…"
}

// IndentJSON pretty-prints a JSON value with every line prefixed (invalid
// JSON is returned as it is).
func IndentJSON(raw json.RawMessage, prefix string) string {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, prefix, "  "); err != nil {
		return prefix + string(raw)
	}
	return prefix + buf.String()
}
