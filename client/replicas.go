package client

import (
	"context"
	"net/http"
)

// InstanceReplicas is the standby part of an instance's detail.
type InstanceReplicas struct {
	// Replicas is the number of standby servers; SyncReplica: one of them
	// is synchronous (the primary waits for it at commit).
	Replicas    int  `json:"replicas"`
	SyncReplica bool `json:"sync_replica"`
	// ReadOnlyConnectionString reaches the standbys (with the password);
	// empty without standbys. ConnectionString (read-write) always reaches
	// the primary, also after a failover.
	ReadOnlyConnectionString string `json:"read_only_connection_string,omitempty"`
	// Primary is the id of the primary server ("" before any scale).
	Primary string `json:"primary,omitempty"`
	// Servers are the instance's servers as the data plane sees them now,
	// the primary first (absent when it has no resources or the data plane
	// could not be asked; ServersError says why).
	Servers      []Server `json:"servers,omitempty"`
	ServersError string   `json:"servers_error,omitempty"`
}

// Server is one PostgreSQL server of an instance.
type Server struct {
	ID string `json:"id"`
	// Role: primary, standby, fenced (stopped, never to accept writes;
	// waits to be rebuilt) or building (a standby's base copy).
	Role  string `json:"role"`
	Host  string `json:"host,omitempty"`
	Port  int    `json:"port,omitempty"`
	Ready bool   `json:"ready"`
	// Sync: the synchronous standby. Streaming: receiving WAL now.
	Sync      bool `json:"sync,omitempty"`
	Streaming bool `json:"streaming,omitempty"`
	// LagBytes: how far its replay is behind the primary.
	LagBytes int64  `json:"lag_bytes"`
	Timeline int    `json:"timeline,omitempty"`
	Message  string `json:"message,omitempty"`
}

// ScaleRequest is the body of POST /api/instances/{name}/scale.
type ScaleRequest struct {
	Replicas    int  `json:"replicas"`
	SyncReplica bool `json:"sync_replica,omitempty"`
}

// OperationResponse names the orchestration that carries out a scale,
// failover or switchover.
type OperationResponse struct {
	OrchestrationID string `json:"orchestration_id"`
	// Started is false when a failover or switchover of the instance was
	// running already: OrchestrationID is that one.
	Started bool `json:"started"`
}

// ScaleInstance starts converging a running instance to req.Replicas
// standbys; follow the orchestration, or the instance's servers.
func (c *Client) ScaleInstance(ctx context.Context, name string, req ScaleRequest) (*OperationResponse, error) {
	var out OperationResponse
	if err := c.Do(ctx, http.MethodPost, instancePath(name)+"/scale", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Failover starts promoting a standby of the instance in place of its
// primary (which is fenced first), whatever the primary's state.
func (c *Client) Failover(ctx context.Context, name string) (*OperationResponse, error) {
	var out OperationResponse
	if err := c.Do(ctx, http.MethodPost, instancePath(name)+"/failover", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Switchover starts a planned change of primary: the primary is stopped
// cleanly (its standbys receive all its WAL), a streaming standby is
// promoted and the old primary rebuilt as a standby. Nothing is lost.
func (c *Client) Switchover(ctx context.Context, name string) (*OperationResponse, error) {
	var out OperationResponse
	if err := c.Do(ctx, http.MethodPost, instancePath(name)+"/switchover", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
