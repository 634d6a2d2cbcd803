package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/dataplane/local"
	"github.com/toygres/toygres/internal/orchestrations"
)

// ConflictError is a request the instance's current state does not allow
// (HTTP 409). Field is the request field at fault, if one is; Err the
// store's error, if one caused it (for errors.Is).
type ConflictError struct {
	Msg   string
	Field string
	Err   error
}

func (e *ConflictError) Error() string { return e.Msg }
func (e *ConflictError) Unwrap() error { return e.Err }

func conflict(format string, args ...any) error {
	return &ConflictError{Msg: fmt.Sprintf(format, args...)}
}

// ---- delete ----

// Deletion is what DeleteByName started.
type Deletion struct {
	// Instance is the record the name stands for: the active instance, or
	// else the newest failed one.
	Instance *cms.Instance
	// Records are all records being deleted, Instance first.
	Records []cms.Instance
}

// DeleteInstance starts deleting every record of this name that is not
// deleted yet (see DeleteByName) and returns the one the name stands for.
func (a *App) DeleteInstance(ctx context.Context, name string) (*cms.Instance, error) {
	d, err := a.DeleteByName(ctx, name)
	if err != nil {
		return nil, err
	}
	return d.Instance, nil
}

// DeleteByName starts deleting every record of this name that is not
// deleted: the active instance (at most one holds the name) and the failed
// ones, whose delete removes what their failed create left on the data
// plane and their stored secret. A create still in progress is cancelled
// first; a delete in progress goes on; one that ended without deleting is
// started again. ErrNotFound (wrapped) if the name has no such record.
func (a *App) DeleteByName(ctx context.Context, name string) (*Deletion, error) {
	return a.DeleteByNameWith(ctx, name, DeleteOptions{})
}

// DeleteOptions modify a delete.
type DeleteOptions struct {
	// PurgeBackups removes the instances' backups and WAL archives too; by
	// default they are kept until they expire, so the instance can still
	// be restored.
	PurgeBackups bool
}

// DeleteByNameWith is DeleteByName with options.
func (a *App) DeleteByNameWith(ctx context.Context, name string, opts DeleteOptions) (_ *Deletion, err error) {
	defer func() { err = notFoundAs(err, "instance %q not found or already deleted", name) }()
	recs, err := a.cms.List(ctx, cms.ListOptions{Name: name})
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("instance %q not found or already deleted: %w", name, cms.ErrNotFound)
	}
	// List is newest first; the active record goes first.
	for i, r := range recs {
		if r.State.Active() && i > 0 {
			recs[0], recs[i] = recs[i], recs[0]
			break
		}
	}
	for i := range recs {
		if err := a.deleteRecord(ctx, &recs[i], opts); err != nil {
			return nil, fmt.Errorf("delete %s: %w", recs[i].InternalName, err)
		}
	}
	return &Deletion{Instance: &recs[0], Records: recs}, nil
}

// deleteRecord starts (or restarts) the delete orchestration of one record.
func (a *App) deleteRecord(ctx context.Context, inst *cms.Instance, opts DeleteOptions) error {
	if inst.State == cms.StateCreating && inst.CreateOrchestrationID != "" {
		if err := a.client.CancelInstance(ctx, inst.CreateOrchestrationID, "instance deleted while being created"); err != nil {
			return fmt.Errorf("cancel create: %w", err)
		}
	}
	// A delete under way is left alone. One that ended while the record is
	// not deleted failed (or was interrupted): a fresh one starts.
	id := orchestrations.DeleteID(inst.InternalName)
	if err := a.client.StartOrchestration(ctx, id, orchestrations.DeleteInstance, orchestrations.DeleteInput{InternalName: inst.InternalName, PurgeBackups: opts.PurgeBackups},
		duroxide.OnExisting(duroxide.ReuseRestartEnded)); err != nil {
		return fmt.Errorf("start delete orchestration: %w", err)
	}
	a.logger.Info("instance delete requested", "instance", inst.Name, "internal_name", inst.InternalName,
		"state", string(inst.State), "orchestration_id", id)
	return nil
}

// ---- purge ----

// PurgeSkip is a record Purge left alone, and why.
type PurgeSkip struct {
	InternalName string
	State        cms.State
	Reason       string
}

// PurgeResult is what Purge did.
type PurgeResult struct {
	Purged  []string // internal names whose records are gone
	Skipped []PurgeSkip
}

// Purge removes for good the records of the deleted and failed instances
// of this name (with their events, health checks, secrets and finished
// orchestrations), once nothing of them is left on the data plane and no
// orchestration works on them. The active instance of the name, if any, is
// untouched. ErrNotFound (wrapped) if the name has no record; a
// ConflictError when there were records but none could be purged.
func (a *App) Purge(ctx context.Context, name string) (_ *PurgeResult, err error) {
	defer func() { err = instanceNotFound(name, err) }()
	recs, err := a.cms.List(ctx, cms.ListOptions{Name: name, IncludeDeleted: true})
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("instance %q not found: %w", name, cms.ErrNotFound)
	}
	res := &PurgeResult{Purged: []string{}, Skipped: []PurgeSkip{}}
	for _, r := range recs {
		reason, err := a.purgeBlocker(ctx, &r)
		if err != nil {
			return nil, err
		}
		if reason == "" {
			err = a.cms.Purge(ctx, r.InternalName)
			if errors.Is(err, cms.ErrActive) || errors.Is(err, cms.ErrNotFound) {
				reason = "its state changed"
			} else if err != nil {
				return nil, err
			}
		}
		if reason != "" {
			res.Skipped = append(res.Skipped, PurgeSkip{InternalName: r.InternalName, State: r.State, Reason: reason})
			continue
		}
		a.forgetOrchestrations(ctx, r.InternalName)
		res.Purged = append(res.Purged, r.InternalName)
		a.logger.Info("instance record purged", "instance", r.Name, "internal_name", r.InternalName, "state", string(r.State))
	}
	if len(res.Purged) == 0 {
		s := res.Skipped[0]
		if len(res.Skipped) == 1 {
			return nil, conflict("nothing to purge for %q: %s is %s: %s", name, s.InternalName, s.State, s.Reason)
		}
		return nil, conflict("nothing to purge for %q: %d records are not purgeable (%s is %s: %s)", name, len(res.Skipped), s.InternalName, s.State, s.Reason)
	}
	return res, nil
}

// purgeBlocker says why a record cannot be purged yet ("" if it can).
func (a *App) purgeBlocker(ctx context.Context, r *cms.Instance) (string, error) {
	if r.State != cms.StateFailed && r.State != cms.StateDeleted {
		return "delete it first", nil
	}
	for _, id := range []string{r.CreateOrchestrationID, orchestrations.DeleteID(r.InternalName)} {
		if id == "" {
			continue
		}
		st, err := a.client.GetStatus(ctx, id)
		switch {
		case errors.Is(err, duroxide.ErrNotFound):
		case err != nil:
			return "", fmt.Errorf("read orchestration %s: %w", id, err)
		case !st.Status.IsTerminal():
			return "orchestration " + id + " is still running", nil
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := a.driver.Status(sctx, r.InternalName)
	switch {
	case errors.Is(err, dataplane.ErrNotFound):
		return "", nil
	case err != nil && r.State == cms.StateFailed:
		return "its data-plane resources cannot be read (" + err.Error() + "); delete it first", nil
	case err != nil:
		return "its data-plane resources cannot be read: " + err.Error(), nil
	case r.State == cms.StateFailed:
		return "it still has data-plane resources: delete it first", nil
	default:
		return "it still has data-plane resources: delete it again", nil
	}
}

// forgetOrchestrations removes the finished orchestrations of a purged
// instance; failures only leave history behind.
func (a *App) forgetOrchestrations(ctx context.Context, internalName string) {
	for _, id := range []string{orchestrations.CreateID(internalName), orchestrations.DeleteID(internalName), orchestrations.ActorID(internalName)} {
		if _, err := a.client.DeleteInstance(ctx, id, false); err != nil && !errors.Is(err, duroxide.ErrNotFound) {
			a.logger.Debug("purge: orchestration kept", "orchestration_id", id, "error", err.Error())
		}
	}
}

// ---- broken instances ----

// problemReason is how an adoption problem reads in the CMS and the logs.
func problemReason(p *dataplane.Problem) string {
	if p.Err == nil {
		return string(p.Kind)
	}
	return string(p.Kind) + ": " + p.Err.Error()
}

// removeDeletedLeftovers removes the local resources of instances recorded
// as deleted. Deploy removes what it made when the instance was deleted
// while it ran (see the activities' deployWanted), but a crash between the
// two leaves the resources, and the create was cancelled, so nothing would
// deploy or delete them again. names are the instances Adopt found.
func (a *App) removeDeletedLeftovers(ctx context.Context, d dataplane.Driver, names []string) {
	for _, name := range names {
		inst, err := a.cms.GetByInternalName(ctx, name)
		if err != nil || inst.State != cms.StateDeleted {
			continue // unknown instances are reported by recordAdoptionProblems
		}
		if err := d.Delete(ctx, name); err != nil {
			a.logger.Error("removing the resources a deleted instance left failed", "instance", inst.Name, "internal_name", name, "error", err.Error())
			continue
		}
		a.logger.Warn("removed the resources a deleted instance left", "instance", inst.Name, "internal_name", name)
	}
}

// checkLocalInstances looks at the data-plane resources of every running
// instance and returns those that are missing, unreadable or stopped. It
// runs after Adopt, which starts the servers it can.
func (a *App) checkLocalInstances(ctx context.Context, d dataplane.Driver) ([]*dataplane.Problem, error) {
	running, err := a.cms.List(ctx, cms.ListOptions{States: []cms.State{cms.StateRunning}})
	if err != nil {
		return nil, err
	}
	var out []*dataplane.Problem
	for _, inst := range running {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := d.Status(sctx, inst.InternalName)
		cancel()
		switch {
		case errors.Is(err, dataplane.ErrNotFound):
			out = append(out, &dataplane.Problem{Instance: inst.InternalName, Kind: dataplane.ProblemGone, Err: errors.New("its data-plane resources are gone")})
		case err != nil:
			out = append(out, &dataplane.Problem{Instance: inst.InternalName, Kind: dataplane.ProblemUnreadable, Err: err})
		case st.Phase == local.PhaseStopped:
			out = append(out, &dataplane.Problem{Instance: inst.InternalName, Kind: dataplane.ProblemStartFailed, Err: errors.New(st.Message)})
		}
	}
	return out, nil
}

// recordAdoptionProblems records the outcome of adopting the data plane's
// instances at start: each problem marks its instance broken (a CMS
// problem, a "problem" event and an error log line); instances that were
// broken before and have no problem now are marked repaired. problems must
// cover every instance (the first problem per instance counts). Errors are
// logged: they never stop the start.
func (a *App) recordAdoptionProblems(ctx context.Context, problems []*dataplane.Problem) {
	seen := map[string]bool{}
	for _, p := range problems {
		if seen[p.Instance] {
			continue
		}
		seen[p.Instance] = true
		inst, err := a.cms.GetByInternalName(ctx, p.Instance)
		if errors.Is(err, cms.ErrNotFound) {
			a.logger.Warn("data-plane resources of an unknown instance could not be adopted", "internal_name", p.Instance, "problem", problemReason(p))
			continue
		}
		if err != nil {
			a.logger.Error("recording an adoption problem failed", "internal_name", p.Instance, "problem", problemReason(p), "error", err.Error())
			continue
		}
		if inst.State == cms.StateDeleted {
			a.logger.Warn("a deleted instance left data-plane resources", "instance", inst.Name, "internal_name", p.Instance, "problem", problemReason(p))
			continue
		}
		if err := a.cms.SetProblem(ctx, p.Instance, problemReason(p)); err != nil {
			a.logger.Error("recording an adoption problem failed", "internal_name", p.Instance, "problem", problemReason(p), "error", err.Error())
			continue
		}
		a.logger.Error("instance is broken: its data-plane resources could not be adopted; repair or delete it",
			"instance", inst.Name, "internal_name", p.Instance, "state", string(inst.State), "kind", string(p.Kind), "problem", problemReason(p))
	}
	broken, err := a.cms.List(ctx, cms.ListOptions{Broken: true})
	if err != nil {
		a.logger.Error("listing broken instances failed", "error", err.Error())
		return
	}
	for _, inst := range broken {
		if seen[inst.InternalName] {
			continue
		}
		if err := a.cms.SetProblem(ctx, inst.InternalName, ""); err != nil {
			a.logger.Error("clearing an instance problem failed", "internal_name", inst.InternalName, "error", err.Error())
			continue
		}
		a.logger.Info("instance no longer broken", "instance", inst.Name, "internal_name", inst.InternalName)
	}
}

// RepairInstance retries taking over a running instance's data-plane
// resources (typically one found broken at start): with a driver that is a
// dataplane.Repairer it calls Readopt, otherwise it checks that the server
// is ready again (repaired by hand). On success the instance's problem is
// cleared; on failure the new reason is recorded and returned in a
// ConflictError. ErrNotFound (wrapped) for an unknown name; ConflictError
// for an instance that is not running.
func (a *App) RepairInstance(ctx context.Context, name string) (_ *cms.Instance, err error) {
	defer func() { err = instanceNotFound(name, err) }()
	inst, err := a.cms.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	switch inst.State {
	case cms.StateRunning:
	case cms.StateFailed:
		return nil, conflict("instance %q failed; it cannot be repaired: delete it ('toygres delete %s')", name, name)
	case cms.StateDeleted:
		return nil, fmt.Errorf("instance %q is deleted: %w", name, cms.ErrNotFound)
	default:
		return nil, conflict("instance %q is %s; only running instances can be repaired", name, inst.State)
	}
	if err := a.readopt(ctx, inst.InternalName); err != nil {
		reason := "repair failed: " + err.Error()
		if serr := a.cms.SetProblem(ctx, inst.InternalName, reason); serr != nil {
			a.logger.Error("recording a repair failure failed", "internal_name", inst.InternalName, "error", serr.Error())
		}
		a.logger.Warn("instance repair failed", "instance", name, "internal_name", inst.InternalName, "error", err.Error())
		return nil, conflict("instance %q is still broken: %v", name, err)
	}
	if err := a.cms.SetProblem(ctx, inst.InternalName, ""); err != nil {
		return nil, err
	}
	a.logger.Info("instance repaired", "instance", name, "internal_name", inst.InternalName, "was", inst.Problem)
	return a.cms.GetByInternalName(ctx, inst.InternalName)
}

func (a *App) readopt(ctx context.Context, internalName string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if r, ok := a.driver.(dataplane.Repairer); ok {
		_, err := r.Readopt(ctx, internalName)
		return err
	}
	st, err := a.driver.Status(ctx, internalName)
	if errors.Is(err, dataplane.ErrNotFound) {
		return errors.New("its data-plane resources are gone")
	}
	if err != nil {
		return err
	}
	if !st.Ready {
		return fmt.Errorf("the server is %s (%s); the %s data plane cannot restart it", st.Phase, st.Message, a.driver.Name())
	}
	return nil
}

// recordDriverEvent records what the data plane's supervisor did to an
// instance on its own: restarts and failed restarts become instance events,
// a crash loop marks the instance broken (repair clears it). It runs on the
// driver's goroutines, so it uses its own bounded context.
func (a *App) recordDriverEvent(ev dataplane.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg := ev.Message
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	var err error
	switch ev.Kind {
	case dataplane.EventCrashLoop:
		err = a.cms.SetProblem(ctx, ev.Instance, fmt.Sprintf("%s: the server died %d times in a short time; restarts stopped (repair restarts it): %s", ev.Kind, ev.Attempt, msg))
	default:
		err = a.cms.AddEvent(ctx, ev.Instance, fmt.Sprintf("supervisor %s (crash %d in the window): %s", ev.Kind, ev.Attempt, msg))
	}
	if err != nil && !errors.Is(err, cms.ErrNotFound) {
		a.logger.Error("recording a data-plane event failed", "internal_name", ev.Instance, "kind", string(ev.Kind), "error", err.Error())
	}
}
