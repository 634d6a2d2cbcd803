package api

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// invalidText reports whether a syntactically valid JSON document holds a
// string that is not valid Unicode text: invalid UTF-8 bytes, or an
// unpaired UTF-16 surrogate escape (\ud800). field is the JSON path of the
// first such string ("password", "instances[2].password"; "" for the
// document itself or an object key).
func invalidText(doc []byte) (field string, bad bool) {
	if utf8.Valid(doc) && !bytes.Contains(bytes.ToLower(doc), []byte(`\ud`)) {
		return "", false // the common case: nothing to look at
	}
	return walkText(json.RawMessage(doc), "")
}

func walkText(raw json.RawMessage, path string) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", false
	}
	switch raw[0] {
	case '"':
		return path, !validJSONString(raw)
	case '{':
		// Keys are checked in the raw form: decoding would repair them.
		dec := json.NewDecoder(bytes.NewReader(raw))
		if _, err := dec.Token(); err != nil { // {
			return path, true
		}
		for dec.More() {
			start := dec.InputOffset()
			tok, err := dec.Token()
			key, ok := tok.(string)
			if err != nil || !ok {
				return path, true
			}
			if !validJSONString(bytes.TrimLeft(bytes.TrimSpace(raw[start:dec.InputOffset()]), ",")) {
				return path, true
			}
			var val json.RawMessage
			if err := dec.Decode(&val); err != nil {
				return path, true
			}
			p := key
			if path != "" {
				p = path + "." + key
			}
			if f, bad := walkText(val, p); bad {
				return f, true
			}
		}
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return path, true
		}
		for i, it := range items {
			if f, bad := walkText(it, path+"["+strconv.Itoa(i)+"]"); bad {
				return f, true
			}
		}
	}
	return "", false
}

// validJSONString reports whether a raw JSON string literal (with its
// quotes) is valid UTF-8 whose \u escapes pair their surrogates.
func validJSONString(lit []byte) bool {
	lit = bytes.TrimSpace(lit)
	if !utf8.Valid(lit) {
		return false
	}
	highPending := false // the previous escape was a high surrogate
	for i := 0; i < len(lit); i++ {
		if lit[i] != '\\' {
			if highPending {
				return false
			}
			continue
		}
		if i+1 >= len(lit) {
			return false
		}
		if lit[i+1] != 'u' {
			if highPending {
				return false
			}
			i++
			continue
		}
		if i+6 > len(lit) {
			return false
		}
		n, err := strconv.ParseUint(string(lit[i+2:i+6]), 16, 32)
		if err != nil {
			return false
		}
		i += 5
		switch {
		case n >= 0xD800 && n < 0xDC00:
			if highPending {
				return false
			}
			highPending = true
		case n >= 0xDC00 && n < 0xE000:
			if !highPending {
				return false
			}
			highPending = false
		default:
			if highPending {
				return false
			}
		}
	}
	return !highPending
}
