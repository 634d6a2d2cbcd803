package postgres

import (
	"bytes"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The turn arrays must reach the server as the same text[] and bigint[]
// values pgx's own codecs send, in every query mode: binary through their
// own plan (statements described), text otherwise.
func TestTurnArraysRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	a, b, null := "plain", `quote " and backslash \ and {braces}, commas`, (*string)(nil)
	texts := [][]string{nil, {}, {""}, {"x"}, {a, b, "ünïcode ✓", "NULL", " spaced "}}
	ptrs := [][]*string{{}, {&a}, {null}, {&a, null, &b}}
	ints := [][]int64{nil, {}, {0}, {1, -1, 1 << 62, -(1 << 62)}}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
		st := openStore(t, WithPoolConfig(func(c *pgxpool.Config) { c.ConnConfig.DefaultQueryExecMode = mode }))
		sc := getScratch(64)
		for _, want := range texts {
			roundTrip(t, st, mode, "text[]", &textArray{s: want, sc: sc}, want, slices.Equal[[]string])
		}
		for _, want := range ptrs {
			roundTrip(t, st, mode, "text[]", &textArray{p: want, sc: sc}, want, func(x, y []*string) bool {
				return slices.EqualFunc(x, y, func(x, y *string) bool { return (x == nil && y == nil) || (x != nil && y != nil && *x == *y) })
			})
		}
		for _, want := range ints {
			roundTrip(t, st, mode, "bigint[]", &int8Array{v: want, sc: sc}, want, slices.Equal[[]int64])
		}
		// An empty array is an empty array, not NULL.
		var isNull bool
		if err := st.pool.QueryRow(ctx, "SELECT $1::bigint[] IS NULL", &int8Array{}).Scan(&isNull); err != nil || isNull {
			t.Errorf("%v: empty bigint[]: null %v, %v", mode, isNull, err)
		}
	}
}

// roundTrip sends arg as a parameter cast to typ and checks that it comes
// back as want.
func roundTrip[T any](t *testing.T, st *Store, mode pgx.QueryExecMode, typ string, arg any, want T, equal func(T, T) bool) {
	t.Helper()
	var got T
	if err := st.pool.QueryRow(testCtx(t), "SELECT $1::"+typ, arg).Scan(&got); err != nil {
		t.Fatalf("%v: %s %v: %v", mode, typ, want, err)
	}
	if !equal(got, want) {
		t.Errorf("%v: %s %v came back as %v", mode, typ, want, got)
	}
}

// When pgx's parameter buffer lacks room, the encoding moves into the
// call's scratch buffer, keeping what pgx had written before it.
func TestTurnArrayEncodesIntoScratch(t *testing.T) {
	sc := getScratch(4096)
	prefix := make([]byte, 3, 8)
	copy(prefix, "abc")
	arr := &textArray{s: []string{"one", "two"}, sc: sc}
	out, err := encodeTurnArray{}.Encode(arr, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if &out[0] != &sc.b[:1][0] {
		t.Fatalf("encoded outside the scratch buffer")
	}
	want := arr.appendBinary([]byte("abc"))
	if !bytes.Equal(out, want) || len(out) != 3+arr.encodedLen() {
		t.Fatalf("encoded %x, want %x (length %d, computed %d)", out, want, len(out), 3+arr.encodedLen())
	}
	ints := &int8Array{v: []int64{7, 8, 9}, sc: sc}
	out2, _ := encodeTurnArray{}.Encode(ints, out)
	if &out2[0] != &out[0] || len(out2) != len(out)+ints.encodedLen() {
		t.Fatalf("second array: moved %v, length %d, want %d", &out2[0] != &out[0], len(out2), len(out)+ints.encodedLen())
	}
}
