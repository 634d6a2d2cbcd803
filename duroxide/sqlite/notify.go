package sqlite

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// hub is shared by every Store opened on the same file in this process: it
// serializes their writes and fans notifications out to all their watchers.
type hub struct {
	sem    chan struct{} // write lock (capacity 1)
	lastID atomic.Int64  // last orchestrator queue id handed out

	mu       sync.Mutex
	refs     int
	owners   map[string]struct{} // lease owners of the open Stores of this process
	nextWID  uint64
	watchers atomic.Pointer[[]watcher] // copy-on-write
}

type watcher struct {
	id uint64
	fn func(duroxide.Queue)
}

func newHub() *hub { return &hub{sem: make(chan struct{}, 1), owners: map[string]struct{}{}} }

func (h *hub) addOwner(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.owners[id] = struct{}{}
}

func (h *hub) removeOwner(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.owners, id)
}

func (h *hub) ownerList() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.owners))
	for id := range h.owners {
		out = append(out, id)
	}
	return out
}

// nextID returns a new orchestrator queue id: the wall clock in
// nanoseconds, forced to increase. Ids thus follow enqueue order within
// this process and, roughly, across processes.
func (h *hub) nextID() int64 {
	for {
		last := h.lastID.Load()
		n := max(last+1, time.Now().UnixNano())
		if h.lastID.CompareAndSwap(last, n) {
			return n
		}
	}
}

// seedID makes later ids exceed id (the largest stored one), so that a
// clock that went backwards cannot reorder a queue.
func (h *hub) seedID(id int64) {
	for {
		last := h.lastID.Load()
		if last >= id || h.lastID.CompareAndSwap(last, id) {
			return
		}
	}
}

var (
	hubsMu sync.Mutex
	hubs   = map[string]*hub{}
)

func acquireHub(path string) *hub {
	hubsMu.Lock()
	defer hubsMu.Unlock()
	h := hubs[path]
	if h == nil {
		h = newHub()
		hubs[path] = h
	}
	h.refs++
	return h
}

func releaseHub(path string) {
	hubsMu.Lock()
	defer hubsMu.Unlock()
	h := hubs[path]
	if h == nil {
		return
	}
	h.refs--
	if h.refs <= 0 {
		delete(hubs, path)
	}
}

func (h *hub) watch(fn func(duroxide.Queue)) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nextWID++
	id := h.nextWID
	var cur []watcher
	if p := h.watchers.Load(); p != nil {
		cur = *p
	}
	next := make([]watcher, 0, len(cur)+1)
	next = append(next, cur...)
	next = append(next, watcher{id: id, fn: fn})
	h.watchers.Store(&next)
	return id
}

func (h *hub) unwatch(id uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.watchers.Load()
	if p == nil {
		return
	}
	next := make([]watcher, 0, len(*p))
	for _, w := range *p {
		if w.id != id {
			next = append(next, w)
		}
	}
	h.watchers.Store(&next)
}

// notify calls every watcher once per queue set in qs.
func (h *hub) notify(qs notes) {
	if qs == 0 {
		return
	}
	p := h.watchers.Load()
	if p == nil || len(*p) == 0 {
		return
	}
	for _, w := range *p {
		if qs&noteOrch != 0 {
			w.fn(duroxide.QueueOrchestrator)
		}
		if qs&noteWorker != 0 {
			w.fn(duroxide.QueueWorker)
		}
		if qs&noteStatus != 0 {
			w.fn(duroxide.QueueStatus)
		}
	}
}

// notes is a set of queues to notify.
type notes uint8

const (
	noteOrch notes = 1 << iota
	noteWorker
	noteStatus
)

// Watch implements duroxide.Notifier. fn is called (synchronously, after
// the commit, so it must not block) whenever a message may have become
// visible on a queue or an instance reached a terminal status, by any Store
// of this process open on the same database file. The returned function
// unregisters fn; Close unregisters every watcher of the store.
func (s *Store) Watch(fn func(q duroxide.Queue)) (stop func()) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	if s.watchers == nil { // closed
		return func() {}
	}
	id := s.hub.watch(fn)
	s.watchers[id] = struct{}{}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.watchMu.Lock()
			defer s.watchMu.Unlock()
			if s.watchers == nil {
				return
			}
			delete(s.watchers, id)
			s.hub.unwatch(id)
		})
	}
}
