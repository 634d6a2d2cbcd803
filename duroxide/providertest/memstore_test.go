package providertest_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/providertest"
)

// memStore is a minimal in-memory reference implementation of the contract.
// It exists to check the suite itself: every scenario must pass against it.
type memStore struct {
	mu        sync.Mutex
	seq       int64
	orchQ     []*oMsg
	workQ     []*wMsg
	locks     map[string]*iLock // instance -> lock
	tokens    map[string]string // orchestration token -> instance
	instances map[string]*memInst
	watchers  map[int]func(duroxide.Queue)
	watchSeq  int
}

type oMsg struct {
	seq       int64
	item      duroxide.WorkItem
	visibleAt time.Time
	token     string
	attempts  int
}

type wMsg struct {
	seq       int64
	item      duroxide.WorkItem
	visibleAt time.Time
	token     string
	until     time.Time
	attempts  int
}

type iLock struct {
	token string
	until time.Time
}

type memInst struct {
	info  duroxide.InstanceInfo
	execs map[int64]*memExec
}

type memExec struct {
	info   duroxide.ExecutionInfo
	events []duroxide.Event
}

func newMemStore() *memStore {
	return &memStore{locks: map[string]*iLock{}, tokens: map[string]string{}, instances: map[string]*memInst{}, watchers: map[int]func(duroxide.Queue){}}
}

func (s *memStore) token() string {
	s.seq++
	return "tok-" + strconv.FormatInt(s.seq, 10)
}

func (s *memStore) notify(qs ...duroxide.Queue) {
	for _, fn := range s.watchers {
		for _, q := range qs {
			fn(q)
		}
	}
}

func (s *memStore) Watch(fn func(duroxide.Queue)) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchSeq++
	id := s.watchSeq
	s.watchers[id] = fn
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.watchers, id)
	}
}

func (s *memStore) EnqueueOrchestratorItem(ctx context.Context, item duroxide.WorkItem, delay time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	s.orchQ = append(s.orchQ, &oMsg{seq: s.seq, item: clone(item), visibleAt: time.Now().Add(delay)})
	s.notify(duroxide.QueueOrchestrator)
	return nil
}

func clone(w duroxide.WorkItem) duroxide.WorkItem { return w }

func (s *memStore) locked(instance string, now time.Time) bool {
	l, ok := s.locks[instance]
	return ok && l.until.After(now)
}

func (s *memStore) FetchOrchestrationItem(ctx context.Context, lockTimeout time.Duration) (*duroxide.OrchestrationItem, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	var inst string
	for _, m := range s.orchQ {
		if !m.visibleAt.After(now) && !s.locked(m.item.Instance, now) {
			inst = m.item.Instance
			break
		}
	}
	if inst == "" {
		return nil, nil
	}
	if old, ok := s.locks[inst]; ok {
		delete(s.tokens, old.token)
	}
	tok := s.token()
	s.locks[inst] = &iLock{token: tok, until: now.Add(lockTimeout)}
	s.tokens[tok] = inst
	it := &duroxide.OrchestrationItem{Instance: inst, LockToken: tok}
	for _, m := range s.orchQ {
		if m.item.Instance == inst && !m.visibleAt.After(now) {
			m.token = tok
			m.attempts++
			it.AttemptCount = max(it.AttemptCount, m.attempts)
			it.Messages = append(it.Messages, m.item)
		}
	}
	if in, ok := s.instances[inst]; ok {
		it.Exists = true
		it.OrchestrationName = in.info.OrchestrationName
		it.OrchestrationVersion = in.info.OrchestrationVersion
		it.ExecutionID = in.info.ExecutionID
		ex := in.execs[in.info.ExecutionID]
		it.ExecutionStatus = ex.info.Status
		if n := len(ex.events); n > 0 {
			it.LastEventID = ex.events[n-1].EventID
		}
		it.CreatedAtMs = in.info.CreatedAt.UnixMilli()
	}
	return it, nil
}

// validLock returns the instance of a held, unexpired orchestration lock.
func (s *memStore) validLock(token string, now time.Time) (string, bool) {
	inst, ok := s.tokens[token]
	if !ok {
		return "", false
	}
	l := s.locks[inst]
	if l == nil || l.token != token || !l.until.After(now) {
		return "", false
	}
	return inst, true
}

func (s *memStore) releaseLock(inst, token string) {
	delete(s.tokens, token)
	if l := s.locks[inst]; l != nil && l.token == token {
		delete(s.locks, inst)
	}
}

func (s *memStore) AckOrchestrationItem(ctx context.Context, token string, c *duroxide.TurnCommit) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	inst, ok := s.validLock(token, now)
	if !ok {
		return duroxide.ErrLockLost
	}
	// Validate before changing anything.
	in := s.instances[inst]
	keep := c.KeepExecutions
	if c.ExecutionID == 0 { // the current execution; never prunes
		keep = 0
		cc := *c
		cc.ExecutionID = 1
		if in != nil {
			cc.ExecutionID = in.info.ExecutionID
		}
		c = &cc
	}
	if in == nil && c.OrchestrationName == "" {
		if len(c.HistoryDelta) > 0 || c.Status != "" || c.SetCustomStatus {
			return fmt.Errorf("commit for unknown instance %q carries no metadata", inst)
		}
		// A discard: consume the batch and create nothing.
		s.orchQ = slices.DeleteFunc(s.orchQ, func(m *oMsg) bool { return m.token == token })
		s.releaseLock(inst, token)
		return nil
	}
	seen := map[int64]bool{}
	if in != nil {
		if ex := in.execs[c.ExecutionID]; ex != nil {
			for _, e := range ex.events {
				seen[e.EventID] = true
			}
		}
	}
	for _, e := range c.HistoryDelta {
		if seen[e.EventID] {
			return fmt.Errorf("event %d: %w", e.EventID, duroxide.ErrDuplicateEvent)
		}
		seen[e.EventID] = true
	}
	if in == nil {
		in = &memInst{execs: map[int64]*memExec{}, info: duroxide.InstanceInfo{
			Instance: inst, OrchestrationName: c.OrchestrationName, OrchestrationVersion: c.OrchestrationVersion,
			ParentInstance: c.ParentInstance, ExecutionID: c.ExecutionID, CreatedAt: now,
		}}
		s.instances[inst] = in
	} else {
		if c.OrchestrationName != "" {
			in.info.OrchestrationName = c.OrchestrationName
		}
		if c.OrchestrationVersion != "" {
			in.info.OrchestrationVersion = c.OrchestrationVersion
		}
		in.info.ExecutionID = max(in.info.ExecutionID, c.ExecutionID)
	}
	in.info.UpdatedAt = now
	ex := in.execs[c.ExecutionID]
	if ex == nil {
		ex = &memExec{info: duroxide.ExecutionInfo{ExecutionID: c.ExecutionID, Status: duroxide.StatusRunning, StartedAt: now}}
		in.execs[c.ExecutionID] = ex
	}
	ex.events = append(ex.events, c.HistoryDelta...)
	sort.Slice(ex.events, func(i, j int) bool { return ex.events[i].EventID < ex.events[j].EventID })
	ex.info.EventCount = len(ex.events)
	wasTerminal := ex.info.Status.IsTerminal()
	if c.Status != "" {
		ex.info.Status, ex.info.Output = c.Status, c.Output
		if c.Status.IsTerminal() {
			if ex.info.CompletedAt.IsZero() {
				ex.info.CompletedAt = now
			}
		} else {
			ex.info.CompletedAt = time.Time{}
		}
	}
	if c.SetCustomStatus {
		in.info.CustomStatus = c.CustomStatus
		in.info.CustomStatusVersion++
	}
	if keep > 0 {
		s.pruneLocked(in, duroxide.PruneOptions{KeepLast: keep})
	}
	for _, w := range c.WorkerItems {
		s.seq++
		s.workQ = append(s.workQ, &wMsg{seq: s.seq, item: w, visibleAt: now})
	}
	for _, ref := range c.CancelledActivities {
		s.workQ = slices.DeleteFunc(s.workQ, func(m *wMsg) bool {
			return m.item.Instance == ref.Instance && m.item.ExecutionID == ref.ExecutionID && m.item.ID == ref.ActivityID
		})
	}
	for _, id := range c.CancelledTimers {
		s.orchQ = slices.DeleteFunc(s.orchQ, func(m *oMsg) bool {
			return m.token == "" && m.item.Instance == inst && m.item.Kind == duroxide.WorkTimerFired &&
				m.item.ExecutionID == c.ExecutionID && m.item.ID == id
		})
	}
	for _, o := range c.OrchestratorItems {
		s.seq++
		vis := now
		if o.Kind == duroxide.WorkTimerFired {
			vis = time.UnixMilli(o.FireAtMs)
		}
		s.orchQ = append(s.orchQ, &oMsg{seq: s.seq, item: o, visibleAt: vis})
	}
	s.orchQ = slices.DeleteFunc(s.orchQ, func(m *oMsg) bool { return m.token == token })
	s.releaseLock(inst, token)
	if len(c.WorkerItems) > 0 {
		s.notify(duroxide.QueueWorker)
	}
	pending := slices.ContainsFunc(s.orchQ, func(m *oMsg) bool { return m.item.Instance == inst && !m.visibleAt.After(now) })
	if len(c.OrchestratorItems) > 0 || pending {
		s.notify(duroxide.QueueOrchestrator)
	}
	if c.Status.IsTerminal() && !wasTerminal {
		s.notify(duroxide.QueueStatus)
	}
	return nil
}

func (s *memStore) AbandonOrchestrationItem(ctx context.Context, token string, p duroxide.AbandonParams) error {
	delay, ignoreAttempt := p.Delay, p.IgnoreAttempt
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	inst, ok := s.validLock(token, now)
	if !ok {
		return duroxide.ErrLockLost
	}
	for _, m := range s.orchQ {
		if m.token == token {
			m.token = ""
			m.visibleAt = now.Add(delay)
			if ignoreAttempt && m.attempts > 0 {
				m.attempts--
			}
		}
	}
	s.releaseLock(inst, token)
	s.notify(duroxide.QueueOrchestrator)
	return nil
}

func (s *memStore) RenewOrchestrationItemLock(ctx context.Context, token string, extend time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	inst, ok := s.validLock(token, now)
	if !ok {
		return duroxide.ErrLockLost
	}
	s.locks[inst].until = now.Add(extend)
	return nil
}

func (s *memStore) EnqueueWorkItem(ctx context.Context, item duroxide.WorkItem) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	s.workQ = append(s.workQ, &wMsg{seq: s.seq, item: item, visibleAt: time.Now()})
	s.notify(duroxide.QueueWorker)
	return nil
}

func (s *memStore) FetchWorkItem(ctx context.Context, lockTimeout time.Duration) (*duroxide.WorkItemLease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for _, m := range s.workQ {
		if m.visibleAt.After(now) || (m.token != "" && m.until.After(now)) {
			continue
		}
		m.token = s.token()
		m.until = now.Add(lockTimeout)
		m.attempts++
		return &duroxide.WorkItemLease{Item: m.item, LockToken: m.token, AttemptCount: m.attempts}, nil
	}
	return nil, nil
}

func (s *memStore) workLease(token string, now time.Time) (int, bool) {
	for i, m := range s.workQ {
		if m.token == token && token != "" {
			return i, m.until.After(now)
		}
	}
	return -1, false
}

func (s *memStore) AckWorkItem(ctx context.Context, token string, completion *duroxide.WorkItem) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.workLease(token, time.Now())
	if !ok {
		return duroxide.ErrLockLost
	}
	s.workQ = slices.Delete(s.workQ, i, i+1)
	if completion != nil {
		s.seq++
		s.orchQ = append(s.orchQ, &oMsg{seq: s.seq, item: *completion, visibleAt: time.Now()})
		s.notify(duroxide.QueueOrchestrator)
	}
	return nil
}

func (s *memStore) RenewWorkItemLock(ctx context.Context, token string, extend time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	i, ok := s.workLease(token, now)
	if !ok {
		return duroxide.ErrLockLost
	}
	s.workQ[i].until = now.Add(extend)
	return nil
}

func (s *memStore) AbandonWorkItem(ctx context.Context, token string, p duroxide.AbandonParams) error {
	delay, ignoreAttempt := p.Delay, p.IgnoreAttempt
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	i, ok := s.workLease(token, now)
	if !ok {
		return duroxide.ErrLockLost
	}
	m := s.workQ[i]
	m.token, m.until, m.visibleAt = "", time.Time{}, now.Add(delay)
	if ignoreAttempt && m.attempts > 0 {
		m.attempts--
	}
	s.notify(duroxide.QueueWorker)
	return nil
}

func (s *memStore) NextVisibleAt(ctx context.Context, q duroxide.Queue) (time.Time, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	var best time.Time
	consider := func(t time.Time) {
		if t.After(now) && (best.IsZero() || t.Before(best)) {
			best = t
		}
	}
	switch q {
	case duroxide.QueueOrchestrator:
		for _, m := range s.orchQ {
			consider(m.visibleAt)
		}
	case duroxide.QueueWorker:
		for _, m := range s.workQ {
			consider(m.visibleAt)
		}
	}
	return best, !best.IsZero(), nil
}

func (s *memStore) ReadHistory(ctx context.Context, instance string, exec int64) ([]duroxide.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.instances[instance]
	if in == nil {
		return []duroxide.Event{}, nil
	}
	if exec == 0 {
		exec = in.info.ExecutionID
	}
	ex := in.execs[exec]
	if ex == nil {
		return []duroxide.Event{}, nil
	}
	return slices.Clone(ex.events), nil
}

func (s *memStore) infoOf(in *memInst) duroxide.InstanceInfo {
	inf := in.info
	ex := in.execs[inf.ExecutionID]
	inf.Status = ex.info.Status
	inf.Output = ""
	if inf.Status.IsTerminal() {
		inf.Output = ex.info.Output
	}
	return inf
}

func (s *memStore) GetInstance(ctx context.Context, instance string) (*duroxide.InstanceInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.instances[instance]
	if in == nil {
		return nil, duroxide.ErrNotFound
	}
	inf := s.infoOf(in)
	return &inf, nil
}

func (s *memStore) ListInstances(ctx context.Context, f duroxide.ListFilter) (*duroxide.InstancePage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []duroxide.InstanceInfo
	for _, in := range s.instances {
		inf := s.infoOf(in)
		if len(f.Statuses) > 0 && !slices.Contains(f.Statuses, inf.Status) {
			continue
		}
		if f.OrchestrationName != "" && inf.OrchestrationName != f.OrchestrationName {
			continue
		}
		if !strings.HasPrefix(inf.Instance, f.InstancePrefix) {
			continue
		}
		all = append(all, inf)
	}
	less := func(a, b duroxide.InstanceInfo) bool { // newest first
		if !a.CreatedAt.Equal(b.CreatedAt) {
			return a.CreatedAt.After(b.CreatedAt)
		}
		return a.Instance > b.Instance
	}
	sort.Slice(all, func(i, j int) bool { return less(all[i], all[j]) })
	if f.Cursor != "" {
		ns, id, _ := strings.Cut(f.Cursor, "|")
		n, _ := strconv.ParseInt(ns, 10, 64)
		cur := duroxide.InstanceInfo{Instance: id, CreatedAt: time.Unix(0, n)}
		all = slices.DeleteFunc(all, func(x duroxide.InstanceInfo) bool { return !less(cur, x) })
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	p := &duroxide.InstancePage{}
	if len(all) > limit {
		last := all[limit-1]
		p.NextCursor = fmt.Sprintf("%d|%s", last.CreatedAt.UnixNano(), last.Instance)
		all = all[:limit]
	}
	p.Instances = all
	return p, nil
}

func (s *memStore) ListExecutions(ctx context.Context, instance string) ([]duroxide.ExecutionInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.instances[instance]
	if in == nil {
		return nil, duroxide.ErrNotFound
	}
	var out []duroxide.ExecutionInfo
	for _, ex := range in.execs {
		out = append(out, ex.info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ExecutionID < out[j].ExecutionID })
	return out, nil
}

func (s *memStore) children(id string) []string {
	var out []string
	for k, in := range s.instances {
		if in.info.ParentInstance == id {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func (s *memStore) ListChildren(ctx context.Context, instance string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.children(instance), nil
}

func (s *memStore) tree(id string) []string {
	out := []string{id}
	for _, c := range s.children(id) {
		out = append(out, s.tree(c)...)
	}
	return out
}

func (s *memStore) deleteAll(ids []string) duroxide.DeleteResult {
	var r duroxide.DeleteResult
	set := map[string]bool{}
	for _, id := range ids {
		if set[id] {
			continue
		}
		set[id] = true
		in := s.instances[id]
		r.InstancesDeleted++
		for _, ex := range in.execs {
			r.ExecutionsDeleted++
			r.EventsDeleted += len(ex.events)
		}
		delete(s.instances, id)
		if l := s.locks[id]; l != nil {
			delete(s.tokens, l.token)
			delete(s.locks, id)
		}
	}
	n := len(s.orchQ) + len(s.workQ)
	s.orchQ = slices.DeleteFunc(s.orchQ, func(m *oMsg) bool { return set[m.item.Instance] })
	s.workQ = slices.DeleteFunc(s.workQ, func(m *wMsg) bool { return set[m.item.Instance] })
	r.QueueMessagesDeleted = n - len(s.orchQ) - len(s.workQ)
	return r
}

func (s *memStore) status(id string) duroxide.Status {
	in := s.instances[id]
	return in.execs[in.info.ExecutionID].info.Status
}

func (s *memStore) DeleteInstances(ctx context.Context, p duroxide.DeleteParams) (duroxide.DeleteResult, error) {
	ids, force := p.IDs, p.Force
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []string
	for _, id := range ids {
		in := s.instances[id]
		if in == nil {
			return duroxide.DeleteResult{}, fmt.Errorf("%q: %w", id, duroxide.ErrNotFound)
		}
		if in.info.ParentInstance != "" {
			return duroxide.DeleteResult{}, fmt.Errorf("%q: %w", id, duroxide.ErrIsSubOrchestration)
		}
		for _, d := range s.tree(id) {
			if !force && !s.status(d).IsTerminal() {
				return duroxide.DeleteResult{}, fmt.Errorf("%q: %w", d, duroxide.ErrInstanceRunning)
			}
			all = append(all, d)
		}
	}
	r := s.deleteAll(all)
	s.notify(duroxide.QueueStatus)
	return r, nil
}

func (s *memStore) DeleteInstancesBulk(ctx context.Context, f duroxide.BulkDeleteFilter) (duroxide.DeleteResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var roots []*memInst
	for id, in := range s.instances {
		if in.info.ParentInstance != "" || !s.status(id).IsTerminal() {
			continue
		}
		if len(f.InstanceIDs) > 0 && !slices.Contains(f.InstanceIDs, id) {
			continue
		}
		if !f.CompletedBefore.IsZero() && !in.execs[in.info.ExecutionID].info.CompletedAt.Before(f.CompletedBefore) {
			continue
		}
		roots = append(roots, in)
	}
	sort.Slice(roots, func(i, j int) bool { return roots[i].info.CreatedAt.Before(roots[j].info.CreatedAt) })
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	if len(roots) > limit {
		roots = roots[:limit]
	}
	var all []string
	for _, in := range roots {
		all = append(all, s.tree(in.info.Instance)...)
	}
	return s.deleteAll(all), nil
}

func (s *memStore) PruneExecutions(ctx context.Context, instance string, o duroxide.PruneOptions) (duroxide.PruneResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.instances[instance]
	if in == nil {
		return duroxide.PruneResult{}, duroxide.ErrNotFound
	}
	return s.pruneLocked(in, o), nil
}

func (s *memStore) pruneLocked(in *memInst, o duroxide.PruneOptions) duroxide.PruneResult {
	var ids []int64
	for id := range in.execs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	keep := max(o.KeepLast, 1)
	var r duroxide.PruneResult
	for i, id := range ids {
		ex := in.execs[id]
		if i >= len(ids)-keep || id == in.info.ExecutionID || ex.info.Status == duroxide.StatusRunning {
			continue
		}
		if !o.CompletedBefore.IsZero() && !ex.info.CompletedAt.Before(o.CompletedBefore) {
			continue
		}
		r.ExecutionsDeleted++
		r.EventsDeleted += len(ex.events)
		delete(in.execs, id)
	}
	return r
}

func (s *memStore) GetCustomStatus(ctx context.Context, instance string, lastSeen int64) (duroxide.CustomStatus, error) {
	status, version, changed, err := s.getCustomStatus(ctx, instance, lastSeen)
	return duroxide.CustomStatus{Value: status, Version: version, Changed: changed}, err
}

func (s *memStore) getCustomStatus(ctx context.Context, instance string, lastSeen int64) (*string, int64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.instances[instance]
	if in == nil || in.info.CustomStatusVersion <= lastSeen {
		return nil, 0, false, nil
	}
	return in.info.CustomStatus, in.info.CustomStatusVersion, true, nil
}

func (s *memStore) Stats(ctx context.Context) (*duroxide.StoreStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &duroxide.StoreStats{OrchestratorQueue: len(s.orchQ), WorkerQueue: len(s.workQ), Instances: map[duroxide.Status]int{}}
	for id := range s.instances {
		st.Instances[s.status(id)]++
	}
	return st, nil
}

func (s *memStore) Close() error { return nil }

// secondHandle shares a memStore, like a second connection to one database.
type secondHandle struct{ *memStore }

func (secondHandle) Close() error { return nil }

// TestReferenceStore runs the suite against the in-memory reference store.
func TestReferenceStore(t *testing.T) {
	providertest.Run(t, providertest.Factory{
		New:         func(t *testing.T) duroxide.Store { return newMemStore() },
		LockTimeout: 300 * time.Millisecond,
		Reopen: func(t *testing.T, s duroxide.Store) duroxide.Store {
			return secondHandle{s.(*memStore)}
		},
	})
}

func TestScenarioCount(t *testing.T) {
	names := providertest.Scenarios()
	if len(names) < 110 {
		t.Fatalf("%d scenarios, want at least 110", len(names))
	}
	t.Logf("%d scenarios", len(names))
}
