package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Instance states (Instance.State).
const (
	StateCreating = "creating"
	StateRunning  = "running"
	StateFailed   = "failed"
	StateDeleting = "deleting"
	StateDeleted  = "deleted"
)

func instancePath(name string) string { return "/api/instances/" + url.PathEscape(name) }

func orchestrationPath(id string) string { return "/api/orchestrations/" + url.PathEscape(id) }

func withQuery(path string, q url.Values) string {
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}

// Health calls the public GET /health (no token needed).
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var h Health
	if err := c.Do(ctx, http.MethodGet, "/health", nil, &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// Metrics returns the Prometheus text of GET /metrics.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	b, err := c.exchange(ctx, http.MethodGet, "/metrics", nil, "text/plain")
	return string(b), err
}

// OpenAPI returns the server's OpenAPI 3.1 description (GET /api/openapi.json).
func (c *Client) OpenAPI(ctx context.Context) (json.RawMessage, error) {
	var raw json.RawMessage
	err := c.Do(ctx, http.MethodGet, "/api/openapi.json", nil, &raw)
	return raw, err
}

// Login signs in as the admin account (POST /api/login) and, on success,
// makes the client send the new token.
func (c *Client) Login(ctx context.Context, username, password string) (*LoginResponse, error) {
	var lr LoginResponse
	if err := c.Do(ctx, http.MethodPost, "/api/login", LoginRequest{Username: username, Password: password}, &lr); err != nil {
		return nil, err
	}
	c.SetToken(lr.Token)
	return &lr, nil
}

// Logout revokes the client's token (POST /api/logout).
func (c *Client) Logout(ctx context.Context) error {
	return c.Do(ctx, http.MethodPost, "/api/logout", nil, nil)
}

// Session describes the session of the client's token (GET /api/session).
func (c *Client) Session(ctx context.Context) (*SessionInfo, error) {
	var s SessionInfo
	if err := c.Do(ctx, http.MethodGet, "/api/session", nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// ListInstancesOptions filter GET /api/instances. The zero value lists
// live instances (creating, running, deleting; broken ones included).
type ListInstancesOptions struct {
	// All includes failed and deleted instances.
	All bool
	// States lists only these states (creating, running, failed, deleting,
	// deleted, or "broken"); it overrides All.
	States []string
	// Name lists only records of this name.
	Name string
	// Limit caps the count (0: no cap).
	Limit int
}

// ListInstances lists instances, newest first, without secrets.
func (c *Client) ListInstances(ctx context.Context, opts ListInstancesOptions) (*InstanceList, error) {
	q := url.Values{}
	if opts.All {
		q.Set("all", "true")
	}
	if len(opts.States) > 0 {
		q.Set("state", strings.Join(opts.States, ","))
	}
	if opts.Name != "" {
		q.Set("name", opts.Name)
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	var l InstanceList
	if err := c.Do(ctx, http.MethodGet, withQuery("/api/instances", q), nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// CreateInstance starts creating an instance (202); follow it with
// WaitForInstance. A taken name is ErrConflict, invalid settings
// ErrBadRequest with Error.Field set.
func (c *Client) CreateInstance(ctx context.Context, req CreateInstanceRequest) (*Instance, error) {
	var in Instance
	if err := c.Do(ctx, http.MethodPost, "/api/instances", req, &in); err != nil {
		return nil, err
	}
	return &in, nil
}

// BulkCreateInstances creates <base_name>-1 … <base_name>-<count>. When no
// item succeeded the error is an *Error and the per-item results are
// still returned.
func (c *Client) BulkCreateInstances(ctx context.Context, req BulkCreateRequest) (*BulkResponse, error) {
	return c.bulk(ctx, "/api/instances/bulk", req)
}

// BulkDeleteInstances deletes up to 50 instances by name, reporting each.
func (c *Client) BulkDeleteInstances(ctx context.Context, names []string) (*BulkResponse, error) {
	return c.bulk(ctx, "/api/instances/bulk-delete", BulkDeleteRequest{Names: names})
}

func (c *Client) bulk(ctx context.Context, path string, body any) (*BulkResponse, error) {
	var res BulkResponse
	err := c.Do(ctx, http.MethodPost, path, body, &res)
	var e *Error
	if errors.As(err, &e) && len(e.Body) > 0 {
		var partial BulkResponse
		if json.Unmarshal(e.Body, &partial) == nil && partial.Requested > 0 {
			return &partial, err
		}
	}
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// GetInstanceOptions bound the events and health checks GetInstance returns
// (0: the server's defaults, 50 and 10; a negative value: none).
type GetInstanceOptions struct {
	Events int
	Checks int
}

// GetInstance returns an instance with its connection string (which holds
// the password), newest events and health checks. Unknown: ErrNotFound.
func (c *Client) GetInstance(ctx context.Context, name string, opts GetInstanceOptions) (*InstanceDetail, error) {
	q := url.Values{}
	for k, v := range map[string]int{"events": opts.Events, "checks": opts.Checks} {
		switch {
		case v < 0:
			q.Set(k, "0")
		case v > 0:
			q.Set(k, strconv.Itoa(v))
		}
	}
	var d InstanceDetail
	if err := c.Do(ctx, http.MethodGet, withQuery(instancePath(name), q), nil, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// DeleteInstance starts deleting every record of the name not yet deleted
// (202); follow it with WaitForInstance(…, StateDeleted). The instances'
// backups and WAL archive stay for their retention (see
// DeleteInstanceWithOptions).
func (c *Client) DeleteInstance(ctx context.Context, name string) (*DeleteResponse, error) {
	return c.DeleteInstanceWithOptions(ctx, name, DeleteInstanceOptions{})
}

// DeleteInstanceOptions tune DeleteInstanceWithOptions.
type DeleteInstanceOptions struct {
	// PurgeBackups removes the instances' backups and WAL archive with
	// them; otherwise they stay until they expire, so the name can still
	// be restored (Restore with From: name).
	PurgeBackups bool
}

// DeleteInstanceWithOptions is DeleteInstance with options.
func (c *Client) DeleteInstanceWithOptions(ctx context.Context, name string, opts DeleteInstanceOptions) (*DeleteResponse, error) {
	q := url.Values{}
	if opts.PurgeBackups {
		q.Set("purge_backups", "true")
	}
	var d DeleteResponse
	if err := c.Do(ctx, http.MethodDelete, withQuery(instancePath(name), q), nil, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// PurgeInstance removes the records of the name's deleted and failed
// instances that have nothing left on the data plane.
func (c *Client) PurgeInstance(ctx context.Context, name string) (*PurgeResponse, error) {
	var p PurgeResponse
	if err := c.Do(ctx, http.MethodPost, instancePath(name)+"/purge", nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// RepairInstance takes a broken instance's resources over again.
func (c *Client) RepairInstance(ctx context.Context, name string) (*Instance, error) {
	var in Instance
	if err := c.Do(ctx, http.MethodPost, instancePath(name)+"/repair", nil, &in); err != nil {
		return nil, err
	}
	return &in, nil
}

func limitQuery(key string, n int) url.Values {
	q := url.Values{}
	if n > 0 {
		q.Set(key, strconv.Itoa(n))
	}
	return q
}

// InstanceHealth returns the newest limit health checks (0: 50).
func (c *Client) InstanceHealth(ctx context.Context, name string, limit int) (*InstanceHealth, error) {
	var h InstanceHealth
	if err := c.Do(ctx, http.MethodGet, withQuery(instancePath(name)+"/health", limitQuery("limit", limit)), nil, &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// InstanceEvents returns the newest limit events (0: 100).
func (c *Client) InstanceEvents(ctx context.Context, name string, limit int) (*InstanceEvents, error) {
	var e InstanceEvents
	if err := c.Do(ctx, http.MethodGet, withQuery(instancePath(name)+"/events", limitQuery("limit", limit)), nil, &e); err != nil {
		return nil, err
	}
	return &e, nil
}

// InstanceLogs returns the last tail lines of the instance's PostgreSQL
// server log (0: 200), the password masked.
func (c *Client) InstanceLogs(ctx context.Context, name string, tail int) (*InstanceLogs, error) {
	var l InstanceLogs
	if err := c.Do(ctx, http.MethodGet, withQuery(instancePath(name)+"/logs", limitQuery("tail", tail)), nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// ListOrchestrationsOptions filter GET /api/orchestrations.
type ListOrchestrationsOptions struct {
	// Statuses: Running, Completed, Failed, Cancelled (none: all).
	Statuses []string
	// Name is an orchestration name ("create-instance"…).
	Name string
	// Prefix filters instance ids by prefix.
	Prefix string
	// Limit is the page size (0: 100; at most 1000).
	Limit int
	// Cursor is the NextCursor of the previous page.
	Cursor string
}

// ListOrchestrations returns one page of orchestrations, newest first.
func (c *Client) ListOrchestrations(ctx context.Context, opts ListOrchestrationsOptions) (*OrchestrationList, error) {
	q := limitQuery("limit", opts.Limit)
	if len(opts.Statuses) > 0 {
		q.Set("status", strings.Join(opts.Statuses, ","))
	}
	for k, v := range map[string]string{"name": opts.Name, "prefix": opts.Prefix, "cursor": opts.Cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var l OrchestrationList
	if err := c.Do(ctx, http.MethodGet, withQuery("/api/orchestrations", q), nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// GetOrchestration returns an orchestration; history is "" (none), "full",
// or a number of newest executions to include the history of.
func (c *Client) GetOrchestration(ctx context.Context, id, history string) (*OrchestrationDetail, error) {
	q := url.Values{}
	if history != "" {
		q.Set("history", history)
	}
	var d OrchestrationDetail
	if err := c.Do(ctx, http.MethodGet, withQuery(orchestrationPath(id), q), nil, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// CancelOrchestration asks a running orchestration to stop. Finished:
// ErrConflict.
func (c *Client) CancelOrchestration(ctx context.Context, id, reason string) (*CancelResponse, error) {
	var body any
	if reason != "" {
		body = CancelRequest{Reason: reason}
	}
	var r CancelResponse
	if err := c.Do(ctx, http.MethodPost, orchestrationPath(id)+"/cancel", body, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// RecreateOrchestration starts a finished orchestration again with the same
// name, version and input, under a new id.
func (c *Client) RecreateOrchestration(ctx context.Context, id string) (*RecreateResponse, error) {
	var r RecreateResponse
	if err := c.Do(ctx, http.MethodPost, orchestrationPath(id)+"/recreate", nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// RaiseEvent sends an external event to a running orchestration; data is
// any JSON value (nil: null).
func (c *Client) RaiseEvent(ctx context.Context, id, event string, data json.RawMessage) (*RaiseEventResponse, error) {
	var r RaiseEventResponse
	if err := c.Do(ctx, http.MethodPost, orchestrationPath(id)+"/raise-event", RaiseEventRequest{EventName: event, EventData: data}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// ServerLogsOptions filter GET /api/server/logs.
type ServerLogsOptions struct {
	Limit         int    // last lines (0: 200)
	Grep          string // lines containing this text
	Orchestration string // lines of this orchestration id
}

// ServerLogs returns the last matching lines of the server's log.
func (c *Client) ServerLogs(ctx context.Context, opts ServerLogsOptions) (*ServerLogs, error) {
	q := limitQuery("limit", opts.Limit)
	if opts.Grep != "" {
		q.Set("grep", opts.Grep)
	}
	if opts.Orchestration != "" {
		q.Set("orchestration", opts.Orchestration)
	}
	var l ServerLogs
	if err := c.Do(ctx, http.MethodGet, withQuery("/api/server/logs", q), nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// ServerStats counts instances, orchestrations and queued work.
func (c *Client) ServerStats(ctx context.Context) (*ServerStats, error) {
	var s ServerStats
	if err := c.Do(ctx, http.MethodGet, "/api/server/stats", nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// ServerConfig returns the effective configuration, secrets masked.
func (c *Client) ServerConfig(ctx context.Context) (*ServerConfig, error) {
	var s ServerConfig
	if err := c.Do(ctx, http.MethodGet, "/api/server/config", nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// ServerRetries returns the retry tuning report: per activity its policy,
// attempt-success distribution, time to success, exhausted sequences,
// timeouts, circuit state and advice.
func (c *Client) ServerRetries(ctx context.Context) (*ServerRetries, error) {
	var s ServerRetries
	if err := c.Do(ctx, http.MethodGet, "/api/server/retries", nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// ServerWorkers describes the durable runtime's dispatchers and queues.
func (c *Client) ServerWorkers(ctx context.Context) (*ServerWorkers, error) {
	var s ServerWorkers
	if err := c.Do(ctx, http.MethodGet, "/api/server/workers", nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// WaitOptions tune WaitForInstance.
type WaitOptions struct {
	// State to wait for (default StateRunning).
	State string
	// Interval between polls (default 1s).
	Interval time.Duration
	// Progress, if set, is called after every poll with the instance (nil
	// once it is gone) and its create or delete orchestration's custom
	// status ("" if none), e.g. to log the steps of a create.
	Progress func(in *InstanceDetail, step string)
}

// StateError means an instance reached a state it cannot leave for the one
// waited for (failed while waiting for running, say).
type StateError struct {
	Name, Want, Got, Reason string
}

func (e *StateError) Error() string {
	msg := fmt.Sprintf("instance %s is %s, not %s", e.Name, e.Got, e.Want)
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// WaitForInstance polls until the instance is in opts.State and returns it.
// Waiting for StateDeleted also ends when the name is unknown (nil, nil).
// An instance that fails (or is deleted while waiting for running) is a
// *StateError; the context bounds the wait.
func (c *Client) WaitForInstance(ctx context.Context, name string, opts WaitOptions) (*InstanceDetail, error) {
	want := opts.State
	if want == "" {
		want = StateRunning
	}
	interval := opts.Interval
	if interval <= 0 {
		interval = time.Second
	}
	lastStep := ""
	for {
		d, err := c.GetInstance(ctx, name, GetInstanceOptions{Events: -1, Checks: -1})
		switch {
		case errors.Is(err, ErrNotFound) && want == StateDeleted:
			if opts.Progress != nil {
				opts.Progress(nil, "")
			}
			return nil, nil
		case err != nil:
			return nil, err
		}
		if opts.Progress != nil {
			orch := d.CreateOrchestrationID
			if d.State == StateDeleting || want == StateDeleted {
				orch = d.DeleteOrchestrationID
			}
			step := lastStep
			if orch != "" {
				if o, err := c.GetOrchestration(ctx, orch, ""); err == nil && o.CustomStatus != nil {
					step = *o.CustomStatus
				}
			}
			lastStep = step
			opts.Progress(d, step)
		}
		switch {
		case d.State == want:
			return d, nil
		case d.State == StateFailed, want == StateRunning && (d.State == StateDeleting || d.State == StateDeleted):
			return d, &StateError{Name: name, Want: want, Got: d.State, Reason: d.FailureReason}
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return d, fmt.Errorf("wait for instance %s to be %s (it is %s): %w", name, want, d.State, ctx.Err())
		case <-t.C:
		}
	}
}
