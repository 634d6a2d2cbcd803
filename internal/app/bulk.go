package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/toygres/toygres/client"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/orchestrations"
)

// MaxBulk bounds the instances of one bulk request.
const MaxBulk = 50

// MutationTimeout bounds a create or delete (a bulk one gets a second more
// per instance). See Detached.
const MutationTimeout = 30 * time.Second

// Detached is ctx without its cancellation, bounded by MutationTimeout: a
// mutation runs to its end even when the caller (an HTTP client) hangs up,
// so that no half-made request is left behind.
func Detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), MutationTimeout)
}

// BulkCreateRequest asks for Count instances named BaseName-1 … BaseName-Count
// (the API's request body).
type BulkCreateRequest = client.BulkCreateRequest

// BulkItem is the outcome of one instance of a bulk request.
type BulkItem struct {
	Name string
	// Instance is the created or deleting record (nil on failure).
	Instance *cms.Instance
	// OrchestrationID is the create or delete orchestration (on success).
	OrchestrationID string
	// Err is why this item failed (see Describe).
	Err error
}

// BulkResult is the outcome of a bulk request, item by item in the
// request's order.
type BulkResult struct {
	// Verb is what was done: "created" or "deleted".
	Verb  string
	Items []BulkItem
}

// Succeeded counts the items that succeeded.
func (r *BulkResult) Succeeded() int {
	n := 0
	for _, it := range r.Items {
		if it.Err == nil {
			n++
		}
	}
	return n
}

// FirstFailure is the first item that failed (nil if none did).
func (r *BulkResult) FirstFailure() *BulkItem {
	for i := range r.Items {
		if r.Items[i].Err != nil {
			return &r.Items[i]
		}
	}
	return nil
}

// NothingDone is the message of a bulk request none of whose items
// succeeded, given the first failure's message.
func (r *BulkResult) NothingDone(firstMsg string) string {
	return "no instance was " + r.Verb + ": " + firstMsg
}

// BulkCreate creates r.Count instances named r.BaseName-1 … -Count with the
// same settings. Every request is validated (including that no name is
// taken) before anything is created, and such errors are returned; then
// each instance is created and reported on its own. It runs detached from
// ctx's cancellation (see Detached), a second more per instance.
func (a *App) BulkCreate(ctx context.Context, r BulkCreateRequest) (*BulkResult, error) {
	if r.BaseName == "" {
		return nil, invalidField("base_name", "base_name is required")
	}
	if r.Count < 1 || r.Count > MaxBulk {
		return nil, invalidField("count", "count must be between 1 and %d, got %d", MaxBulk, r.Count)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), MutationTimeout+time.Duration(r.Count)*time.Second)
	defer cancel()
	reqs := make([]CreateRequest, r.Count)
	for i := range reqs {
		reqs[i] = CreateRequest{Name: fmt.Sprintf("%s-%d", r.BaseName, i+1), Password: r.Password,
			PostgresVersion: r.PostgresVersion, StorageGB: r.StorageGB, Internal: r.Internal}
		if err := a.ValidateCreate(ctx, &reqs[i]); err != nil {
			var ve *ValidationError
			if errors.As(err, &ve) && ve.Field == "name" {
				err = invalidField("base_name", "invalid base_name %q: the names %s-1 … %s-%d must be 1-40 lower-case letters, digits and hyphens, starting with a letter",
					r.BaseName, r.BaseName, r.BaseName, r.Count)
			}
			return nil, err
		}
	}
	var taken []string
	for _, cr := range reqs {
		inst, err := a.cms.Get(ctx, cr.Name)
		switch {
		case errors.Is(err, cms.ErrNotFound):
		case err != nil:
			return nil, err
		case inst.State.Active():
			taken = append(taken, cr.Name)
		}
	}
	if len(taken) > 0 {
		return nil, &ConflictError{Msg: "names already in use by active instances: " + strings.Join(taken, ", "), Field: "base_name"}
	}
	res := &BulkResult{Verb: "created", Items: make([]BulkItem, 0, r.Count)}
	for _, cr := range reqs {
		it := BulkItem{Name: cr.Name}
		it.Instance, it.Err = a.CreateInstance(ctx, cr)
		if it.Err == nil {
			it.OrchestrationID = it.Instance.CreateOrchestrationID
		}
		res.Items = append(res.Items, it)
	}
	return res, nil
}

// BulkDelete starts deleting each named instance (see DeleteInstance),
// reporting on each on its own. Bad lists (empty, too long, an invalid or
// repeated name) are refused before any work. It runs detached from ctx's
// cancellation (see Detached), a second more per instance.
func (a *App) BulkDelete(ctx context.Context, names []string) (*BulkResult, error) {
	if len(names) < 1 || len(names) > MaxBulk {
		return nil, invalid("names must hold between 1 and %d names, got %d", MaxBulk, len(names))
	}
	seen := map[string]bool{}
	for _, n := range names {
		if !nameRE.MatchString(n) {
			return nil, invalid("invalid instance name %q", n)
		}
		if seen[n] {
			return nil, invalid("name %q is listed twice", n)
		}
		seen[n] = true
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), MutationTimeout+time.Duration(len(names))*time.Second)
	defer cancel()
	res := &BulkResult{Verb: "deleted", Items: make([]BulkItem, 0, len(names))}
	for _, n := range names {
		it := BulkItem{Name: n}
		inst, err := a.DeleteInstance(ctx, n)
		if err != nil {
			it.Err = err
		} else {
			it.OrchestrationID = orchestrations.DeleteID(inst.InternalName)
			in := *inst
			in.DeleteOrchestrationID = it.OrchestrationID
			it.Instance = &in
		}
		res.Items = append(res.Items, it)
	}
	return res, nil
}
