package duroxide

// WorkItemKind names the type of a queued message.
type WorkItemKind string

// Work item kinds. ActivityExecute goes to the worker queue; every other kind
// goes to the orchestrator queue of WorkItem.Instance.
const (
	WorkStartOrchestration WorkItemKind = "StartOrchestration"
	WorkActivityExecute    WorkItemKind = "ActivityExecute"
	WorkActivityCompleted  WorkItemKind = "ActivityCompleted"
	WorkActivityFailed     WorkItemKind = "ActivityFailed"
	WorkTimerFired         WorkItemKind = "TimerFired"
	WorkExternalRaised     WorkItemKind = "ExternalRaised"
	WorkSubOrchCompleted   WorkItemKind = "SubOrchCompleted"
	WorkSubOrchFailed      WorkItemKind = "SubOrchFailed"
	WorkCancelInstance     WorkItemKind = "CancelInstance"
	WorkContinueAsNew      WorkItemKind = "ContinueAsNew"
)

// WorkItem is a message on one of the two queues. Like Event it is a flat
// record whose meaningful fields depend on Kind.
//
// Instance is always the orchestration instance the message belongs to: the
// target of an orchestrator-queue message (for SubOrchCompleted/Failed that
// is the parent), or the owner of an ActivityExecute.
type WorkItem struct {
	Kind        WorkItemKind `json:"kind"`
	Instance    string       `json:"instance"`
	ExecutionID int64        `json:"exec,omitempty"`
	// ID is the schedule event id the message refers to: the activity's
	// ActivityScheduled, the timer's TimerCreated, or, for sub-orchestration
	// results, the parent's SubOrchestrationScheduled.
	ID int64 `json:"id,omitempty"`

	Name    string `json:"name,omitempty"`    // orchestration, activity or event name
	Version string `json:"version,omitempty"` // orchestration version ("" = latest registered)
	Input   string `json:"input,omitempty"`
	Result  string `json:"result,omitempty"`
	Data    string `json:"data,omitempty"`
	Reason  string `json:"reason,omitempty"`

	Error    *ErrorDetails `json:"error,omitempty"`
	FireAtMs int64         `json:"fire_at,omitempty"` // TimerFired: when it becomes visible

	// Sub-orchestration starts carry their parent.
	ParentInstance    string `json:"parent,omitempty"`
	ParentExecutionID int64  `json:"parent_exec,omitempty"`
	ParentID          int64  `json:"parent_id,omitempty"`

	// ActivityExecute carries the calling orchestration for the activity's context.
	OrchestrationName string `json:"orch,omitempty"`

	// ContinueAsNew carries state into the next execution.
	CarryForward []ExternalArrival `json:"carry,omitempty"`
	CustomStatus *string           `json:"custom_status,omitempty"`

	// TraceContext is a W3C traceparent: on StartOrchestration and
	// ContinueAsNew the starter's span (parent of the new execution's
	// orchestration span), on ActivityExecute the orchestration span the
	// attempt's span is a child of. Empty without tracing.
	TraceContext string `json:"trace,omitempty"`
	// ActivityExecute of a retry sequence carries its attempt (1-based)
	// and the policy's MaxAttempts, for the attempt's span.
	Attempt     int `json:"attempt,omitempty"`
	MaxAttempts int `json:"max_attempts,omitempty"`
}

// IsWorkerItem reports whether the item belongs on the worker queue.
func (w *WorkItem) IsWorkerItem() bool { return w.Kind == WorkActivityExecute }
