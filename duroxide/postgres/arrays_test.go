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
			var got []string
			if err := st.pool.QueryRow(ctx, "SELECT $1::text[]", &textArray{s: want, sc: sc}).Scan(&got); err != nil {
				t.Fatalf("%v: text[] %q: %v", mode, want, err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%v: text[] %q came back as %q", mode, want, got)
			}
		}
		for _, want := range ptrs {
			var got []*string
			if err := st.pool.QueryRow(ctx, "SELECT $1::text[]", &textArray{p: want, sc: sc}).Scan(&got); err != nil {
				t.Fatalf("%v: text[] with NULLs: %v", mode, err)
			}
			if !slices.EqualFunc(got, want, func(x, y *string) bool { return (x == nil && y == nil) || (x != nil && y != nil && *x == *y) }) {
				t.Errorf("%v: text[] with NULLs %v came back as %v", mode, want, got)
			}
		}
		for _, want := range ints {
			var got []int64
			if err := st.pool.QueryRow(ctx, "SELECT $1::bigint[]", &int8Array{v: want, sc: sc}).Scan(&got); err != nil {
				t.Fatalf("%v: bigint[] %v: %v", mode, want, err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%v: bigint[] %v came back as %v", mode, want, got)
			}
		}
		// An empty array is an empty array, not NULL.
		var isNull bool
		if err := st.pool.QueryRow(ctx, "SELECT $1::bigint[] IS NULL", &int8Array{}).Scan(&isNull); err != nil || isNull {
			t.Errorf("%v: empty bigint[]: null %v, %v", mode, isNull, err)
		}
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
