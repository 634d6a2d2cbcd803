package duroxide

import (
	"context"
	"errors"
	"time"
)

// Store is the durable storage behind a runtime: two peek-lock queues
// (orchestrator and worker), per-execution histories, and instance metadata.
// Implementations live in their own packages (duroxide/sqlite,
// duroxide/postgres) and must pass duroxide/providertest.
//
// A store is pure storage: it never assigns event or execution ids, never
// interprets history, and never creates an instance except when an
// AckOrchestrationItem carries its metadata.
//
// All methods are safe for concurrent use, also from several processes
// sharing one database where the store supports that.
type Store interface {
	// EnqueueOrchestratorItem adds a message to the orchestrator queue of
	// item.Instance, visible after delay (zero: at once). It never creates
	// the instance.
	EnqueueOrchestratorItem(ctx context.Context, item WorkItem, delay time.Duration) error

	// FetchOrchestrationItem locks the instance of the oldest visible
	// orchestrator message whose instance is not locked, tags every visible
	// message of that instance with a new lock token, increments their
	// attempt counts and returns them in queue order. An instance locked by a
	// dead owner (see LeaseReclaimer) counts as unlocked, and the messages
	// of that lost lock keep their attempt counts. It returns (nil, nil)
	// when nothing is available; it does not block waiting for work.
	// History is not loaded; see ReadHistory.
	FetchOrchestrationItem(ctx context.Context, lockTimeout time.Duration) (*OrchestrationItem, error)

	// AckOrchestrationItem commits one turn atomically: instance and execution
	// metadata, the history delta (append-only; a duplicate event id fails
	// the whole ack), new worker and orchestrator messages, deletion of
	// cancelled activities (after the inserts), deletion of the tagged
	// messages, and release of the instance lock. An unknown or expired
	// token fails with ErrLockLost and changes nothing.
	//
	// A commit whose ExecutionID is 0 discards the batch: it only deletes the
	// tagged messages and releases the lock, creating and changing nothing
	// else (the runtime uses it for messages to unknown or finished instances).
	AckOrchestrationItem(ctx context.Context, lockToken string, commit *TurnCommit) error

	// AbandonOrchestrationItem releases the lock without committing; the
	// tagged messages become visible again after p.Delay. With
	// p.IgnoreAttempt their attempt counts are decremented (never below
	// zero). An unknown token fails with ErrLockLost.
	AbandonOrchestrationItem(ctx context.Context, lockToken string, p AbandonParams) error

	// RenewOrchestrationItemLock extends a held, unexpired lock to now+extend.
	// Otherwise (expired, or taken over after its owner was found dead) it
	// fails with ErrLockLost.
	RenewOrchestrationItemLock(ctx context.Context, lockToken string, extend time.Duration) error

	// EnqueueWorkItem adds an activity to the worker queue (used by tests;
	// the runtime enqueues activities through AckOrchestrationItem).
	EnqueueWorkItem(ctx context.Context, item WorkItem) error

	// FetchWorkItem locks the oldest visible, unlocked (or lock-expired, or
	// locked by a dead owner) worker message, increments its attempt count
	// (not for a message whose lock was lost with its dead owner) and returns
	// it. It returns (nil, nil) when nothing is available.
	FetchWorkItem(ctx context.Context, lockTimeout time.Duration) (*WorkItemLease, error)

	// AckWorkItem deletes a locked worker message and, when completion is not
	// nil, enqueues it on the orchestrator queue, atomically. If the message
	// is gone (cancelled) or its lock expired, it fails with ErrLockLost and
	// enqueues nothing.
	AckWorkItem(ctx context.Context, lockToken string, completion *WorkItem) error

	// RenewWorkItemLock extends a held lock; ErrLockLost if the message is
	// gone or the lock expired (the runtime's cancellation signal).
	RenewWorkItemLock(ctx context.Context, lockToken string, extend time.Duration) error

	// AbandonWorkItem unlocks a worker message, visible again after
	// p.Delay; with p.IgnoreAttempt its attempt count is decremented.
	AbandonWorkItem(ctx context.Context, lockToken string, p AbandonParams) error

	// NextVisibleAt reports when the earliest not-yet-visible message of the
	// queue becomes visible; ok is false when there is none.
	NextVisibleAt(ctx context.Context, q Queue) (at time.Time, ok bool, err error)

	// ReadHistory returns the history of one execution in event id order.
	// executionID 0 means the current (latest) execution. An unknown instance
	// or execution yields an empty slice and no error.
	ReadHistory(ctx context.Context, instance string, executionID int64) ([]Event, error)

	// GetInstance returns metadata of one instance, or ErrNotFound.
	GetInstance(ctx context.Context, instance string) (*InstanceInfo, error)

	// ListInstances lists instances, newest first, filtered and paginated.
	ListInstances(ctx context.Context, filter ListFilter) (*InstancePage, error)

	// ListExecutions returns every stored execution of an instance in
	// execution id order; ErrNotFound for an unknown instance.
	ListExecutions(ctx context.Context, instance string) ([]ExecutionInfo, error)

	// ListChildren returns the ids of the direct sub-orchestrations of an instance.
	ListChildren(ctx context.Context, instance string) ([]string, error)

	// DeleteInstances deletes instances p.IDs with their histories,
	// executions, queue messages, locks and all descendants, all or
	// nothing. Without p.Force any instance (or descendant) still running
	// fails the call with ErrInstanceRunning. Deleting a sub-orchestration
	// directly fails with ErrIsSubOrchestration; an unknown id fails with
	// ErrNotFound.
	DeleteInstances(ctx context.Context, p DeleteParams) (DeleteResult, error)

	// DeleteInstancesBulk deletes terminal root instances matching the filter
	// (running instances and sub-orchestrations are skipped), with their
	// descendants.
	DeleteInstancesBulk(ctx context.Context, filter BulkDeleteFilter) (DeleteResult, error)

	// PruneExecutions deletes old executions of a continue-as-new chain. It
	// never deletes the current execution or a running one. ErrNotFound for
	// an unknown instance.
	PruneExecutions(ctx context.Context, instance string, opts PruneOptions) (PruneResult, error)

	// GetCustomStatus returns the instance's custom status if its version
	// is greater than lastSeenVersion; Changed is false otherwise or for an
	// unknown instance.
	GetCustomStatus(ctx context.Context, instance string, lastSeenVersion int64) (CustomStatus, error)

	// Stats returns queue depths and instance counts by status.
	Stats(ctx context.Context) (*StoreStats, error)

	// Close releases the store's resources.
	Close() error
}

// Lease ownership and liveness.
//
// Every lease a store hands out (an orchestration item's instance lock, a
// worker message's lock) belongs to the store handle that fetched it: its
// owner. A store that supports liveness (both stores of this module do)
// keeps, per handle, a heartbeat in the database; a handle whose heartbeat
// stopped for longer than the store's dead-after period (a killed, frozen or
// partitioned process) is dead. For fetches, a lease of a dead owner counts
// as expired, whatever its lock timeout:
//
//   - FetchOrchestrationItem and FetchWorkItem take such work over as soon
//     as the owner is dead, and give it a new lock token, so that the old
//     owner's AckOrchestrationItem, AckWorkItem, Renew… and Abandon… fail
//     with ErrLockLost should it come back.
//   - A delivery lost that way does not count as an attempt: messages that
//     were locked by an owner that died while the lock was still valid are
//     handed out again with the attempt count they already had. A lock that
//     merely expired while its owner was alive still counts (the holder was
//     too slow or stuck, which may be the message's fault).
//   - Closing a handle ends its liveness at once: leases it still holds are
//     taken over immediately, uncounted.
//
// Lock timeouts therefore only bound how long a live but stuck holder keeps
// its work; a dead process's work runs again within the dead-after period.
// Long-running holders keep their leases by renewal.

// AbandonParams are the arguments of AbandonOrchestrationItem and
// AbandonWorkItem.
type AbandonParams struct {
	// Delay is how long the messages stay invisible.
	Delay time.Duration
	// IgnoreAttempt gives the delivery back: the attempt count is
	// decremented (the runtime gave up for its own reasons, such as a
	// shutdown, not because of the message).
	IgnoreAttempt bool
}

// DeleteParams are the arguments of DeleteInstances.
type DeleteParams struct {
	IDs []string
	// Force deletes running instances too.
	Force bool
}

// CustomStatus is GetCustomStatus's answer.
type CustomStatus struct {
	Value   *string // nil: the instance has none (or is unknown)
	Version int64   // increases with every change
	Changed bool    // Version is greater than the version asked about
}

// LocalLease asks a LocalDispatcher call to lease the first Workers worker
// messages of its commit to the calling handle for Timeout.
type LocalLease struct {
	Workers int
	Timeout time.Duration
}

// ActivityTurnParams are the arguments of CommitActivityTurn.
type ActivityTurnParams struct {
	Instance string
	// WorkTokens are the leases of the worker messages whose completions
	// the turn applied.
	WorkTokens []string
	// Timers are TimerCreated event ids of the current execution whose
	// TimerFired messages the turn applied.
	Timers []int64
	// LastEventID is the last event of the history the turn was computed on.
	LastEventID int64
	Commit      *TurnCommit
	Lease       LocalLease
}

// StartTurnResult is StartTurn's answer.
type StartTurnResult struct {
	Leases  []WorkItemLease
	Created bool // false: the instance existed and nothing was written
}

// LeaseReclaimer is implemented by stores that can take back, at once, every
// lease held by other handles, for a process that knows it is the store's
// only user (for example because it holds an exclusive lock on the
// database's directory): every other owner is then a previous incarnation of
// itself and dead. The runtime calls it at Start when
// Options.ExclusiveStore is set.
type LeaseReclaimer interface {
	// ReclaimLeases declares every owner other than the handles of this
	// process dead, so that their leases are fetchable now and their lost
	// deliveries are not counted as attempts. It returns how many owners it
	// declared dead. Calling it while another process uses the store makes
	// that process's work run twice (its acks then fail with ErrLockLost).
	ReclaimLeases(ctx context.Context) (int, error)
}

// LocalDispatcher is implemented by stores that let a runtime keep the work
// of its own process off the queues: activities it schedules are handed to
// its own workers already leased, and an activity's completion is committed
// together with the turn it causes. Both only save round trips: the leases
// belong to the store handle like fetched ones (a dead handle's work is
// taken over as usual), and the runtime falls back to the queues whenever
// a call fails.
type LocalDispatcher interface {
	// AckOrchestrationItemLocal is AckOrchestrationItem that also leases the
	// first lease.Workers messages of c.WorkerItems to this handle for
	// lease.Timeout, in the same transaction, as FetchWorkItem would
	// (attempt count 1), and returns their leases in order. Those messages
	// are not announced to watchers.
	AckOrchestrationItemLocal(ctx context.Context, lockToken string, c *TurnCommit, lease LocalLease) ([]WorkItemLease, error)

	// CommitActivityTurn deletes the worker messages leased with
	// p.WorkTokens and commits p.Commit, a turn of p.Instance computed from
	// their completions on top of a history whose last event is
	// p.LastEventID, in one transaction; p.Lease leases worker messages as
	// AckOrchestrationItemLocal does. It fails, changing nothing, with
	// ErrLockLost when a token is no longer held, and with ErrTurnConflict
	// when the turn is not valid any more: the instance is locked (a turn
	// is in progress), its current execution is not the commit's
	// ExecutionID or not running, or its history has moved past
	// p.LastEventID. Orchestrator messages of the instance are left queued.
	//
	// p.Timers lists timers of the current execution (TimerCreated event
	// ids) whose TimerFired messages the turn applied as well: they are
	// deleted in the same transaction, and ErrTurnConflict is returned when
	// one of them is not queued (untagged) any more.
	CommitActivityTurn(ctx context.Context, p ActivityTurnParams) ([]WorkItemLease, error)

	// ReleaseTimer makes the queued, untagged TimerFired message of timer
	// timerID of the instance's execution visible now (it was delayed by a
	// TimerBackstop and the runtime gives up firing it itself). A message
	// that is gone or tagged is left alone; that is not an error.
	ReleaseTimer(ctx context.Context, instance string, executionID, timerID int64) error

	// StartTurn creates instance with c, the first turn of its execution
	// 1, computed by a runtime that was handed the start directly (no queue
	// message), leasing worker messages as AckOrchestrationItemLocal does,
	// in one transaction. When the instance exists it writes nothing and
	// returns Created false (a start is idempotent); when a queued start of
	// it is being processed it fails with ErrTurnConflict.
	StartTurn(ctx context.Context, instance string, c *TurnCommit, lease LocalLease) (StartTurnResult, error)
}

// Starter is implemented by stores that queue orchestration starts in one
// statement, checking in the same statement that the instance does not
// exist yet (the client's idempotent start without a read first).
type Starter interface {
	// EnqueueStarts queues, in one transaction, every StartOrchestration
	// item whose instance does not exist (has never completed a turn);
	// items of existing instances are skipped. Starts already queued for an
	// instance are not looked at: the runtime runs the first and discards
	// the others.
	EnqueueStarts(ctx context.Context, items []WorkItem) error
}

// Notifier is implemented by stores that can tell a runtime, without
// polling, that new work may be visible. The runtime still polls slowly as a
// fallback, so a notification may be lost without losing work.
type Notifier interface {
	// Watch registers fn to be called whenever a message may have become
	// visible on a queue, or an instance reached a terminal state
	// (QueueStatus). fn must not block. The returned function unregisters it.
	Watch(fn func(q Queue)) (stop func())
}

// Queue names one of the store's queues in notifications.
type Queue int

// Queues.
const (
	QueueOrchestrator Queue = iota
	QueueWorker
	// QueueStatus is not a queue: it signals that some instance changed status.
	QueueStatus
)

// OrchestrationItem is a locked batch of orchestrator messages for one instance.
type OrchestrationItem struct {
	Instance     string
	LockToken    string
	AttemptCount int // the highest attempt count in the batch (1 on first fetch)
	Messages     []WorkItem

	// Instance metadata; Exists is false for an instance that has never
	// been acked (for example the first turn after a start).
	Exists               bool
	OrchestrationName    string
	OrchestrationVersion string
	ExecutionID          int64 // current execution
	ExecutionStatus      Status
	// LastEventID is the highest event id in the current execution's history
	// (0 if none). With CreatedAtMs it lets a runtime check that a cached
	// replay of this instance is still current without reading history.
	LastEventID int64
	CreatedAtMs int64

	// NoMoreVisible is a hint of stores that know that no other instance
	// had visible, unlocked messages when this item was fetched: the runtime
	// then wakes no other dispatcher to look (work that arrives later is
	// announced by its own write). False means unknown.
	NoMoreVisible bool
}

// WorkItemLease is a locked worker-queue message.
type WorkItemLease struct {
	Item         WorkItem
	LockToken    string
	AttemptCount int

	// memRun, when not 0, marks an attempt that held chain memRun runs in
	// memory under the lease of the chain's failed attempt (see hold.go):
	// no message of its own exists, so it is neither acked nor given back.
	memRun uint64
}

// Status is the status of an execution (and of an instance, whose status is
// that of its current execution).
type Status string

// Statuses.
const (
	StatusPending        Status = "Pending" // start enqueued, first turn not yet run (client-side only)
	StatusRunning        Status = "Running"
	StatusCompleted      Status = "Completed"
	StatusFailed         Status = "Failed"
	StatusCancelled      Status = "Cancelled"
	StatusContinuedAsNew Status = "ContinuedAsNew" // only for non-current executions
)

// IsTerminal reports whether s is final.
func (s Status) IsTerminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCancelled || s == StatusContinuedAsNew
}

// TurnCommit is everything one orchestration turn writes.
type TurnCommit struct {
	ExecutionID int64 // execution the delta belongs to (a continue-as-new start uses the new id)

	// Instance metadata, applied with insert-or-ignore on the first ack and
	// updated afterwards.
	OrchestrationName    string
	OrchestrationVersion string
	ParentInstance       string // "" for a root instance

	// Status of ExecutionID after this turn: Running, or a terminal status
	// with Output (result, error text, or continue-as-new input).
	Status Status
	Output string

	HistoryDelta      []Event
	WorkerItems       []WorkItem
	OrchestratorItems []WorkItem // TimerFired items become visible at FireAtMs, others at once
	// CancelledActivities are deleted from the worker queue after WorkerItems are inserted.
	CancelledActivities []ActivityRef
	// CancelledTimers are timers of execution ExecutionID (TimerCreated
	// event ids) nobody waits for any more (select losers, attempt timeouts
	// of finished attempts, timers open when the execution ends): their
	// queued, untagged TimerFired messages are deleted with the turn.
	CancelledTimers []int64

	// TimerBackstop delays the visibility of this turn's TimerFired items
	// to FireAtMs + TimerBackstop: a runtime with local dispatch fires them
	// itself (LocalDispatcher.CommitActivityTurn) and the queue only backs
	// it up should the process die or give them back (ReleaseTimer).
	TimerBackstop time.Duration

	// SetCustomStatus updates the instance's custom status to CustomStatus
	// (nil clears it) and increments its version.
	SetCustomStatus bool
	CustomStatus    *string

	// KeepExecutions, when positive, bounds a continue-as-new chain: after
	// writing the turn the ack deletes the instance's executions older than
	// the newest KeepExecutions, with their history, by the rules of
	// PruneExecutions (never the current execution, never a Running one), in
	// the same transaction as the rest of the turn. Zero prunes nothing. A
	// discarding commit (ExecutionID 0) ignores it. The runtime sets it on
	// the turn that starts a new execution after continue-as-new (see
	// Options.KeepExecutions).
	KeepExecutions int
}

// ActivityRef identifies one scheduled activity.
type ActivityRef struct {
	Instance    string
	ExecutionID int64
	ActivityID  int64
}

// InstanceInfo describes an instance.
type InstanceInfo struct {
	Instance             string
	OrchestrationName    string
	OrchestrationVersion string
	ExecutionID          int64 // current execution
	Status               Status
	Output               string // output of the current execution when terminal
	ParentInstance       string
	CustomStatus         *string
	CustomStatusVersion  int64
	CreatedAt            time.Time
	UpdatedAt            time.Time
}

// ExecutionInfo describes one execution of an instance.
type ExecutionInfo struct {
	ExecutionID int64
	Status      Status
	Output      string
	StartedAt   time.Time
	CompletedAt time.Time // zero while running
	EventCount  int
}

// ListFilter selects instances for ListInstances.
type ListFilter struct {
	Statuses          []Status // empty: all
	OrchestrationName string   // "": all
	InstancePrefix    string   // "": all
	Limit             int      // 0: 100
	// Cursor is the NextCursor of a previous page.
	Cursor string
}

// InstancePage is one page of ListInstances.
type InstancePage struct {
	Instances  []InstanceInfo
	NextCursor string // "" on the last page
}

// BulkDeleteFilter selects instances for DeleteInstancesBulk. Conditions are ANDed.
type BulkDeleteFilter struct {
	InstanceIDs     []string  // empty: any
	CompletedBefore time.Time // zero: any
	Limit           int       // 0: 1000
}

// DeleteResult counts what a delete removed.
type DeleteResult struct {
	InstancesDeleted     int
	ExecutionsDeleted    int
	EventsDeleted        int
	QueueMessagesDeleted int
}

// PruneOptions selects executions to prune. Conditions are ANDed.
type PruneOptions struct {
	// KeepLast keeps the newest n executions (0 and 1 both keep only the current one).
	KeepLast int
	// CompletedBefore prunes only executions completed before this time (zero: any).
	CompletedBefore time.Time
}

// PruneResult counts what a prune removed.
type PruneResult struct {
	ExecutionsDeleted int
	EventsDeleted     int
}

// StoreStats are counts for dashboards and gauges.
type StoreStats struct {
	OrchestratorQueue int            // visible or pending orchestrator messages
	WorkerQueue       int            // worker messages
	Instances         map[Status]int // instances by status of their current execution
}

// Store errors. Implementations wrap them with context; match with errors.Is.
var (
	ErrNotFound           = errors.New("duroxide: not found")
	ErrLockLost           = errors.New("duroxide: lock token invalid or expired")
	ErrInstanceRunning    = errors.New("duroxide: instance is still running")
	ErrIsSubOrchestration = errors.New("duroxide: instance is a sub-orchestration; delete its root instead")
	ErrDuplicateEvent     = errors.New("duroxide: duplicate event id in history")
	// ErrTurnConflict: LocalDispatcher.CommitActivityTurn found the
	// instance locked or changed; commit the completions through the queue.
	ErrTurnConflict = errors.New("duroxide: instance locked or changed since the turn was computed")
)

// Retryable is implemented by store errors that may succeed when retried
// (busy database, lost connection).
type Retryable interface{ Retryable() bool }

// IsRetryable reports whether err (or an error it wraps) is a transient store error.
func IsRetryable(err error) bool {
	var r Retryable
	return errors.As(err, &r) && r.Retryable()
}
