package app_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/cms"
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

func TestDescribe(t *testing.T) {
	nf := &app.NotFoundError{Msg: `instance "x" not found`, Err: fmt.Errorf("get x: %w", cms.ErrNotFound)}
	for _, tc := range []struct {
		err  error
		want app.Problem
		code int
	}{
		{&app.ValidationError{Msg: "name is required", Field: "name"}, app.Problem{Kind: app.KindInvalid, Msg: "name is required", Field: "name"}, 400},
		{fmt.Errorf("create: %w", &app.ConflictError{Msg: "taken", Field: "name", Err: cms.ErrNameTaken}), app.Problem{Kind: app.KindConflict, Msg: "taken", Field: "name"}, 409},
		{nf, app.Problem{Kind: app.KindNotFound, Msg: `instance "x" not found`}, 404},
		{fmt.Errorf("x: %w", cms.ErrNotFound), app.Problem{Kind: app.KindNotFound, Msg: "instance not found"}, 404},
		{fmt.Errorf("x: %w", duroxide.ErrNotFound), app.Problem{Kind: app.KindNotFound, Msg: "orchestration not found"}, 404},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), app.Problem{Kind: app.KindTimeout, Msg: "the request timed out"}, 503},
		{&app.ValidationError{Msg: "first line\nsecond line"}, app.Problem{Kind: app.KindInvalid, Msg: "first line"}, 400},
		{errors.New("disk on fire"), app.Problem{Kind: app.KindInternal}, 500},
	} {
		got := app.Describe(tc.err)
		if got != tc.want || got.HTTPStatus() != tc.code {
			t.Errorf("Describe(%v) = %+v (HTTP %d), want %+v (HTTP %d)", tc.err, got, got.HTTPStatus(), tc.want, tc.code)
		}
	}
	if !errors.Is(nf, cms.ErrNotFound) {
		t.Error("a NotFoundError hides its cause from errors.Is")
	}
}
