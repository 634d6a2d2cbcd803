package api

import (
	"time"

	"github.com/toygres/toygres/client"
	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/cms"
)

// The JSON bodies of the API are defined once, in the public client package,
// and aliased here: the server, the Go client and the CLI share them, and
// openapi.json describes them (a test checks every response against it).
type (
	ErrorResponse         = client.ErrorResponse
	Health                = client.Health
	LoginRequest          = client.LoginRequest
	LoginResponse         = client.LoginResponse
	CreateInstanceRequest = client.CreateInstanceRequest
	BulkCreateRequest     = client.BulkCreateRequest
	BulkDeleteRequest     = client.BulkDeleteRequest
	BulkResponse          = client.BulkResponse
	BulkItemResult        = client.BulkItemResult
	Instance              = client.Instance
	InstanceList          = client.InstanceList
	DeleteResponse        = client.DeleteResponse
	DeletingRecord        = client.DeletingRecord
	PurgeResponse         = client.PurgeResponse
	PurgeSkip             = client.PurgeSkip
	InstanceDetail        = client.InstanceDetail
	InstanceEvent         = client.InstanceEvent
	HealthCheck           = client.HealthCheck
	InstanceEvents        = client.InstanceEvents
	InstanceHealth        = client.InstanceHealth
	InstanceLogs          = client.InstanceLogs
	Orchestration         = client.Orchestration
	OrchestrationList     = client.OrchestrationList
	OrchestrationDetail   = client.OrchestrationDetail
	OrchestrationError    = client.OrchestrationError
	Execution             = client.Execution
	HistoryEvent          = client.HistoryEvent
	HistoryStep           = client.HistoryStep
	HistoryAttempt        = client.HistoryAttempt
	HistoryTimer          = client.HistoryTimer
	CarriedEvent          = client.CarriedEvent
	CancelRequest         = client.CancelRequest
	CancelResponse        = client.CancelResponse
	RecreateResponse      = client.RecreateResponse
	RaiseEventRequest     = client.RaiseEventRequest
	RaiseEventResponse    = client.RaiseEventResponse
	ServerLogs            = client.ServerLogs
	ServerStats           = client.ServerStats
	InstanceStats         = client.InstanceStats
	OrchestrationStats    = client.OrchestrationStats
	ServerConfig          = client.ServerConfig
	RetentionConfig       = client.RetentionConfig
	ServerWorkers         = client.ServerWorkers
	RetryPolicyInfo       = client.RetryPolicyInfo
	BreakerInfo           = client.BreakerInfo
	ServerRetries         = client.ServerRetries
	ActivityRetries       = client.ActivityRetries
	AttemptCount          = client.AttemptCount
	DurationSummary       = client.DurationSummary
	CircuitInfo           = client.CircuitInfo
	SessionInfo           = client.SessionInfo
	LogoutResponse        = client.LogoutResponse
)

func utc(t time.Time) time.Time { return t.UTC() }

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func instanceView(in *cms.Instance) Instance {
	return Instance{
		ID: in.ID, Name: in.Name, InternalName: in.InternalName, Driver: in.Driver,
		PostgresVersion: in.PostgresVersion, StorageGB: in.StorageGB, Internal: in.Internal, DNSLabel: in.DNSLabel,
		State: string(in.State), Health: string(in.Health),
		Host: in.Host, Port: in.Port, DNSName: in.DNSName, ExternalIP: in.ExternalIP,
		CreateOrchestrationID: in.CreateOrchestrationID, DeleteOrchestrationID: in.DeleteOrchestrationID,
		ActorOrchestrationID: in.ActorOrchestrationID, FailureReason: in.FailureReason,
		CreatedAt: utc(in.CreatedAt), UpdatedAt: utc(in.UpdatedAt), DeletedAt: optTime(in.DeletedAt),
		Broken: in.Broken(), Problem: in.Problem, ProblemAt: optTime(in.ProblemAt),
	}
}

func eventViews(evs []cms.Event) []InstanceEvent {
	out := make([]InstanceEvent, 0, len(evs))
	for _, e := range evs {
		out = append(out, InstanceEvent{ID: e.ID, Type: e.Type, OldState: string(e.OldState), NewState: string(e.NewState),
			Message: e.Message, CreatedAt: utc(e.CreatedAt)})
	}
	return out
}

func checkViews(hcs []cms.HealthCheck) []HealthCheck {
	out := make([]HealthCheck, 0, len(hcs))
	for _, h := range hcs {
		out = append(out, HealthCheck{ID: h.ID, Status: string(h.Status), PostgresVersion: h.PostgresVersion,
			ResponseTimeMs: h.ResponseTimeMs, Error: h.Error, CheckedAt: utc(h.CheckedAt)})
	}
	return out
}

func orchestrationView(st *duroxide.OrchestrationStatus) Orchestration {
	return Orchestration{ID: st.Instance, Name: st.OrchestrationName, Version: st.OrchestrationVersion,
		Status: string(st.Status), ExecutionID: st.ExecutionID, CustomStatus: st.CustomStatus,
		Parent: st.ParentInstance, CreatedAt: utc(st.CreatedAt), UpdatedAt: utc(st.UpdatedAt)}
}

func orchestrationInfoView(in *duroxide.InstanceInfo) Orchestration {
	return Orchestration{ID: in.Instance, Name: in.OrchestrationName, Version: in.OrchestrationVersion,
		Status: string(in.Status), ExecutionID: in.ExecutionID, CustomStatus: in.CustomStatus,
		Parent: in.ParentInstance, CreatedAt: utc(in.CreatedAt), UpdatedAt: utc(in.UpdatedAt)}
}

func errorView(d *duroxide.ErrorDetails) *OrchestrationError {
	if d == nil {
		return nil
	}
	return &OrchestrationError{Category: string(d.Category), Message: d.Message, Type: d.Type,
		NonRetryable: d.NonRetryable, Timeout: d.Timeout}
}

func historyView(e duroxide.Event) HistoryEvent {
	h := HistoryEvent{
		EventID: e.EventID, Kind: string(e.Kind), SourceEventID: e.SourceEventID,
		Name: e.Name, Version: e.Version, Input: payload(e.Input), Result: payload(e.Result),
		Instance: e.Instance, Data: payload(e.Data), Reason: e.Reason,
		ParentInstance: e.ParentInstance, ParentExecutionID: e.ParentExecutionID,
		Error: errorView(e.Error), CustomStatus: e.CustomStatus,
		Attempt: e.Attempt, MaxAttempts: e.MaxAttempts, Policy: e.Policy, TimerPurpose: string(e.Purpose),
	}
	if e.TimestampMs != 0 {
		h.Timestamp = optTime(time.UnixMilli(e.TimestampMs))
	}
	if e.FireAtMs != 0 {
		h.FireAt = optTime(time.UnixMilli(e.FireAtMs))
	}
	for _, c := range e.CarryForward {
		h.CarryForward = append(h.CarryForward, CarriedEvent{Name: c.Name, Data: payload(c.Data)})
	}
	return h
}
