package api

import "testing"

func TestInvalidText(t *testing.T) {
	for doc, want := range map[string]string{
		`{"password":"ok \u00e9 \ud83d\ude00 é"}`:                     "",
		`{"a":"\\ud800 is text, not an escape"}`:                      "",
		`{"password":"bad ` + "\xff" + `"}`:                           "password",
		`{"password":"\ud800"}`:                                       "password",
		`{"password":"\udc00"}`:                                       "password",
		`{"password":"\ud800\u0041"}`:                                 "password",
		`{"password":"\ud800x"}`:                                      "password",
		`{"instances":[{"name":"a"},{"password":"` + "\xc3(" + `"}]}`: "instances[1].password",
		`{"a":{"b":["x","\uDBFF"]}}`:                                  "a.b[1]",
	} {
		field, bad := invalidText([]byte(doc))
		if bad != (want != "") || field != want {
			t.Errorf("invalidText(%q) = %q, %v; want %q", doc, field, bad, want)
		}
	}
	if _, bad := invalidText([]byte(`{"k` + "\xff" + `":"v"}`)); !bad {
		t.Error("an invalid key was accepted")
	}
}
