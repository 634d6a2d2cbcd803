package providertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// Factory tells Run how to create stores and how to pace the suite.
type Factory struct {
	// New returns a new, empty store, isolated from every other store it
	// returns (for example a fresh database file in t.TempDir()). It is
	// called once per scenario; the suite closes the store when the
	// scenario ends. New may call t.Fatal. Required.
	New func(t *testing.T) duroxide.Store

	// LockTimeout is the short lock timeout used by the lock-expiry
	// scenarios: they wait for it to pass, so keep it short. It must be at
	// least 100ms; zero means DefaultLockTimeout. Scenarios that do not test
	// expiry use long locks, so a slow store does not make them flaky.
	LockTimeout time.Duration

	// Serial runs the scenarios one after another instead of calling
	// t.Parallel (for stores that cannot open several isolated instances
	// at once, or for debugging).
	Serial bool

	// Skip lists scenarios not to run, mapped to the reason logged. A key is
	// a full scenario name ("deletion/cascade_hierarchy") or an area
	// ("notifier").
	Skip map[string]string

	// Workers is the number of goroutines used by the concurrency
	// scenarios; zero means 8.
	Workers int

	// Reopen, if set, opens a second handle on the database behind s, as
	// another process sharing it would. The suite closes the handle. The
	// "multi_handle" scenarios run only when it is set.
	Reopen func(t *testing.T, s duroxide.Store) duroxide.Store

	// Freeze, if set, stops the liveness heartbeat of handle s without
	// releasing anything, as if its process had been killed, frozen or cut
	// off from the database. s stays usable, so a scenario can play the old
	// owner coming back. The "liveness" scenarios run only when Freeze and
	// Reopen are set.
	Freeze func(t *testing.T, s duroxide.Store)

	// DeadAfter is the liveness dead-after period the factory's stores are
	// opened with (keep it to a few seconds). The liveness scenarios expect
	// a frozen handle's leases to be taken over within DeadAfter plus two
	// seconds. Required with Freeze.
	DeadAfter time.Duration
}

// DefaultLockTimeout is the LockTimeout used when Factory.LockTimeout is zero.
const DefaultLockTimeout = 500 * time.Millisecond

// longLock is the lock timeout of scenarios that must not see a lock expire.
const longLock = 60 * time.Second

// scenario is one conformance check.
type scenario struct {
	area, name string
	run        func(h *H)
}

var (
	registryMu sync.Mutex
	registry   []scenario
)

// register adds scenarios of one area; called from the init functions of
// the area files.
func register(area string, list map[string]func(h *H)) {
	registryMu.Lock()
	defer registryMu.Unlock()
	for name, fn := range list {
		registry = append(registry, scenario{area: area, name: name, run: fn})
	}
}

func scenarios() []scenario {
	registryMu.Lock()
	defer registryMu.Unlock()
	out := append([]scenario(nil), registry...)
	sort.Slice(out, func(i, j int) bool {
		if out[i].area != out[j].area {
			return out[i].area < out[j].area
		}
		return out[i].name < out[j].name
	})
	return out
}

// Scenarios returns the names ("area/behaviour") of every scenario Run runs,
// sorted.
func Scenarios() []string {
	var names []string
	for _, sc := range scenarios() {
		names = append(names, sc.area+"/"+sc.name)
	}
	return names
}

// Run runs the conformance suite against the stores f creates. Each scenario
// is a subtest named "area/behaviour" and gets its own store.
func Run(t *testing.T, f Factory) {
	t.Helper()
	if f.New == nil {
		t.Fatal("providertest: Factory.New is nil")
	}
	if f.LockTimeout == 0 {
		f.LockTimeout = DefaultLockTimeout
	}
	if f.LockTimeout < 100*time.Millisecond {
		t.Fatalf("providertest: Factory.LockTimeout %v is below 100ms", f.LockTimeout)
	}
	if f.Freeze != nil && f.DeadAfter <= 0 {
		t.Fatal("providertest: Factory.Freeze is set but DeadAfter is not")
	}
	if f.Workers <= 0 {
		f.Workers = 8
	}
	byArea := map[string][]scenario{}
	var areas []string
	for _, sc := range scenarios() {
		if _, ok := byArea[sc.area]; !ok {
			areas = append(areas, sc.area)
		}
		byArea[sc.area] = append(byArea[sc.area], sc)
	}
	for _, area := range areas {
		list := byArea[area]
		t.Run(area, func(t *testing.T) {
			if !f.Serial {
				t.Parallel()
			}
			if reason, ok := f.Skip[area]; ok {
				t.Skip(reason)
			}
			for _, sc := range list {
				t.Run(sc.name, func(t *testing.T) {
					if !f.Serial {
						t.Parallel()
					}
					if reason, ok := f.Skip[area+"/"+sc.name]; ok {
						t.Skip(reason)
					}
					sc.run(newH(t, &f))
				})
			}
		})
	}
}

// H is the per-scenario harness: the store under test plus helpers that fail
// the scenario on unexpected errors.
type H struct {
	t    *testing.T
	ctx  context.Context
	s    duroxide.Store
	f    *Factory
	lock time.Duration // short lock timeout for expiry scenarios
}

func newH(t *testing.T, f *Factory) *H {
	s := f.New(t)
	if s == nil {
		t.Fatal("providertest: Factory.New returned nil")
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &H{t: t, ctx: t.Context(), s: s, f: f, lock: f.LockTimeout}
}

// ---- generic assertions ----

// reopen returns a second handle on the store's database, skipping the
// scenario when the factory cannot make one.
func (h *H) reopen() *H {
	h.t.Helper()
	if h.f.Reopen == nil {
		h.t.Skip("Factory.Reopen is not set")
	}
	s2 := h.f.Reopen(h.t, h.s)
	if s2 == nil {
		h.fatalf("Factory.Reopen returned nil")
	}
	h.t.Cleanup(func() {
		if err := s2.Close(); err != nil {
			h.t.Errorf("Close of reopened handle: %v", err)
		}
	})
	return &H{t: h.t, ctx: h.ctx, s: s2, f: h.f, lock: h.lock}
}

func (h *H) fatalf(format string, args ...any) {
	h.t.Helper()
	h.t.Fatalf(format, args...)
}

func (h *H) check(err error, what string) {
	h.t.Helper()
	if err != nil {
		h.t.Fatalf("%s: unexpected error: %v", what, err)
	}
}

// wantErr fails unless errors.Is(err, target).
func (h *H) wantErr(err, target error, what string) {
	h.t.Helper()
	if err == nil {
		h.t.Fatalf("%s: succeeded, want error %v", what, target)
	}
	if !errors.Is(err, target) {
		h.t.Fatalf("%s: error %q does not match %v (errors.Is)", what, err, target)
	}
}

func (h *H) equal(got, want any, what string) {
	h.t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		h.t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

// sleepUntil sleeps until the wall clock passes at.
func sleepUntil(at time.Time) {
	if d := time.Until(at); d > 0 {
		time.Sleep(d)
	}
}

// margin is the slack added to time-based waits so that millisecond rounding
// in a store never decides a scenario.
const margin = 60 * time.Millisecond

// eventually polls cond every 10ms until it holds or within elapses.
func (h *H) eventually(within time.Duration, what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(within)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: not reached within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---- orchestrator queue ----

func (h *H) enqueue(item duroxide.WorkItem) {
	h.t.Helper()
	h.check(h.s.EnqueueOrchestratorItem(h.ctx, item, 0), "EnqueueOrchestratorItem("+item.Instance+")")
}

func (h *H) enqueueDelayed(item duroxide.WorkItem, delay time.Duration) {
	h.t.Helper()
	h.check(h.s.EnqueueOrchestratorItem(h.ctx, item, delay), "EnqueueOrchestratorItem(delayed)")
}

// fetch fetches with the given lock timeout; nil when nothing is available.
func (h *H) fetch(lock time.Duration) *duroxide.OrchestrationItem {
	h.t.Helper()
	it, err := h.s.FetchOrchestrationItem(h.ctx, lock)
	h.check(err, "FetchOrchestrationItem")
	if it != nil && it.LockToken == "" {
		h.fatalf("FetchOrchestrationItem returned an item with an empty lock token")
	}
	return it
}

// mustFetch fetches with a long lock and requires an item of instance.
func (h *H) mustFetch(instance string) *duroxide.OrchestrationItem {
	h.t.Helper()
	return h.mustFetchLock(instance, longLock)
}

func (h *H) mustFetchLock(instance string, lock time.Duration) *duroxide.OrchestrationItem {
	h.t.Helper()
	it := h.fetch(lock)
	if it == nil {
		h.fatalf("FetchOrchestrationItem: got nothing, want an item of %q", instance)
	}
	if it.Instance != instance {
		h.fatalf("FetchOrchestrationItem: got instance %q, want %q", it.Instance, instance)
	}
	if len(it.Messages) == 0 {
		h.fatalf("FetchOrchestrationItem: item of %q has no messages", instance)
	}
	for _, m := range it.Messages {
		if m.Instance != instance {
			h.fatalf("FetchOrchestrationItem: batch of %q contains a message of %q", instance, m.Instance)
		}
	}
	return it
}

// noFetch requires that no orchestration item is available.
func (h *H) noFetch(why string) {
	h.t.Helper()
	if it := h.fetch(longLock); it != nil {
		h.fatalf("%s: FetchOrchestrationItem returned %q with %d message(s), want nothing", why, it.Instance, len(it.Messages))
	}
}

// fetchEventually polls until an item is available (for example after a lock
// expired or a delay passed) and requires it to belong to instance.
func (h *H) fetchEventually(instance string, lock time.Duration) *duroxide.OrchestrationItem {
	h.t.Helper()
	var it *duroxide.OrchestrationItem
	h.eventually(5*time.Second, "fetch of "+instance, func() bool {
		it = h.fetch(lock)
		return it != nil
	})
	if it.Instance != instance {
		h.fatalf("FetchOrchestrationItem: got instance %q, want %q", it.Instance, instance)
	}
	return it
}

func (h *H) ack(token string, c *duroxide.TurnCommit) {
	h.t.Helper()
	h.check(h.s.AckOrchestrationItem(h.ctx, token, c), "AckOrchestrationItem")
}

func (h *H) abandon(token string, delay time.Duration, ignoreAttempt bool) {
	h.t.Helper()
	h.check(h.s.AbandonOrchestrationItem(h.ctx, token, duroxide.AbandonParams{Delay: delay, IgnoreAttempt: ignoreAttempt}), "AbandonOrchestrationItem")
}

// drainOrch fetches and acks (empty commit) everything visible, returning
// the batches.
func (h *H) drainOrch() []*duroxide.OrchestrationItem {
	h.t.Helper()
	var out []*duroxide.OrchestrationItem
	for {
		it := h.fetch(longLock)
		if it == nil {
			return out
		}
		out = append(out, it)
		h.ack(it.LockToken, emptyCommit(it))
	}
}

// emptyCommit is the runtime's "discard" ack: a zero TurnCommit that only
// consumes the batch and releases the lock (ExecutionID 0 means the current
// execution; an empty Status leaves it unchanged; no name creates nothing).
func emptyCommit(*duroxide.OrchestrationItem) *duroxide.TurnCommit {
	return &duroxide.TurnCommit{}
}

// ---- worker queue ----

func (h *H) enqueueWork(item duroxide.WorkItem) {
	h.t.Helper()
	h.check(h.s.EnqueueWorkItem(h.ctx, item), "EnqueueWorkItem")
}

func (h *H) fetchWork(lock time.Duration) *duroxide.WorkItemLease {
	h.t.Helper()
	l, err := h.s.FetchWorkItem(h.ctx, lock)
	h.check(err, "FetchWorkItem")
	if l != nil && l.LockToken == "" {
		h.fatalf("FetchWorkItem returned a lease with an empty lock token")
	}
	return l
}

func (h *H) mustFetchWork() *duroxide.WorkItemLease {
	h.t.Helper()
	return h.mustFetchWorkLock(longLock)
}

func (h *H) mustFetchWorkLock(lock time.Duration) *duroxide.WorkItemLease {
	h.t.Helper()
	l := h.fetchWork(lock)
	if l == nil {
		h.fatalf("FetchWorkItem: got nothing, want a work item")
	}
	return l
}

func (h *H) noWork(why string) {
	h.t.Helper()
	if l := h.fetchWork(longLock); l != nil {
		h.fatalf("%s: FetchWorkItem returned %s #%d of %q, want nothing", why, l.Item.Name, l.Item.ID, l.Item.Instance)
	}
}

func (h *H) fetchWorkEventually(lock time.Duration) *duroxide.WorkItemLease {
	h.t.Helper()
	var l *duroxide.WorkItemLease
	h.eventually(5*time.Second, "FetchWorkItem", func() bool {
		l = h.fetchWork(lock)
		return l != nil
	})
	return l
}

func (h *H) ackWork(token string, completion *duroxide.WorkItem) {
	h.t.Helper()
	h.check(h.s.AckWorkItem(h.ctx, token, completion), "AckWorkItem")
}

// drainWork fetches and acks (without completion) every visible work item.
func (h *H) drainWork() []duroxide.WorkItem {
	h.t.Helper()
	var out []duroxide.WorkItem
	for {
		l := h.fetchWork(longLock)
		if l == nil {
			return out
		}
		out = append(out, l.Item)
		h.ackWork(l.LockToken, nil)
	}
}

// ---- reads ----

func (h *H) history(instance string, exec int64) []duroxide.Event {
	h.t.Helper()
	evs, err := h.s.ReadHistory(h.ctx, instance, exec)
	h.check(err, fmt.Sprintf("ReadHistory(%q, %d)", instance, exec))
	return evs
}

func (h *H) historyLen(instance string, exec int64, want int) []duroxide.Event {
	h.t.Helper()
	evs := h.history(instance, exec)
	if len(evs) != want {
		h.fatalf("ReadHistory(%q, %d): %d events %v, want %d", instance, exec, len(evs), evs, want)
	}
	return evs
}

func (h *H) info(instance string) *duroxide.InstanceInfo {
	h.t.Helper()
	inf, err := h.s.GetInstance(h.ctx, instance)
	h.check(err, "GetInstance("+instance+")")
	if inf == nil {
		h.fatalf("GetInstance(%q) returned nil", instance)
	}
	if inf.Instance != instance {
		h.fatalf("GetInstance(%q).Instance = %q", instance, inf.Instance)
	}
	return inf
}

func (h *H) notFound(instance string) {
	h.t.Helper()
	_, err := h.s.GetInstance(h.ctx, instance)
	h.wantErr(err, duroxide.ErrNotFound, "GetInstance("+instance+")")
}

func (h *H) executions(instance string) []duroxide.ExecutionInfo {
	h.t.Helper()
	ex, err := h.s.ListExecutions(h.ctx, instance)
	h.check(err, "ListExecutions("+instance+")")
	return ex
}

func execIDs(ex []duroxide.ExecutionInfo) []int64 {
	var ids []int64
	for _, e := range ex {
		ids = append(ids, e.ExecutionID)
	}
	return ids
}

func (h *H) stats() *duroxide.StoreStats {
	h.t.Helper()
	st, err := h.s.Stats(h.ctx)
	h.check(err, "Stats")
	if st == nil {
		h.fatalf("Stats returned nil")
	}
	return st
}

func (h *H) list(f duroxide.ListFilter) *duroxide.InstancePage {
	h.t.Helper()
	p, err := h.s.ListInstances(h.ctx, f)
	h.check(err, "ListInstances")
	if p == nil {
		h.fatalf("ListInstances returned nil")
	}
	return p
}

// listAll follows cursors and returns every instance id in order.
func (h *H) listAll(f duroxide.ListFilter) []string {
	h.t.Helper()
	var ids []string
	seen := map[string]bool{}
	for range 1000 {
		p := h.list(f)
		for _, in := range p.Instances {
			if seen[in.Instance] {
				h.fatalf("ListInstances: %q returned twice across pages", in.Instance)
			}
			seen[in.Instance] = true
			ids = append(ids, in.Instance)
		}
		if p.NextCursor == "" {
			return ids
		}
		if p.NextCursor == f.Cursor {
			h.fatalf("ListInstances: NextCursor %q repeats the request cursor", p.NextCursor)
		}
		f.Cursor = p.NextCursor
	}
	h.fatalf("ListInstances: more than 1000 pages")
	return nil
}

func (h *H) customStatus(instance string, lastSeen int64) (*string, int64, bool) {
	h.t.Helper()
	cs, err := h.s.GetCustomStatus(h.ctx, instance, lastSeen)
	h.check(err, "GetCustomStatus")
	return cs.Value, cs.Version, cs.Changed
}

// nextVisible returns NextVisibleAt of q.
func (h *H) nextVisible(q duroxide.Queue) (time.Time, bool) {
	h.t.Helper()
	at, ok, err := h.s.NextVisibleAt(h.ctx, q)
	h.check(err, "NextVisibleAt")
	return at, ok
}

// ---- comparisons ----

func asJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return string(b)
}

// sameJSON compares two values by their JSON encodings, which is how the
// contract's records travel (nil and empty slices compare equal).
func (h *H) sameJSON(got, want any, what string) {
	h.t.Helper()
	if g, w := asJSON(got), asJSON(want); g != w {
		h.fatalf("%s:\n got  %s\n want %s", what, g, w)
	}
}

func kinds(evs []duroxide.Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, fmt.Sprintf("%d:%s", e.EventID, e.Kind))
	}
	return strings.Join(s, " ")
}

func msgKinds(ms []duroxide.WorkItem) string {
	var s []string
	for _, m := range ms {
		k := string(m.Kind)
		if m.Name != "" {
			k += "(" + m.Name + ")"
		}
		s = append(s, k)
	}
	return strings.Join(s, " ")
}

func ptr[T any](v T) *T { return &v }

func errorsIsLockLost(err error) bool { return errors.Is(err, duroxide.ErrLockLost) }
