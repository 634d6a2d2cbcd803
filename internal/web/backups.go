package web

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
	"unicode/utf8"

	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/cms"
)

// detailBackups bounds the backups listed on the instance page.
const detailBackups = 20

// backupsView is the instance page's backups section.
type backupsView struct {
	// Supported is false when the data plane takes no backups.
	Supported bool
	Settings  cms.BackupSettings
	Window    app.RestoreWindow
	// List is the instance's backups, newest first (at most detailBackups);
	// Completed the restorable ones, for the restore form.
	List      []cms.Backup
	Completed []cms.Backup
	More      int // backups not listed
	// CanBackup: the instance runs and archives (backups are on).
	CanBackup bool
}

// restoreForm is the restore form's values (never the password).
type restoreForm struct {
	Name, At, BackupID string
	Err, Field         string
}

func (c *Console) loadBackups(ctx context.Context, inst *cms.Instance) (backupsView, error) {
	var v backupsView
	if !c.app.TakesBackups() {
		return v, nil
	}
	v.Supported = true
	var err error
	var list []cms.Backup
	if v.Settings, list, err = c.app.InstanceBackups(ctx, inst); err != nil {
		return v, err
	}
	if v.Window, v.Completed, err = c.app.RestoreWindowOf(ctx, inst); err != nil {
		return v, err
	}
	if len(list) > detailBackups {
		v.More = len(list) - detailBackups
		list = list[:detailBackups]
	}
	v.List = list
	v.CanBackup = inst.State == cms.StateRunning && v.Settings.Enabled
	return v, nil
}

// handleBackupNow is the "Back up now" button: POST /instances/{name}/backups.
func (c *Console) handleBackupNow(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	back := "/instances/" + url.PathEscape(name)
	ctx, cancel := app.Detached(r.Context())
	defer cancel()
	b, err := c.app.StartBackup(ctx, name)
	if err != nil {
		_, msg, _ := c.problem(w, r, err)
		redirect(w, r, back, "error", "Backup failed to start: "+msg)
		return
	}
	redirect(w, r, back+"#backups-h", "ok", fmt.Sprintf("Backing up %s (backup %s).", name, b.ID))
}

// parseAt reads the restore form's moment: RFC 3339, or a date and time
// without a zone taken as UTC ("2025-01-02 15:04:05").
func parseAt(s string) (*time.Time, error) {
	if s == "" {
		return nil, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return &t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02T15:04"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return &t, nil
		}
	}
	return nil, fmt.Errorf("restore time %q is not a time: use RFC 3339 (2025-01-02T15:04:05Z) or a UTC date and time (2025-01-02 15:04:05)", shorten(s, 40))
}

// handleRestore is the restore form: POST /instances/{name}/restore makes
// a new instance from this one's backups; on success the new instance's
// page follows it.
func (c *Console) handleRestore(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := parseForm(w, r); err != nil {
		redirect(w, r, "/instances/"+url.PathEscape(name), "error", "The form could not be read.")
		return
	}
	form := restoreForm{Name: trimmed(r, "name"), At: trimmed(r, "at"), BackupID: trimmed(r, "backup_id")}
	at, err := parseAt(form.At)
	if err != nil {
		form.Err, form.Field = err.Error(), "at"
		c.renderInstance(w, r, http.StatusBadRequest, form)
		return
	}
	pw := r.PostForm.Get("password")
	if !utf8.ValidString(pw) {
		form.Err, form.Field = errInvalidPassword, "password"
		c.renderInstance(w, r, http.StatusBadRequest, form)
		return
	}
	ctx, cancel := app.Detached(r.Context())
	defer cancel()
	in, err := c.app.Restore(ctx, app.RestoreRequest{Name: form.Name, From: name, At: at, BackupID: form.BackupID, Password: pw})
	if err != nil {
		var status int
		status, form.Err, form.Field = c.problem(w, r, err)
		c.renderInstance(w, r, status, form)
		return
	}
	redirect(w, r, "/instances/"+url.PathEscape(in.Name), "ok",
		fmt.Sprintf("Restoring %s from %s (orchestration %s).", in.Name, name, in.CreateOrchestrationID))
}
