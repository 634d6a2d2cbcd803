package postgres

import (
	"context"
	"database/sql/driver"
	"encoding/binary"
	"strconv"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// Turn arrays. A turn call passes 16 to 18 arrays (its events, work items,
// timers…). pgx encodes a []string or []int64 through its generic array
// codec into a parameter buffer that it shrinks back to 256 bytes after
// every statement, so a turn of a few kilobytes regrows that buffer at each
// call and walks every element through interface conversions. textArray and
// int8Array are encoded by a plan of their own, in PostgreSQL's binary array
// format, straight into a scratch buffer sized once for all of the call's
// arrays (turnScratch, pooled); other values of those types still go
// through pgx's codecs.

// turnScratch is the buffer one turn call's parameters are encoded into. It
// belongs to the call from turnArgs until the statement was sent (the
// caller's write or query returned) and then goes back to scratchPool.
type turnScratch struct{ b []byte }

var scratchPool = sync.Pool{New: func() any { return &turnScratch{b: make([]byte, 0, 4096)} }}

// scratchKeep bounds the buffers kept for reuse.
const scratchKeep = 64 << 10

func getScratch(need int) *turnScratch {
	sc := scratchPool.Get().(*turnScratch)
	if cap(sc.b) < need {
		sc.b = make([]byte, 0, need)
	}
	return sc
}

func putScratch(sc *turnScratch) {
	if sc != nil && cap(sc.b) <= scratchKeep {
		scratchPool.Put(sc)
	}
}

// turnArray is a *textArray or *int8Array (pointers: a call's arrays
// live in one slice per kind, and a pointer goes into an any without an
// allocation).
type turnArray interface {
	encodedLen() int
	appendBinary(b []byte) []byte
	scratchBuf() *turnScratch
}

// textArray is a text[] parameter: s, or p when p is set (nil elements are
// NULL).
type textArray struct {
	s  []string
	p  []*string
	sc *turnScratch
}

// int8Array is a bigint[] parameter.
type int8Array struct {
	v  []int64
	sc *turnScratch
}

func (a textArray) n() int {
	if a.p != nil {
		return len(a.p)
	}
	return len(a.s)
}

func (a textArray) encodedLen() int {
	n := 20 + 4*a.n()
	if a.p != nil {
		for _, s := range a.p {
			if s != nil {
				n += len(*s)
			}
		}
		return n
	}
	for _, s := range a.s {
		n += len(s)
	}
	return n
}

func (a int8Array) encodedLen() int { return 20 + 12*len(a.v) }

func (a textArray) scratchBuf() *turnScratch { return a.sc }
func (a int8Array) scratchBuf() *turnScratch { return a.sc }

// appendHeader appends the binary array header: one dimension of n
// elements (lower bound 1), or no dimension when n is 0, as PostgreSQL
// writes an empty array.
func appendHeader(b []byte, n int, hasNull bool, elem uint32) []byte {
	if n == 0 {
		return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(b, 0), 0), elem)
	}
	null := uint32(0)
	if hasNull {
		null = 1
	}
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint32(b, null)
	b = binary.BigEndian.AppendUint32(b, elem)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	return binary.BigEndian.AppendUint32(b, 1)
}

func (a textArray) appendBinary(b []byte) []byte {
	if a.p != nil {
		hasNull := false
		for _, s := range a.p {
			hasNull = hasNull || s == nil
		}
		b = appendHeader(b, len(a.p), hasNull, pgtype.TextOID)
		for _, s := range a.p {
			if s == nil {
				b = binary.BigEndian.AppendUint32(b, 0xFFFFFFFF)
				continue
			}
			b = binary.BigEndian.AppendUint32(b, uint32(len(*s)))
			b = append(b, *s...)
		}
		return b
	}
	b = appendHeader(b, len(a.s), false, pgtype.TextOID)
	for _, s := range a.s {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

func (a int8Array) appendBinary(b []byte) []byte {
	b = appendHeader(b, len(a.v), false, pgtype.Int8OID)
	for _, v := range a.v {
		b = binary.BigEndian.AppendUint32(b, 8)
		b = binary.BigEndian.AppendUint64(b, uint64(v))
	}
	return b
}

// TextValue gives the array literal, for the text format that pgx uses
// when it does not describe statements (QueryExecModeExec, the simple
// protocol; see WithPoolConfig).
func (a textArray) TextValue() (pgtype.Text, error) {
	b := []byte{'{'}
	for i := range a.n() {
		if i > 0 {
			b = append(b, ',')
		}
		var s string
		if a.p != nil {
			if a.p[i] == nil {
				b = append(b, "NULL"...)
				continue
			}
			s = *a.p[i]
		} else {
			s = a.s[i]
		}
		b = append(b, '"')
		for j := 0; j < len(s); j++ {
			if s[j] == '"' || s[j] == '\\' {
				b = append(b, '\\')
			}
			b = append(b, s[j])
		}
		b = append(b, '"')
	}
	return pgtype.Text{String: string(append(b, '}')), Valid: true}, nil
}

// TextValue gives the array literal (see textArray.TextValue).
func (a int8Array) TextValue() (pgtype.Text, error) {
	b := []byte{'{'}
	for i, v := range a.v {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, v, 10)
	}
	return pgtype.Text{String: string(append(b, '}')), Valid: true}, nil
}

// encodeTurnArray is the plan of both array types, binary format only. pgx
// hands it the statement's parameter buffer so far (buf); when buf lacks
// room, the encoding moves to the call's scratch buffer, which then carries
// the rest of the call's parameters (append semantics: the buffer returned
// holds buf's bytes followed by the array).
type encodeTurnArray struct{}

func (encodeTurnArray) Encode(value any, buf []byte) ([]byte, error) {
	a := value.(turnArray)
	need := a.encodedLen()
	if cap(buf)-len(buf) < need {
		if sc := a.scratchBuf(); sc != nil && cap(sc.b) >= len(buf)+need {
			buf = append(sc.b[:0], buf...)
		}
	}
	return a.appendBinary(buf), nil
}

// arrayCodec is pgx's codec of text[] or bigint[] (base), with the plan
// above for textArray and int8Array values.
type arrayCodec struct{ base pgtype.Codec }

func (c arrayCodec) FormatSupported(f int16) bool { return c.base.FormatSupported(f) }
func (c arrayCodec) PreferredFormat() int16       { return c.base.PreferredFormat() }

func (c arrayCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if format == pgtype.BinaryFormatCode {
		switch value.(type) {
		case *textArray:
			if oid == pgtype.TextArrayOID {
				return encodeTurnArray{}
			}
		case *int8Array:
			if oid == pgtype.Int8ArrayOID {
				return encodeTurnArray{}
			}
		}
	}
	return c.base.PlanEncode(m, oid, format, value)
}

func (c arrayCodec) PlanScan(m *pgtype.Map, oid uint32, format int16, target any) pgtype.ScanPlan {
	return c.base.PlanScan(m, oid, format, target)
}

func (c arrayCodec) DecodeDatabaseSQLValue(m *pgtype.Map, oid uint32, format int16, src []byte) (driver.Value, error) {
	return c.base.DecodeDatabaseSQLValue(m, oid, format, src)
}

func (c arrayCodec) DecodeValue(m *pgtype.Map, oid uint32, format int16, src []byte) (any, error) {
	return c.base.DecodeValue(m, oid, format, src)
}

// registerTurnArrays gives a new connection's type map the codecs above.
func registerTurnArrays(_ context.Context, conn *pgx.Conn) error {
	m := conn.TypeMap()
	for _, oid := range []uint32{pgtype.TextArrayOID, pgtype.Int8ArrayOID} {
		t, ok := m.TypeForOID(oid)
		if !ok {
			continue
		}
		m.RegisterType(&pgtype.Type{Name: t.Name, OID: t.OID, Codec: arrayCodec{base: t.Codec}})
	}
	return nil
}
