package duroxide

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

type startConfig struct{ version string }

// StartVersion starts the instance on a specific registered version instead
// of the latest.
func StartVersion(v string) StartOption { return func(c *startConfig) { c.version = v } }

// ErrInvalidInput matches client calls with unusable arguments.
var ErrInvalidInput = errors.New("duroxide: invalid input")

// StartOrchestration starts an instance of the named orchestration with a
// JSON-encoded input. It returns once the start is durably queued. Starting
// an instance id that already exists is a no-op (idempotent), so a caller may
// safely retry.
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

// StartRequest is one instance to start with StartOrchestrations.
type StartRequest struct {
	InstanceID string
	Name       string
	Input      any    // JSON-encoded
	Version    string // "" for the latest registered version
}

// StartOrchestrations starts many instances at once: with a store that
// implements Starter, in one transaction, else one after another. Like
// StartOrchestration it is idempotent per instance; a request with an
// unusable id or name fails the whole call before anything is queued.
func (c *Client) StartOrchestrations(ctx context.Context, reqs []StartRequest) error {
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
		var opts []StartOption
		if r.Version != "" {
			opts = append(opts, StartVersion(r.Version))
		}
		if err := c.StartOrchestration(ctx, r.InstanceID, r.Name, r.Input, opts...); err != nil {
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
	r, err := c.store.DeleteInstances(ctx, []string{instanceID}, force)
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
