// Package redact hides secrets in what Toygres shows: JSON payloads (values
// of secret-looking keys), URLs (passwords and secret query parameters),
// settings and log lines. The API, the web console and the CLI all mask
// through it, so a secret hidden in one view is hidden in every view.
package redact

import (
	"bytes"
	"encoding/json"
	"net/url"
	"strings"
)

// Mark is what a hidden secret shows as.
const Mark = "***"

// secretWords are the name fragments that mark a key, setting or query
// parameter as secret.
var secretWords = []string{"password", "passwd", "pass", "pwd", "token", "secret", "key", "credential"}

// IsSecretName reports whether a key's, setting's or parameter's name says
// it holds a secret (password, token, secret, key, credential…).
func IsSecretName(name string) bool {
	n := strings.ToLower(name)
	for _, w := range secretWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// Secret hides a secret value: "" stays empty (unset), anything else is Mark.
func Secret(v string) string {
	if v == "" {
		return ""
	}
	return Mark
}

// Value replaces, in place, the values of secret-named keys in a decoded
// JSON value (maps and slices as encoding/json decodes into any) with Mark,
// and reports whether it changed anything. Empty strings stay empty.
func Value(v any) bool {
	changed := false
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if IsSecretName(k) {
				if s, ok := val.(string); !ok || s != "" {
					x[k] = Mark
					changed = true
				}
				continue
			}
			if Value(val) {
				changed = true
			}
		}
	case []any:
		for _, e := range x {
			if Value(e) {
				changed = true
			}
		}
	}
	return changed
}

// decode parses s as one JSON value (numbers kept exact), or reports false.
func decode(s string) (any, bool) {
	if !json.Valid([]byte(s)) {
		return nil, false
	}
	var v any
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return nil, false
	}
	return v, true
}

// JSON returns a stored payload as JSON for a response: JSON stays JSON
// (secret-named keys masked; unchanged bytes when nothing was masked), other
// text becomes a JSON string, "" is nil.
func JSON(s string) json.RawMessage {
	if s == "" {
		return nil
	}
	if v, ok := decode(s); ok {
		if Value(v) {
			if b, err := json.Marshal(v); err == nil {
				return b
			}
		}
		return json.RawMessage(s)
	}
	b, _ := json.Marshal(s)
	return b
}

// Indented is a stored payload for reading: JSON indented with secrets
// masked, other text as is.
func Indented(s string) string {
	v, ok := decode(s)
	if !ok {
		return s
	}
	Value(v)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if enc.Encode(v) != nil {
		return s
	}
	return strings.TrimRight(buf.String(), "\n")
}

// OneLine is a stored payload on one line: JSON compacted with secrets
// masked, other text with its line breaks replaced by spaces.
func OneLine(s string) string {
	if v, ok := decode(s); ok {
		Value(v)
		if b, err := json.Marshal(v); err == nil {
			return string(b)
		}
	}
	return strings.ReplaceAll(s, "\n", " ")
}

// urlMark stands for a hidden value while a URL is re-encoded (Mark itself
// would be percent-encoded in a query).
const urlMark = "TOYGRESMASKEDSECRET"

// URL hides the password of a URL (user:***@host) and the values of
// secret-named query parameters. A value that does not parse as a URL with
// a scheme is hidden entirely, since it may be a key=value connection
// string with a password in it.
func URL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return Mark
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), urlMark)
		}
	}
	maskQuery(u)
	return strings.ReplaceAll(u.String(), urlMark, Mark)
}

// ConnectionURL shows an instance's connection URL with placeholder in the
// password's place, whether or not the URL carries one (stored connection
// URLs do not: the password is kept apart), so a reader sees where it goes.
// The user defaults to postgres; secret query parameters are masked.
func ConnectionURL(conn, placeholder string) string {
	u, err := url.Parse(conn)
	if err != nil {
		return "(unparseable connection string)"
	}
	user := "postgres"
	if u.User != nil && u.User.Username() != "" {
		user = u.User.Username()
	}
	u.User = url.UserPassword(user, urlMark)
	maskQuery(u)
	return strings.Replace(strings.ReplaceAll(u.String(), urlMark, Mark), Mark, placeholder, 1)
}

func maskQuery(u *url.URL) {
	if u.RawQuery == "" {
		return
	}
	q := u.Query()
	for k := range q {
		if IsSecretName(k) {
			q.Set(k, urlMark)
		}
	}
	u.RawQuery = q.Encode()
}

// Lines replaces every occurrence of secret in lines (in place) with Mark
// and returns lines; an empty secret changes nothing.
func Lines(lines []string, secret string) []string {
	if secret == "" {
		return lines
	}
	for i, l := range lines {
		lines[i] = strings.ReplaceAll(l, secret, Mark)
	}
	return lines
}
