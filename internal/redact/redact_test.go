package redact

import (
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://toygres:hunter2@db:5432/toygres?sslmode=disable": "postgres://toygres:***@db:5432/toygres?sslmode=disable",
		"postgres://db/toygres?password=hunter2&user=u":              "postgres://db/toygres?password=***&user=u",
		"postgres://toygres@db/toygres":                              "postgres://toygres@db/toygres",
		"host=db password=hunter2":                                   "***",
		"":                                                           "",
	} {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestConnectionURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgresql://db:5432/postgres":             "postgresql://postgres:••@db:5432/postgres",
		"postgresql://app:pw@db/x?sslmode=require":  "postgresql://app:••@db/x?sslmode=require",
		"postgresql://app@db/x?sslpassword=hunter2": "postgresql://app:••@db/x?sslpassword=***",
	} {
		if got := ConnectionURL(in, "••"); got != want {
			t.Errorf("ConnectionURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestJSON(t *testing.T) {
	in := `{"name":"a","password":"hunter2","nested":[{"api_token":"t0k"}],"empty_secret":"","n":12345678901234567890}`
	got := string(JSON(in))
	for _, s := range []string{"hunter2", "t0k"} {
		if strings.Contains(got, s) {
			t.Errorf("JSON kept %q: %s", s, got)
		}
	}
	if !strings.Contains(got, `"empty_secret":""`) || !strings.Contains(got, "12345678901234567890") {
		t.Errorf("JSON changed what it should keep: %s", got)
	}
	if got := string(JSON(`{"name":"a"}`)); got != `{"name":"a"}` {
		t.Errorf("JSON without secrets = %s, want the input unchanged", got)
	}
	if got := string(JSON("plain text")); got != `"plain text"` {
		t.Errorf("JSON(text) = %s", got)
	}
	if JSON("") != nil {
		t.Error("JSON(\"\") is not nil")
	}
	if got := OneLine("{\n \"password\": \"x\"\n}"); got != `{"password":"***"}` {
		t.Errorf("OneLine = %s", got)
	}
	if got := Indented(`{"password":"x"}`); got != "{\n  \"password\": \"***\"\n}" {
		t.Errorf("Indented = %q", got)
	}
}

func TestLinesAndSecret(t *testing.T) {
	l := Lines([]string{"auth failed for hunter2", "ok"}, "hunter2")
	if l[0] != "auth failed for ***" || l[1] != "ok" {
		t.Errorf("Lines = %q", l)
	}
	if Secret("") != "" || Secret("x") != Mark {
		t.Error("Secret")
	}
	if !IsSecretName("DATABASE_PASSWORD") || !IsSecretName("apiKey") || IsSecretName("name") {
		t.Error("IsSecretName")
	}
}
