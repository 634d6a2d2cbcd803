package app_test

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/toygres/toygres/internal/app"
)

func TestRecreateID(t *testing.T) {
	for in, wantPrefix := range map[string]string{
		"create-mydb-1a2b3c4d": "create-mydb-",
		"my-test":              "my-test-",
		"plain":                "plain-",
		"x-1A2B3C4D":           "x-1A2B3C4D-",
	} {
		got := app.RecreateID(in)
		if !strings.HasPrefix(got, wantPrefix) {
			t.Errorf("RecreateID(%q) = %q", in, got)
			continue
		}
		suffix := got[len(wantPrefix):]
		if _, err := hex.DecodeString(suffix); len(suffix) != 8 || err != nil || strings.ToLower(suffix) != suffix {
			t.Errorf("RecreateID(%q) = %q", in, got)
		}
	}
}
