// Package providertest is the conformance suite for duroxide stores: every
// implementation of duroxide.Store (duroxide/sqlite, duroxide/postgres, …)
// runs it from its own tests to prove it keeps the contract documented on
// duroxide.Store, duroxide.TurnCommit and duroxide.Notifier.
//
// # Using it
//
// A store package adds one test that hands Run a Factory creating fresh,
// empty, isolated stores:
//
//	func TestConformance(t *testing.T) {
//		providertest.Run(t, providertest.Factory{
//			New: func(t *testing.T) duroxide.Store {
//				s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "store.db"))
//				if err != nil {
//					t.Fatal(err)
//				}
//				return s // closed by the suite
//			},
//			LockTimeout: 400 * time.Millisecond,
//		})
//	}
//
// Each scenario is a subtest named "area/behaviour" (for example
// "atomicity/duplicate_event_rolls_back") with its own store, so a single
// scenario or area can be run with
//
//	go test -run 'TestConformance/deletion/cascade_hierarchy' ./duroxide/sqlite/
//
// Scenarios run in parallel (bounded by go test -parallel) unless
// Factory.Serial is set; Factory.Skip disables scenarios or whole areas with a
// logged reason. Scenarios returns the list of names.
//
// # What it checks
//
// The areas follow the Rust duroxide provider validation suite, adapted to
// the Go contract: atomicity, bulk_deletion, cancellation, concurrency,
// custom_status, deletion, error_handling, history, instance_creation,
// instance_locking, lock_expiration, management, multi_execution, notifier
// (only for stores implementing duroxide.Notifier), poison, prune and
// queue_semantics.
//
// Scenarios drive the store the way a runtime does: they enqueue a start,
// fetch it, and ack realistic turns (OrchestrationStarted plus
// ActivityScheduled events and their worker items, timers, sub-orchestration
// starts, continue-as-new), complete activities through the worker queue, and
// read state back only through the Store interface. Errors are matched with
// errors.Is against the duroxide sentinel errors (ErrLockLost, ErrNotFound,
// ErrDuplicateEvent, ErrInstanceRunning, ErrIsSubOrchestration); where the
// concurrency scenarios race several calls, a loser may also report a
// retryable error (duroxide.IsRetryable).
//
// # Timing
//
// Scenarios that do not test expiry use 60-second locks, so a slow store does
// not make them flaky. Lock-expiry, renewal and delayed-visibility scenarios
// wait for Factory.LockTimeout (default 500ms) to pass; they compare
// against the wall clock of the test process, so a store must take "now"
// from the same clock (or one within a few milliseconds of it). Everything
// else waits by observing state, not by sleeping.
package providertest
