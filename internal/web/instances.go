package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/orchestrations"
	"github.com/toygres/toygres/internal/redact"
)

// maxListed bounds the instances table.
const maxListed = 500

// createForm and bulkForm are the create forms' values (never the password).
type createForm struct {
	Name      string
	Version   string
	StorageGB string
	Internal  bool
	Err       string
	Field     string // the field the error is about, for aria-invalid
}

type bulkForm struct {
	Base      string
	Count     string
	Version   string
	StorageGB string
	Internal  bool
	Err       string
	Field     string
}

type instancesData struct {
	Q, State  string
	States    []string
	Rows      []cms.Instance
	Shown     int
	Matching  int
	Truncated bool
	Versions  []string
	VerErr    string
	Create    createForm
	Bulk      bulkForm
}

func (c *Console) handleInstances(w http.ResponseWriter, r *http.Request) {
	d := c.newInstancesData(r)
	if err := c.loadInstances(r.Context(), d); err != nil {
		c.internal(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "instances", "Instances", "instances", d)
}

func (c *Console) newInstancesData(r *http.Request) *instancesData {
	q := r.URL.Query()
	d := &instancesData{Q: strings.TrimSpace(q.Get("q")), State: q.Get("state"),
		States: []string{"creating", "running", "failed", "deleting", "deleted"},
		Create: createForm{StorageGB: "10"},
		Bulk:   bulkForm{Count: "3", StorageGB: "10"}}
	if !isLive(r) {
		vs, err := c.app.Versions(r.Context())
		if err != nil {
			d.VerErr = "PostgreSQL versions could not be listed: " + err.Error()
		}
		d.Versions = vs
	}
	return d
}

// loadInstances fills the table: the state filter goes to the CMS, the text
// filter matches the name or internal name.
func (c *Console) loadInstances(ctx context.Context, d *instancesData) error {
	var opts cms.ListOptions
	switch d.State {
	case "", "active", "live":
		// Live instances (broken ones included): failed and deleted
		// records are shown on request.
		d.State = ""
		opts.States = []cms.State{cms.StateCreating, cms.StateRunning, cms.StateDeleting}
	case "broken":
		opts.Broken = true
	case "all":
		opts.IncludeDeleted = true
	default:
		known := false
		for _, s := range d.States {
			if s == d.State {
				known = true
			}
		}
		if !known {
			d.State = ""
		} else {
			opts.States = []cms.State{cms.State(d.State)}
		}
	}
	list, err := c.app.ListInstances(ctx, opts)
	if err != nil {
		return err
	}
	needle := strings.ToLower(d.Q)
	for _, in := range list {
		if needle != "" && !strings.Contains(strings.ToLower(in.Name), needle) && !strings.Contains(strings.ToLower(in.InternalName), needle) {
			continue
		}
		d.Matching++
		if len(d.Rows) < maxListed {
			d.Rows = append(d.Rows, in)
		}
	}
	d.Shown = len(d.Rows)
	d.Truncated = d.Matching > d.Shown
	return nil
}

// formFields maps the request fields errors name (app.Problem.Field, the
// API's JSON field names) to the console's form fields, for aria-invalid.
var formFields = map[string]string{
	"name": "name", "password": "password", "storage_gb": "storage", "postgres_version": "version",
	"base_name": "base", "count": "count", "backup_id": "backup", "at": "at",
}

// formInt parses an optional whole number field.
func formInt(v, what string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s must be a whole number, got %q", what, shorten(v, 20))
	}
	return n, nil
}

// renderInstancesWithError re-renders the list with a form error.
func (c *Console) renderInstancesWithError(w http.ResponseWriter, r *http.Request, status int, d *instancesData) {
	if err := c.loadInstances(r.Context(), d); err != nil {
		c.internal(w, r, err)
		return
	}
	c.render(w, r, status, "instances", "Instances", "instances", d)
}

// errInvalidPassword refuses a password that is not UTF-8 text, as the API
// does (its JSON decoding would silently replace the bad bytes).
const errInvalidPassword = "password is not valid UTF-8 text"

// handleCreate is the create form: POST /instances.
func (c *Console) handleCreate(w http.ResponseWriter, r *http.Request) {
	if err := parseForm(w, r); err != nil {
		redirect(w, r, "/instances", "error", "The form could not be read.")
		return
	}
	d := c.newInstancesData(r)
	d.Create = createForm{Name: trimmed(r, "name"), Version: trimmed(r, "postgres_version"), StorageGB: trimmed(r, "storage_gb"),
		Internal: r.PostForm.Get("internal") != ""}
	storage, err := formInt(d.Create.StorageGB, "storage")
	if err != nil {
		d.Create.Err, d.Create.Field = err.Error(), "storage"
		c.renderInstancesWithError(w, r, http.StatusBadRequest, d)
		return
	}
	if !utf8.ValidString(r.PostForm.Get("password")) {
		d.Create.Err, d.Create.Field = errInvalidPassword, "password"
		c.renderInstancesWithError(w, r, http.StatusBadRequest, d)
		return
	}
	ctx, cancel := app.Detached(r.Context())
	defer cancel()
	in, err := c.app.CreateInstance(ctx, app.CreateRequest{Name: d.Create.Name, Password: r.PostForm.Get("password"),
		PostgresVersion: d.Create.Version, StorageGB: storage, Internal: d.Create.Internal})
	if err != nil {
		var status int
		status, d.Create.Err, d.Create.Field = c.problem(w, r, err)
		c.renderInstancesWithError(w, r, status, d)
		return
	}
	redirect(w, r, "/instances", "ok", fmt.Sprintf("Creating %s (orchestration %s).", in.Name, in.CreateOrchestrationID))
}

// handleBulkCreate is the bulk create form: POST /instances/bulk.
func (c *Console) handleBulkCreate(w http.ResponseWriter, r *http.Request) {
	if err := parseForm(w, r); err != nil {
		redirect(w, r, "/instances", "error", "The form could not be read.")
		return
	}
	d := c.newInstancesData(r)
	d.Bulk = bulkForm{Base: trimmed(r, "base_name"), Count: trimmed(r, "count"), Version: trimmed(r, "postgres_version"),
		StorageGB: trimmed(r, "storage_gb"), Internal: r.PostForm.Get("internal") != ""}
	n, err := formInt(d.Bulk.Count, "count")
	if err == nil && d.Bulk.Count == "" {
		err = errors.New("count is required")
	}
	if err != nil {
		d.Bulk.Err, d.Bulk.Field = err.Error(), "count"
		c.renderInstancesWithError(w, r, http.StatusBadRequest, d)
		return
	}
	storage, err := formInt(d.Bulk.StorageGB, "storage")
	if err != nil {
		d.Bulk.Err, d.Bulk.Field = err.Error(), "storage"
		c.renderInstancesWithError(w, r, http.StatusBadRequest, d)
		return
	}
	if !utf8.ValidString(r.PostForm.Get("password")) {
		d.Bulk.Err, d.Bulk.Field = errInvalidPassword, "password"
		c.renderInstancesWithError(w, r, http.StatusBadRequest, d)
		return
	}
	res, err := c.app.BulkCreate(r.Context(), app.BulkCreateRequest{BaseName: d.Bulk.Base, Count: n,
		Password: r.PostForm.Get("password"), PostgresVersion: d.Bulk.Version, StorageGB: storage, Internal: d.Bulk.Internal})
	if err != nil {
		var status int
		status, d.Bulk.Err, d.Bulk.Field = c.problem(w, r, err)
		c.renderInstancesWithError(w, r, status, d)
		return
	}
	if res.Succeeded() == 0 {
		status, msg, _ := c.problem(w, r, res.FirstFailure().Err)
		d.Bulk.Err = res.NothingDone(msg)
		c.renderInstancesWithError(w, r, status, d)
		return
	}
	kind, msg := c.bulkSummary(w, r, "Creating", res)
	redirect(w, r, "/instances", kind, msg)
}

// bulkSummary is the notice after a bulk operation.
func (c *Console) bulkSummary(w http.ResponseWriter, r *http.Request, verb string, res *app.BulkResult) (kind, msg string) {
	var ok, bad []string
	for _, it := range res.Items {
		if it.Err == nil {
			ok = append(ok, it.Name)
		} else {
			_, m, _ := c.problem(w, r, it.Err)
			bad = append(bad, it.Name+": "+m)
		}
	}
	msg = fmt.Sprintf("%s %d of %d: %s.", verb, res.Succeeded(), len(res.Items), strings.Join(ok, ", "))
	if len(bad) > 0 {
		return "error", msg + " Failed: " + strings.Join(bad, "; ") + "."
	}
	return "ok", msg
}

// handleBulkDelete deletes the checked instances: POST /instances/bulk-delete.
func (c *Console) handleBulkDelete(w http.ResponseWriter, r *http.Request) {
	if err := parseForm(w, r); err != nil {
		redirect(w, r, "/instances", "error", "The form could not be read.")
		return
	}
	back := "/instances"
	if q := r.PostForm.Get("return"); strings.HasPrefix(q, "?") && !strings.ContainsAny(q, "\r\n") {
		back += q
	}
	names := r.PostForm["name"]
	if len(names) == 0 {
		redirect(w, r, back, "error", "Select at least one instance to delete.")
		return
	}
	res, err := c.app.BulkDelete(r.Context(), names)
	if err != nil {
		_, msg, _ := c.problem(w, r, err)
		redirect(w, r, back, "error", "Nothing was deleted: "+msg)
		return
	}
	if res.Succeeded() == 0 {
		_, msg, _ := c.problem(w, r, res.FirstFailure().Err)
		redirect(w, r, back, "error", "Nothing was deleted: "+res.NothingDone(msg))
		return
	}
	kind, msg := c.bulkSummary(w, r, "Deleting", res)
	redirect(w, r, back, kind, msg)
}

// handleDelete is the detail page's delete button: POST /instances/{name}/delete.
func (c *Console) handleDelete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	back := "/instances/" + url.PathEscape(name)
	ctx, cancel := app.Detached(r.Context())
	defer cancel()
	d, err := c.app.DeleteByName(ctx, name)
	if err != nil {
		_, msg, _ := c.problem(w, r, err)
		redirect(w, r, back, "error", "Delete failed: "+msg)
		return
	}
	redirect(w, r, back, "ok", fmt.Sprintf("Deleting %s (orchestration %s).", name, orchestrations.DeleteID(d.Instance.InternalName)))
}

// orchLink is an orchestration of an instance with its current status.
type orchLink struct {
	Role, ID, Status string
}

// URL is the orchestration's page (which waits for a queued start).
func (o orchLink) URL() string {
	if o.Status == string(duroxide.StatusPending) {
		return orchURL(o.ID) + "?pending=1"
	}
	return orchURL(o.ID)
}

// healthSummary describes the shown health checks.
type healthSummary struct {
	Count, Healthy, Unhealthy int
	AvgMs, MaxMs              int64
	Last                      *cms.HealthCheck
}

type instanceData struct {
	Inst       *cms.Instance
	Name       string
	MaskedConn string
	Events     []cms.Event
	Checks     []cms.HealthCheck // newest first
	Summary    healthSummary
	Chart      chart
	Logs       []string
	LogsNote   string
	Orchs      []orchLink
	Deletable  bool
	Backups    backupsView
	Restore    restoreForm
	Replicas   replicasView
}

const (
	detailChecks = 60
	detailEvents = 50
	detailLogs   = 100
)

func (c *Console) handleInstance(w http.ResponseWriter, r *http.Request) {
	c.renderInstance(w, r, http.StatusOK, restoreForm{})
}

// renderInstance renders the instance page (GET, or a rejected form with
// its error and values).
func (c *Console) renderInstance(w http.ResponseWriter, r *http.Request, status int, form restoreForm) {
	ctx := r.Context()
	name := r.PathValue("name")
	inst, err := c.app.GetInstance(ctx, name)
	if errors.Is(err, cms.ErrNotFound) {
		c.notFound(w, r, "instance "+name)
		return
	}
	if err != nil {
		c.internal(w, r, err)
		return
	}
	d := &instanceData{Inst: inst, Name: inst.Name, Deletable: inst.State != cms.StateDeleted && inst.State != cms.StateDeleting}
	if inst.ConnectionString != "" && inst.State != cms.StateDeleted {
		d.MaskedConn = redact.ConnectionURL(inst.ConnectionString, "••••••••")
	}
	if d.Events, err = c.app.InstanceEvents(ctx, inst, detailEvents); err != nil {
		c.internal(w, r, err)
		return
	}
	if d.Checks, err = c.app.HealthChecks(ctx, inst, detailChecks); err != nil {
		c.internal(w, r, err)
		return
	}
	d.Summary = summarize(d.Checks)
	d.Chart = healthChart(d.Checks)
	d.Logs, d.LogsNote = c.instanceLogs(ctx, inst)
	if d.Backups, err = c.loadBackups(ctx, inst); err != nil {
		c.internal(w, r, err)
		return
	}
	d.Restore = form
	if d.Replicas, err = c.loadReplicas(ctx, inst); err != nil {
		c.internal(w, r, err)
		return
	}
	for _, o := range []struct{ role, id string }{
		{"create", inst.CreateOrchestrationID},
		{"health actor", inst.ActorOrchestrationID},
		{"delete", deleteID(inst)},
	} {
		if o.id == "" {
			continue
		}
		st, err := c.app.Orchestrations().Status(ctx, o.id)
		switch {
		case errors.Is(err, duroxide.ErrNotFound):
			if o.role == "delete" {
				continue
			}
			d.Orchs = append(d.Orchs, orchLink{o.role, o.id, "Pending"})
		case err != nil:
			c.internal(w, r, err)
			return
		default:
			d.Orchs = append(d.Orchs, orchLink{o.role, o.id, string(st.Status)})
		}
	}
	c.render(w, r, status, "instance", inst.Name, "instances", d)
}

// deleteID is the delete orchestration's id once a delete is recorded or
// may have started.
func deleteID(inst *cms.Instance) string {
	if inst.DeleteOrchestrationID != "" {
		return inst.DeleteOrchestrationID
	}
	return orchestrations.DeleteID(inst.InternalName)
}

// instanceLogs returns the server's latest log lines, the password masked.
func (c *Console) instanceLogs(ctx context.Context, inst *cms.Instance) ([]string, string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	lines, err := c.app.InstanceLogs(ctx, inst, detailLogs)
	if errors.Is(err, dataplane.ErrNotFound) {
		return nil, fmt.Sprintf("No server on the data plane (state %s).", inst.State)
	}
	if err != nil {
		c.log.Warn("reading instance logs failed", "instance", inst.Name, "error", err.Error())
		return nil, "The server log could not be read: " + err.Error()
	}
	if len(lines) == 0 {
		return nil, "The server has logged nothing yet."
	}
	return lines, ""
}

func summarize(checks []cms.HealthCheck) healthSummary {
	s := healthSummary{Count: len(checks)}
	var sum int64
	n := 0
	for i := range checks {
		hc := &checks[i]
		if hc.Status == cms.HealthHealthy {
			s.Healthy++
			sum += hc.ResponseTimeMs
			n++
			s.MaxMs = max(s.MaxMs, hc.ResponseTimeMs)
		} else {
			s.Unhealthy++
		}
	}
	if n > 0 {
		s.AvgMs = sum / int64(n)
	}
	if len(checks) > 0 {
		s.Last = &checks[0]
	}
	return s
}

// chart is an inline SVG bar chart of health check response times.
type chart struct {
	W, H, PlotH float64
	Bars        []bar
	MaxMs       int64
	From, To    time.Time
}

type bar struct {
	X, Y, W, H float64
	Class      string
	Title      string
}

func healthChart(checks []cms.HealthCheck) chart {
	ch := chart{W: 640, H: 140, PlotH: 118}
	if len(checks) == 0 {
		return ch
	}
	for _, hc := range checks {
		ch.MaxMs = max(ch.MaxMs, hc.ResponseTimeMs)
	}
	if ch.MaxMs < 1 {
		ch.MaxMs = 1
	}
	slot := ch.W / float64(detailChecks)
	n := len(checks)
	// Oldest on the left, newest on the right edge.
	for i := n - 1; i >= 0; i-- {
		hc := checks[i]
		pos := float64(detailChecks - 1 - i)
		b := bar{X: pos*slot + 1, W: slot - 2, Class: "ok"}
		if hc.Status != cms.HealthHealthy {
			b.Class = "bad"
			b.H = ch.PlotH // an unhealthy check is a full-height red bar
		} else {
			b.H = max(2, ch.PlotH*float64(hc.ResponseTimeMs)/float64(ch.MaxMs))
		}
		b.Y = ch.PlotH - b.H
		b.Title = fmt.Sprintf("%s — %s — %d ms", hc.CheckedAt.UTC().Format("15:04:05"), hc.Status, hc.ResponseTimeMs)
		if hc.Error != "" {
			b.Title += " — " + shorten(hc.Error, 120)
		}
		ch.Bars = append(ch.Bars, b)
	}
	ch.From, ch.To = checks[n-1].CheckedAt, checks[0].CheckedAt
	return ch
}
