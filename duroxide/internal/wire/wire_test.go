package wire

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// strs are strings that exercise every escaping rule.
var strs = []string{"", "a", "plain text", `"quoted"`, `back\slash`, "<b>&amp;</b>", "tab\there", "nl\nand\rcr",
	"\b\f\x00\x01\x1f\x7f", "héllo wörld", "日本語", "\u2028line\u2029para", "bad \xff utf8 \xc3", "emoji 🎉",
	`{"a":1,"b":[true,null]}`, "\"", "\\", "<", ">", "&", "\xed\xa0\x80 surrogate"}

func str(r *rand.Rand) string {
	if r.IntN(3) == 0 {
		return ""
	}
	s := strs[r.IntN(len(strs))]
	if r.IntN(2) == 0 {
		s += strs[r.IntN(len(strs))]
	}
	return s
}

func num(r *rand.Rand) int64 {
	switch r.IntN(4) {
	case 0:
		return 0
	case 1:
		return -r.Int64N(1 << 40)
	default:
		return r.Int64()
	}
}

func randomEvent(r *rand.Rand) duroxide.Event {
	e := duroxide.Event{EventID: num(r), Kind: duroxide.EventKind(str(r)), SourceEventID: num(r), TimestampMs: num(r),
		Name: str(r), Version: str(r), Input: str(r), Result: str(r), Instance: str(r), Data: str(r), Reason: str(r),
		FireAtMs: num(r), ParentInstance: str(r), ParentExecutionID: num(r), ParentID: num(r),
		Attempt: int(num(r)), MaxAttempts: int(num(r)), Policy: str(r), Purpose: duroxide.TimerPurpose(str(r)),
		TraceContext: str(r)}
	if r.IntN(3) == 0 {
		e.RetryPolicy = &duroxide.PolicyRecord{Name: str(r), MaxAttempts: int(num(r)), Backoff: str(r), Base: time.Duration(num(r)),
			Max: time.Duration(num(r)), Timeout: time.Duration(num(r)), TotalTimeout: time.Duration(num(r)),
			TimeoutEndsSequence: r.IntN(2) == 0, Source: str(r)}
		for _, f := range []*float64{&e.RetryPolicy.Multiplier, &e.RetryPolicy.Jitter} {
			switch r.IntN(5) {
			case 0:
			case 1:
				*f = r.Float64() * 1e-7
			case 2:
				*f = r.Float64() * 1e25
			default:
				*f = r.NormFloat64() * 3
			}
		}
	}
	if r.IntN(3) == 0 {
		e.Error = randomError(r)
	}
	if r.IntN(4) == 0 {
		cs := str(r)
		e.CustomStatus = &cs
	}
	if r.IntN(10) == 0 {
		e.CarryForward = []duroxide.ExternalArrival{{Name: str(r), Data: str(r)}}
	}
	return e
}

func randomError(r *rand.Rand) *duroxide.ErrorDetails {
	d := &duroxide.ErrorDetails{Category: duroxide.ErrorCategory(str(r)), Message: str(r), Type: str(r),
		NonRetryable: r.IntN(2) == 0, Timeout: r.IntN(2) == 0}
	if r.IntN(5) == 0 {
		d.Payload = json.RawMessage(`{"code": 42, "html": "<x>"}`)
	}
	return d
}

func randomWorkItem(r *rand.Rand) duroxide.WorkItem {
	w := duroxide.WorkItem{Kind: duroxide.WorkItemKind(str(r)), Instance: str(r), ExecutionID: num(r), ID: num(r),
		Name: str(r), Version: str(r), Input: str(r), Result: str(r), Data: str(r), Reason: str(r), FireAtMs: num(r),
		ParentInstance: str(r), ParentExecutionID: num(r), ParentID: num(r), OrchestrationName: str(r),
		TraceContext: str(r), Attempt: int(num(r)), MaxAttempts: int(num(r))}
	if r.IntN(3) == 0 {
		w.Error = randomError(r)
	}
	if r.IntN(4) == 0 {
		cs := str(r)
		w.CustomStatus = &cs
	}
	if r.IntN(10) == 0 {
		w.CarryForward = []duroxide.ExternalArrival{{Name: str(r)}}
	}
	return w
}

// TestSameAsMarshal: random events and work items, covering every field,
// escaping rule and number form, encode exactly as json.Marshal encodes
// them, and appending keeps what dst held.
func TestSameAsMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		e := randomEvent(r)
		want, err := json.Marshal(&e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := AppendEvent([]byte("x"), &e)
		if err != nil || string(got) != "x"+string(want) {
			t.Fatalf("event %d: %+v\n got %s (%v)\nwant x%s", i, e, got, err, want)
		}
		w := randomWorkItem(r)
		if want, err = json.Marshal(&w); err != nil {
			t.Fatal(err)
		}
		if got, err = AppendWorkItem(nil, &w); err != nil || string(got) != string(want) {
			t.Fatalf("work item %d: %+v\n got %s (%v)\nwant %s", i, w, got, err, want)
		}
	}
}

// TestZeroValues: the zero event and work item, whose fields are all left
// out but those without omitempty.
func TestZeroValues(t *testing.T) {
	var e duroxide.Event
	var w duroxide.WorkItem
	got, _ := AppendEvent(nil, &e)
	want, _ := json.Marshal(&e)
	if string(got) != string(want) {
		t.Errorf("zero event: %s, want %s", got, want)
	}
	got, _ = AppendWorkItem(nil, &w)
	want, _ = json.Marshal(&w)
	if string(got) != string(want) {
		t.Errorf("zero work item: %s, want %s", got, want)
	}
}

// TestUnsupportedFloat: a policy whose multiplier is not a number fails as
// json.Marshal fails, and leaves dst as it was.
func TestUnsupportedFloat(t *testing.T) {
	e := duroxide.Event{RetryPolicy: &duroxide.PolicyRecord{MaxAttempts: 2, Multiplier: nanValue()}}
	if _, err := json.Marshal(&e); err == nil {
		t.Fatal("json.Marshal accepted NaN")
	}
	got, err := AppendEvent([]byte("x"), &e)
	if err == nil || string(got) != "x" {
		t.Fatalf("AppendEvent with NaN: %q, %v", got, err)
	}
}

func nanValue() float64 {
	zero := 0.0
	return zero / zero
}

func FuzzAppendString(f *testing.F) {
	for _, s := range strs {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := duroxide.Event{Name: s, Input: s}
		want, _ := json.Marshal(&e)
		got, err := AppendEvent(nil, &e)
		if err != nil || string(got) != string(want) {
			t.Fatalf("%q:\n got %s\nwant %s", s, got, want)
		}
	})
}

func BenchmarkAppendEvent(b *testing.B) {
	e := duroxide.Event{EventID: 7, Kind: duroxide.EventActivityScheduled, TimestampMs: 1796483665399, Name: "Flaky",
		Input: "0", Attempt: 2, MaxAttempts: 3, Policy: "3 attempts, fixed 10ms"}
	b.Run("wire", func(b *testing.B) {
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf, _ = AppendEvent(buf[:0], &e)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			_, _ = json.Marshal(&e)
		}
	})
}

// TestEventsAndWorkItems checks that the batch encoders return, for each
// record, what AppendEvent and AppendWorkItem write for it alone.
func TestEventsAndWorkItems(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	evs := make([]duroxide.Event, 50)
	items := make([]duroxide.WorkItem, 50)
	for i := range evs {
		evs[i], items[i] = randomEvent(r), randomWorkItem(r)
	}
	gotEvs, err := Events(evs)
	if err != nil {
		t.Fatal(err)
	}
	gotItems, err := WorkItems(items)
	if err != nil {
		t.Fatal(err)
	}
	for i := range evs {
		if want, _ := AppendEvent(nil, &evs[i]); gotEvs[i] != string(want) {
			t.Fatalf("event %d: %s, want %s", i, gotEvs[i], want)
		}
		if want, _ := AppendWorkItem(nil, &items[i]); gotItems[i] != string(want) {
			t.Fatalf("work item %d: %s, want %s", i, gotItems[i], want)
		}
	}
	if got, err := Events(nil); err != nil || got == nil || len(got) != 0 {
		t.Errorf("no events: %v, %v; want an empty, non-nil slice", got, err)
	}
}
