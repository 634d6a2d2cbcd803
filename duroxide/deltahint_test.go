package duroxide

import "testing"

// The hint follows a larger turn at once and a smaller one slowly, keeps
// first turns apart from later ones, and stays bounded.
func TestDeltaHint(t *testing.T) {
	var h deltaHint
	h.observe(true, 2)
	h.observe(false, 10)
	if h.get(true) != 2 || h.get(false) != 10 {
		t.Fatalf("hints %d/%d, want 2/10", h.get(true), h.get(false))
	}
	h.observe(false, 2)
	if got := h.get(false); got != 9 {
		t.Fatalf("after a smaller turn: %d, want 9 (an eighth of the gap, rounded up)", got)
	}
	for range 100 {
		h.observe(false, 2)
	}
	if got := h.get(false); got != 2 {
		t.Fatalf("after many small turns: %d, want 2", got)
	}
	h.observe(false, 10_000)
	if got := h.get(false); got != maxDeltaHint {
		t.Fatalf("after a huge turn: %d, want %d", got, maxDeltaHint)
	}
}
