package duroxide

import (
	"fmt"
)

type taskKind uint8

const (
	taskActivity taskKind = iota + 1
	taskTimer
	taskExternal
	taskSubOrch
	taskSysCall
	taskComposite
)

func (k taskKind) String() string {
	switch k {
	case taskActivity:
		return "activity"
	case taskTimer:
		return "timer"
	case taskExternal:
		return "external event"
	case taskSubOrch:
		return "sub-orchestration"
	case taskSysCall:
		return "system call"
	default:
		return "task"
	}
}

// Task is a pending result inside an orchestration: an activity, a timer,
// an external event, a sub-orchestration, or a composite such as an activity
// with a retry policy. Tasks are created by OrchestrationContext methods and
// awaited with Await, or raced with OrchestrationContext.Select. A Task must
// only be used by the orchestration that created it.
type Task struct {
	e      *engine
	kind   taskKind
	name   string
	id     int64 // schedule event id once bound (0 before)
	done   bool
	result string
	err    error

	onDone    []func()
	onCancel  func() // composite tasks: cancel their current parts
	cancelled bool
	child     string // sub-orchestration instance id once bound
}

// Done reports whether the task has a result. It never blocks.
func (t *Task) Done() bool { return t.done }

// Await blocks the orchestration until the task is done. It returns the
// task's error, or decodes its JSON result into out (out may be nil).
func (t *Task) Await(out any) error {
	t.e.block(func() bool { return t.done })
	if t.err != nil {
		return t.err
	}
	if err := decodePayload(t.result, out); err != nil {
		return fmt.Errorf("%s %s: %w", t.kind, t.name, err)
	}
	return nil
}

// Await is the typed form of Task.Await.
func Await[T any](t *Task) (T, error) {
	var v T
	err := t.Await(&v)
	return v, err
}

// resolve completes the task and runs its callbacks (in registration order).
func (t *Task) resolve(result string, err error) {
	if t.done {
		return
	}
	t.done, t.result, t.err = true, result, err
	cbs := t.onDone
	t.onDone = nil
	for _, cb := range cbs {
		cb()
	}
}

// whenDone runs cb when the task completes (at once if it already has).
func (t *Task) whenDone(cb func()) {
	if t.done {
		cb()
		return
	}
	t.onDone = append(t.onDone, cb)
}
