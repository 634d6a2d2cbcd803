package duroxide

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Client starts, signals, inspects and manages orchestration instances. It
// only talks to the store, so it works in any process, with or without a
// runtime.
type Client struct {
	store Store
	rt    *Runtime // set for Runtime.Client: starts run their first turn locally
}

// NewClient returns a client over store.
func NewClient(store Store) *Client { return &Client{store: store} }

// StartOption configures StartOrchestration.
type StartOption func(*startConfig)

type startConfig struct {
	version string
	reuse   IDReusePolicy
}

// StartVersion starts the instance on a specific registered version instead
// of the latest.
func StartVersion(v string) StartOption { return func(c *startConfig) { c.version = v } }

// IDReusePolicy says what StartOrchestration does when an instance with the
// id exists already (after Temporal's WorkflowIDConflictPolicy and
// WorkflowIDReusePolicy). An instance whose current execution continued as
// new counts as running.
type IDReusePolicy int

const (
	// ReuseIgnore leaves an existing instance alone, running or ended, and
	// returns nil: a start is idempotent and safe to retry. The default.
	ReuseIgnore IDReusePolicy = iota
	// ReuseFail returns an error matching ErrInstanceExists when the
	// instance exists, running or ended.
	ReuseFail
	// ReuseRestartEnded leaves a running instance alone (nil) and replaces
	// an ended one (completed, failed or cancelled): its history is deleted
	// and the instance starts again with the new input.
	ReuseRestartEnded
	// ReuseTerminateAndRestart replaces the instance whatever its state: a
	// running one is deleted with force (its pending work is dropped; an
	// activity already running finishes unseen) and the instance starts
	// again with the new input.
	ReuseTerminateAndRestart
)

func (p IDReusePolicy) String() string {
	switch p {
	case ReuseIgnore:
		return "ignore"
	case ReuseFail:
		return "fail"
	case ReuseRestartEnded:
		return "restart-ended"
	case ReuseTerminateAndRestart:
		return "terminate-and-restart"
	}
	return fmt.Sprintf("IDReusePolicy(%d)", int(p))
}

// OnExisting sets what the start does when the instance exists already.
func OnExisting(p IDReusePolicy) StartOption { return func(c *startConfig) { c.reuse = p } }

// ErrInstanceExists matches a start under ReuseFail of an instance that
// exists.
var ErrInstanceExists = errors.New("duroxide: instance exists")

// ErrInvalidInput matches client calls with unusable arguments.
var ErrInvalidInput = errors.New("duroxide: invalid input")

// StartOrchestration starts an instance of the named orchestration with a
// JSON-encoded input. It returns once the start is durably queued. What
// happens when the instance id exists already is the start's IDReusePolicy
// (OnExisting); by default the start is a no-op (idempotent), so a caller
// may safely retry.
//
// ReuseFail checks instances that have run a turn; two concurrent starts of
// a new id may both return nil, and then the first queued runs and the
// other is discarded.
func (c *Client) StartOrchestration(ctx context.Context, instanceID, name string, input any, opts ...StartOption) error {
	var cfg startConfig
	for _, o := range opts {
		o(&cfg)
	}
	if err := validateID(instanceID); err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("%w: empty orchestration name", ErrInvalidInput)
	}
	if cfg.reuse != ReuseIgnore {
		proceed, err := c.applyReuse(ctx, instanceID, cfg.reuse)
		if err != nil || !proceed {
			return err
		}
	}
	in, err := encodePayload(input)
	if err != nil {
		return fmt.Errorf("start %s: %w", instanceID, err)
	}
	item := WorkItem{Kind: WorkStartOrchestration, Instance: instanceID, Name: name, Version: cfg.version, Input: in,
		TraceContext: traceparentOf(ctx)}
	if c.rt != nil && c.rt.startLocal(ctx, item) {
		return nil
	}
	if st, ok := c.store.(Starter); ok {
		if err := st.EnqueueStarts(ctx, []WorkItem{item}); err != nil {
			return fmt.Errorf("start %s: %w", instanceID, err)
		}
		return nil
	}
	if _, err := c.store.GetInstance(ctx, instanceID); err == nil {
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("start %s: %w", instanceID, err)
	}
	if err := c.store.EnqueueOrchestratorItem(ctx, item, 0); err != nil {
		return fmt.Errorf("start %s: %w", instanceID, err)
	}
	return nil
}

// applyReuse deals with an existing instance under policy p before a
// start; proceed is false when the start must do nothing.
func (c *Client) applyReuse(ctx context.Context, instanceID string, p IDReusePolicy) (proceed bool, err error) {
	info, err := c.store.GetInstance(ctx, instanceID)
	switch {
	case errors.Is(err, ErrNotFound):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("start %s: %w", instanceID, err)
	}
	ended := info.Status.IsTerminal() && info.Status != StatusContinuedAsNew
	switch {
	case p == ReuseFail:
		return false, fmt.Errorf("start %s: %w (%s)", instanceID, ErrInstanceExists, info.Status)
	case p == ReuseRestartEnded && !ended:
		return false, nil
	case p == ReuseRestartEnded, p == ReuseTerminateAndRestart:
		if _, err := c.store.DeleteInstances(ctx, DeleteParams{IDs: []string{instanceID}, Force: true}); err != nil {
			return false, fmt.Errorf("start %s: replace the %s instance: %w", instanceID, info.Status, err)
		}
		return true, nil
	}
	return false, fmt.Errorf("%w: unknown IDReusePolicy %d", ErrInvalidInput, int(p))
}

// Recreate starts a new instance newID of the orchestration that instance
// ran, with the same name, version and input (those its first execution
// started with). instance must have ended (ErrInstanceRunning otherwise);
// newID must not exist (ErrInstanceExists). It returns what it started.
func (c *Client) Recreate(ctx context.Context, instance, newID string) (StartRequest, error) {
	info, err := c.store.GetInstance(ctx, instance)
	if err != nil {
		return StartRequest{}, fmt.Errorf("recreate %s: %w", instance, err)
	}
	if !info.Status.IsTerminal() || info.Status == StatusContinuedAsNew {
		return StartRequest{}, fmt.Errorf("recreate %s: %w (%s)", instance, ErrInstanceRunning, info.Status)
	}
	execs, err := c.store.ListExecutions(ctx, instance)
	if err != nil || len(execs) == 0 {
		return StartRequest{}, fmt.Errorf("recreate %s: no stored execution: %w", instance, errors.Join(err, ErrNotFound))
	}
	h, err := c.store.ReadHistory(ctx, instance, execs[0].ExecutionID)
	if err != nil {
		return StartRequest{}, fmt.Errorf("recreate %s: %w", instance, err)
	}
	i := slices.IndexFunc(h, func(e Event) bool { return e.Kind == EventOrchestrationStarted })
	if i < 0 {
		return StartRequest{}, fmt.Errorf("recreate %s: no start event in its first execution: %w", instance, ErrNotFound)
	}
	req := StartRequest{InstanceID: newID, Name: h[i].Name, Version: h[i].Version, Reuse: ReuseFail}
	if req.Name == "" {
		req.Name, req.Version = info.OrchestrationName, info.OrchestrationVersion
	}
	if h[i].Input != "" {
		req.Input = json.RawMessage(h[i].Input)
	}
	if err := c.StartOrchestration(ctx, newID, req.Name, req.Input, StartVersion(req.Version), OnExisting(ReuseFail)); err != nil {
		return StartRequest{}, err
	}
	return req, nil
}

// StartRequest is one instance to start with StartOrchestrations.
type StartRequest struct {
	InstanceID string
	Name       string
	Input      any    // JSON-encoded
	Version    string // "" for the latest registered version
	// Reuse is what happens when the instance exists (ReuseIgnore by
	// default). Requests with another policy are started one by one, after
	// the batch of the others.
	Reuse IDReusePolicy
}

// StartOrchestrations starts many instances at once: with a store that
// implements Starter, in one transaction, else one after another. Like
// StartOrchestration it is idempotent per instance; a request with an
// unusable id or name fails the whole call before anything is queued.
func (c *Client) StartOrchestrations(ctx context.Context, reqs []StartRequest) error {
	var others []StartRequest
	if slices.ContainsFunc(reqs, func(r StartRequest) bool { return r.Reuse != ReuseIgnore }) {
		var batch []StartRequest
		for _, r := range reqs {
			if r.Reuse == ReuseIgnore {
				batch = append(batch, r)
			} else {
				others = append(others, r)
			}
		}
		reqs = batch
		for _, r := range others {
			if err := validateID(r.InstanceID); err != nil {
				return err
			}
			if r.Name == "" {
				return fmt.Errorf("%w: empty orchestration name for %s", ErrInvalidInput, r.InstanceID)
			}
		}
	}
	if err := c.startBatch(ctx, reqs); err != nil {
		return err
	}
	for _, r := range others {
		if err := c.StartOrchestration(ctx, r.InstanceID, r.Name, r.Input, StartVersion(r.Version), OnExisting(r.Reuse)); err != nil {
			return err
		}
	}
	return nil
}

// startBatch starts reqs (all under ReuseIgnore) in one transaction when
// the store can.
func (c *Client) startBatch(ctx context.Context, reqs []StartRequest) error {
	items := make([]WorkItem, len(reqs))
	for i, r := range reqs {
		if err := validateID(r.InstanceID); err != nil {
			return err
		}
		if r.Name == "" {
			return fmt.Errorf("%w: empty orchestration name for %s", ErrInvalidInput, r.InstanceID)
		}
		in, err := encodePayload(r.Input)
		if err != nil {
			return fmt.Errorf("start %s: %w", r.InstanceID, err)
		}
		items[i] = WorkItem{Kind: WorkStartOrchestration, Instance: r.InstanceID, Name: r.Name, Version: r.Version, Input: in,
			TraceContext: traceparentOf(ctx)}
	}
	if len(items) == 0 {
		return nil
	}
	if st, ok := c.store.(Starter); ok {
		if err := st.EnqueueStarts(ctx, items); err != nil {
			return fmt.Errorf("start %d instances: %w", len(items), err)
		}
		return nil
	}
	for _, r := range reqs {
		if err := c.StartOrchestration(ctx, r.InstanceID, r.Name, r.Input, StartVersion(r.Version)); err != nil {
			return err
		}
	}
	return nil
}

func validateID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty instance id", ErrInvalidInput)
	}
	if len(id) > 512 {
		return fmt.Errorf("%w: instance id longer than 512 bytes", ErrInvalidInput)
	}
	if strings.ContainsAny(id, "\x00\n\r") {
		return fmt.Errorf("%w: instance id contains control characters", ErrInvalidInput)
	}
	return nil
}

// RaiseEvent sends an external event to an instance; WaitForEvent receives
// it. data is JSON-encoded.
func (c *Client) RaiseEvent(ctx context.Context, instanceID, name string, data any) error {
	if err := validateID(instanceID); err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("%w: empty event name", ErrInvalidInput)
	}
	d, err := encodePayload(data)
	if err != nil {
		return fmt.Errorf("raise event %s on %s: %w", name, instanceID, err)
	}
	if err := c.store.EnqueueOrchestratorItem(ctx, WorkItem{Kind: WorkExternalRaised, Instance: instanceID, Name: name, Data: d}, 0); err != nil {
		return fmt.Errorf("raise event %s on %s: %w", name, instanceID, err)
	}
	return nil
}

// CancelInstance asks a running instance to stop. It ends with status
// Cancelled; its running activities see their context cancelled and its
// sub-orchestrations are cancelled too. Cancelling an instance that is
// finished or does not exist is a no-op.
func (c *Client) CancelInstance(ctx context.Context, instanceID, reason string) error {
	if err := validateID(instanceID); err != nil {
		return err
	}
	if reason == "" {
		reason = "cancelled by client"
	}
	if err := c.store.EnqueueOrchestratorItem(ctx, WorkItem{Kind: WorkCancelInstance, Instance: instanceID, Reason: reason}, 0); err != nil {
		return fmt.Errorf("cancel %s: %w", instanceID, err)
	}
	return nil
}

// OrchestrationStatus is the state of an instance.
type OrchestrationStatus struct {
	Instance             string
	OrchestrationName    string
	OrchestrationVersion string
	Status               Status
	ExecutionID          int64
	Output               string        // JSON output when Completed
	Error                *ErrorDetails // when Failed or Cancelled
	CustomStatus         *string
	CustomStatusVersion  int64
	ParentInstance       string
	CreatedAt, UpdatedAt time.Time
}

// Decode reads the JSON output of a completed instance into out.
func (s *OrchestrationStatus) Decode(out any) error {
	if err := s.Err(); err != nil {
		return err
	}
	return decodePayload(s.Output, out)
}

// Err returns the instance's failure as an *OrchestrationError, or nil.
func (s *OrchestrationStatus) Err() error {
	if s.Error == nil {
		return nil
	}
	return &OrchestrationError{Instance: s.Instance, Details: *s.Error}
}

// GetStatus returns the status of an instance, or an error matching
// ErrNotFound if it has not started (a queued start is not yet an instance).
func (c *Client) GetStatus(ctx context.Context, instanceID string) (*OrchestrationStatus, error) {
	info, err := c.store.GetInstance(ctx, instanceID)
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", instanceID, err)
	}
	return statusFromInfo(info), nil
}

func statusFromInfo(info *InstanceInfo) *OrchestrationStatus {
	st := &OrchestrationStatus{
		Instance: info.Instance, OrchestrationName: info.OrchestrationName, OrchestrationVersion: info.OrchestrationVersion,
		Status: info.Status, ExecutionID: info.ExecutionID, CustomStatus: info.CustomStatus, CustomStatusVersion: info.CustomStatusVersion,
		ParentInstance: info.ParentInstance, CreatedAt: info.CreatedAt, UpdatedAt: info.UpdatedAt,
	}
	switch info.Status {
	case StatusCompleted:
		st.Output = info.Output
	case StatusFailed, StatusCancelled:
		var d ErrorDetails
		if err := json.Unmarshal([]byte(info.Output), &d); err != nil || d.Category == "" {
			d = ErrorDetails{Category: CategoryApplication, Message: info.Output}
		}
		st.Error = &d
	}
	return st
}

// WaitForCompletion waits until the instance is Completed, Failed or
// Cancelled, or ctx ends. The returned status's Err and Decode give the
// outcome. Bound the wait with context.WithTimeout.
func (c *Client) WaitForCompletion(ctx context.Context, instanceID string) (*OrchestrationStatus, error) {
	var wake chan struct{}
	if n, ok := c.store.(Notifier); ok {
		wake = make(chan struct{}, 1)
		stop := n.Watch(func(q Queue) {
			if q == QueueStatus {
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		})
		defer stop()
	}
	delay := 2 * time.Millisecond
	for {
		info, err := c.store.GetInstance(ctx, instanceID)
		if err == nil && info.Status.IsTerminal() && info.Status != StatusContinuedAsNew {
			return statusFromInfo(info), nil
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("wait for %s: %w", instanceID, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("wait for %s: %w", instanceID, ctx.Err())
		case <-wake:
			t.Stop()
		case <-t.C:
			if delay < 200*time.Millisecond {
				delay *= 2
			}
		}
	}
}

// ListInstances lists instances, newest first.
func (c *Client) ListInstances(ctx context.Context, filter ListFilter) (*InstancePage, error) {
	p, err := c.store.ListInstances(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	return p, nil
}

// ListExecutions lists the stored executions of an instance.
func (c *Client) ListExecutions(ctx context.Context, instanceID string) ([]ExecutionInfo, error) {
	ex, err := c.store.ListExecutions(ctx, instanceID)
	if err != nil {
		return nil, fmt.Errorf("list executions of %s: %w", instanceID, err)
	}
	return ex, nil
}

// ReadHistory returns the history of one execution (0: the current one).
func (c *Client) ReadHistory(ctx context.Context, instanceID string, executionID int64) ([]Event, error) {
	h, err := c.store.ReadHistory(ctx, instanceID, executionID)
	if err != nil {
		return nil, fmt.Errorf("read history of %s: %w", instanceID, err)
	}
	return h, nil
}

// DeleteInstance deletes an instance with its sub-orchestrations, histories
// and pending messages. A running instance needs force.
func (c *Client) DeleteInstance(ctx context.Context, instanceID string, force bool) (DeleteResult, error) {
	r, err := c.store.DeleteInstances(ctx, DeleteParams{IDs: []string{instanceID}, Force: force})
	if err != nil {
		return r, fmt.Errorf("delete %s: %w", instanceID, err)
	}
	return r, nil
}

// DeleteInstancesBulk deletes finished root instances matching filter.
func (c *Client) DeleteInstancesBulk(ctx context.Context, filter BulkDeleteFilter) (DeleteResult, error) {
	r, err := c.store.DeleteInstancesBulk(ctx, filter)
	if err != nil {
		return r, fmt.Errorf("bulk delete: %w", err)
	}
	return r, nil
}

// PruneExecutions deletes old executions of a continue-as-new chain.
func (c *Client) PruneExecutions(ctx context.Context, instanceID string, opts PruneOptions) (PruneResult, error) {
	r, err := c.store.PruneExecutions(ctx, instanceID, opts)
	if err != nil {
		return r, fmt.Errorf("prune %s: %w", instanceID, err)
	}
	return r, nil
}

// Stats returns queue depths and instance counts.
func (c *Client) Stats(ctx context.Context) (*StoreStats, error) {
	s, err := c.store.Stats(ctx)
	if err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	return s, nil
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%q", fmt.Sprint(v))
	}
	return string(b)
}
