package duroxide

import (
	"encoding/json"
	"fmt"
)

// EventKind names the type of a history event. The string value is what is
// stored on disk, so existing values never change.
type EventKind string

// History event kinds.
const (
	// Lifecycle of one execution.
	EventOrchestrationStarted         EventKind = "OrchestrationStarted"
	EventOrchestrationCompleted       EventKind = "OrchestrationCompleted"
	EventOrchestrationFailed          EventKind = "OrchestrationFailed"
	EventOrchestrationContinuedAsNew  EventKind = "OrchestrationContinuedAsNew"
	EventOrchestrationCancelRequested EventKind = "OrchestrationCancelRequested"

	// Activities.
	EventActivityScheduled       EventKind = "ActivityScheduled"
	EventActivityCompleted       EventKind = "ActivityCompleted"
	EventActivityFailed          EventKind = "ActivityFailed"
	EventActivityCancelRequested EventKind = "ActivityCancelRequested"

	// Durable timers.
	EventTimerCreated EventKind = "TimerCreated"
	EventTimerFired   EventKind = "TimerFired"

	// External events.
	EventExternalSubscribed EventKind = "ExternalSubscribed"
	EventExternalEvent      EventKind = "ExternalEvent"

	// Sub-orchestrations and detached orchestrations.
	EventSubOrchestrationScheduled       EventKind = "SubOrchestrationScheduled"
	EventSubOrchestrationCompleted       EventKind = "SubOrchestrationCompleted"
	EventSubOrchestrationFailed          EventKind = "SubOrchestrationFailed"
	EventSubOrchestrationCancelRequested EventKind = "SubOrchestrationCancelRequested"
	EventOrchestrationChained            EventKind = "OrchestrationChained"

	// Miscellaneous.
	EventCustomStatusUpdated EventKind = "CustomStatusUpdated"
	EventSystemCall          EventKind = "SystemCall"
	// EventVersionMarker records the version of a code change an execution
	// took (OrchestrationContext.GetVersion): Name is the change id, Result
	// the version number.
	EventVersionMarker EventKind = "VersionMarker"
)

// TimerPurpose says why a durable timer exists. It is recorded on
// TimerCreated events so a history reader need not guess which timer is a
// retry wait. Histories written before the field existed have it empty.
type TimerPurpose string

// Timer purposes.
const (
	// TimerUser is a timer the orchestration created (CreateTimer, Sleep).
	TimerUser TimerPurpose = "user"
	// TimerBackoff is a retry policy's wait between a failed attempt and the next.
	TimerBackoff TimerPurpose = "backoff"
	// TimerAttemptTimeout bounds one attempt of a retry sequence.
	TimerAttemptTimeout TimerPurpose = "attempt_timeout"
	// TimerTotalTimeout bounds a whole retry sequence.
	TimerTotalTimeout TimerPurpose = "total_timeout"
)

// IsTerminal reports whether k ends an execution.
func (k EventKind) IsTerminal() bool {
	return k == EventOrchestrationCompleted || k == EventOrchestrationFailed || k == EventOrchestrationContinuedAsNew
}

// Event is one entry of an execution's history. Event IDs are assigned by the
// runtime (1 is always OrchestrationStarted) and stores persist events
// verbatim; a store never assigns, rewrites or interprets them.
//
// Event is a flat record: which payload fields are set depends on Kind.
type Event struct {
	EventID       int64     `json:"id"`
	Kind          EventKind `json:"type"`
	SourceEventID int64     `json:"src,omitempty"` // schedule event a completion or cancellation refers to
	TimestampMs   int64     `json:"ts,omitempty"`

	Name     string `json:"name,omitempty"`     // activity, orchestration, event, system call or version change name
	Version  string `json:"version,omitempty"`  // orchestration version
	Input    string `json:"input,omitempty"`    // activity/orchestration input
	Result   string `json:"result,omitempty"`   // activity/sub-orchestration/orchestration output, system call value
	Instance string `json:"instance,omitempty"` // child instance id (sub-orchestration, chained)
	Data     string `json:"data,omitempty"`     // external event payload
	Reason   string `json:"reason,omitempty"`   // cancellation reason
	FireAtMs int64  `json:"fire_at,omitempty"`  // timers

	ParentInstance    string `json:"parent,omitempty"` // OrchestrationStarted of a sub-orchestration
	ParentExecutionID int64  `json:"parent_exec,omitempty"`
	ParentID          int64  `json:"parent_id,omitempty"`

	// Retry detail, set by CallActivityWithRetry and
	// CallSubOrchestrationWithRetry on the schedule events of their
	// attempts and on the timers of the sequence. Attempt is 1-based: on a
	// schedule the attempt it starts, on an attempt-timeout timer the
	// attempt it bounds, on a backoff timer the attempt that failed.
	// MaxAttempts and Policy (RetryPolicy.Summary) describe the policy. All
	// are zero on calls without a policy and in histories written before the
	// fields existed.
	Attempt     int    `json:"attempt,omitempty"`
	MaxAttempts int    `json:"max_attempts,omitempty"`
	Policy      string `json:"policy,omitempty"`
	// RetryPolicy is the whole policy, recorded on the schedule of an
	// activity sequence's first attempt; a sequence started under an
	// activity's default policy follows this record on replay.
	RetryPolicy *PolicyRecord `json:"retry_policy,omitempty"`
	// Purpose is set on TimerCreated (empty in older histories).
	Purpose TimerPurpose `json:"purpose,omitempty"`

	Error        *ErrorDetails `json:"error,omitempty"`
	CustomStatus *string       `json:"custom_status,omitempty"` // CustomStatusUpdated (nil clears), OrchestrationStarted (carried)

	// CarryForward holds external events that an execution had not consumed
	// when it continued as new; they are delivered to the next execution.
	CarryForward []ExternalArrival `json:"carry,omitempty"`

	// TraceContext, on OrchestrationStarted, is the W3C traceparent of the
	// span this execution's turn and activity spans are children of: the
	// "orchestration <name>" span when the starting runtime traces, else the
	// starter's span. Empty when the starter had no span, and in histories
	// written before the field existed. See the package doc, Tracing.
	TraceContext string `json:"trace,omitempty"`
}

// ExternalArrival is an external event carried across continue-as-new.
type ExternalArrival struct {
	Name string `json:"name"`
	Data string `json:"data,omitempty"`
}

func (e Event) String() string {
	switch e.Kind {
	case EventSubOrchestrationScheduled:
		return fmt.Sprintf("#%d SubOrchestrationScheduled(%s)", e.EventID, e.Name)
	case EventActivityScheduled:
		if e.Attempt > 0 {
			return fmt.Sprintf("#%d ActivityScheduled(%s, attempt %d)", e.EventID, e.Name, e.Attempt)
		}
		return fmt.Sprintf("#%d ActivityScheduled(%s)", e.EventID, e.Name)
	case EventTimerCreated:
		if e.Purpose != "" {
			return fmt.Sprintf("#%d TimerCreated(%s)", e.EventID, e.Purpose)
		}
		return fmt.Sprintf("#%d TimerCreated", e.EventID)
	case EventExternalSubscribed, EventExternalEvent, EventSystemCall, EventOrchestrationChained, EventVersionMarker:
		return fmt.Sprintf("#%d %s(%s)", e.EventID, e.Kind, e.Name)
	}
	if e.SourceEventID != 0 {
		return fmt.Sprintf("#%d %s(src=%d)", e.EventID, e.Kind, e.SourceEventID)
	}
	return fmt.Sprintf("#%d %s", e.EventID, e.Kind)
}

// ErrorCategory classifies a failure.
type ErrorCategory string

// Error categories.
const (
	// CategoryApplication is an error returned by user code: an activity, an
	// orchestration, or a panic in either.
	CategoryApplication ErrorCategory = "application"
	// CategoryInfrastructure is a failure of the runtime or store.
	CategoryInfrastructure ErrorCategory = "infrastructure"
	// CategoryConfiguration is a nondeterminism or registration problem.
	CategoryConfiguration ErrorCategory = "configuration"
	// CategoryPoison marks a message that failed too many times.
	CategoryPoison ErrorCategory = "poison"
	// CategoryCancelled marks a cancelled instance.
	CategoryCancelled ErrorCategory = "cancelled"
)

// ErrorDetails is the durable form of an error: what is stored in history and
// carried between workers and orchestrations.
type ErrorDetails struct {
	Category ErrorCategory `json:"category"`
	Message  string        `json:"message"`
	// Type is the Go type of the original error (fmt %T), when known.
	Type string `json:"go_type,omitempty"`
	// Payload is the JSON form of the original error value, when it has one.
	Payload json.RawMessage `json:"payload,omitempty"`
	// NonRetryable is set when the error must end a retry sequence at once.
	NonRetryable bool `json:"non_retryable,omitempty"`
	// Timeout is set when the failure is a timeout.
	Timeout bool `json:"timeout,omitempty"`
}

// Display is the one-line text of the error as users see it.
func (d *ErrorDetails) Display() string {
	if d == nil {
		return ""
	}
	switch d.Category {
	case CategoryConfiguration, CategoryApplication:
		return d.Message
	case CategoryCancelled:
		return "canceled: " + d.Message
	default:
		return string(d.Category) + ": " + d.Message
	}
}
