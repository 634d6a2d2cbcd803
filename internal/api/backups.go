package api

import (
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/toygres/toygres/client"
	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/orchestrations"
)

// The backup bodies are defined in the public client package (see types.go).
type (
	Backup                = client.Backup
	BackupList            = client.BackupList
	BackupSettings        = client.BackupSettings
	BackupSettingsRequest = client.BackupSettingsRequest
	RestoreWindow         = client.RestoreWindow
	InstanceBackups       = client.InstanceBackups
	RestoreRequest        = client.RestoreRequest
)

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func backupView(b *cms.Backup) Backup {
	return Backup{ID: b.ID, Instance: b.InstanceName, InternalName: b.InternalName, Kind: b.Kind, State: string(b.State),
		OrchestrationID: b.OrchestrationID, StartedAt: timePtr(b.StartedAt), FinishedAt: timePtr(b.FinishedAt), SizeBytes: b.SizeBytes,
		DurationMs: b.Duration.Milliseconds(), StartWAL: b.StartWAL, PostgresVersion: b.PostgresVersion, Error: b.Error, CreatedAt: b.CreatedAt}
}

func backupViews(list []cms.Backup) []Backup {
	out := make([]Backup, 0, len(list))
	for i := range list {
		out = append(out, backupView(&list[i]))
	}
	return out
}

func windowView(w app.RestoreWindow) RestoreWindow {
	return RestoreWindow{Earliest: timePtr(w.Earliest), Latest: timePtr(w.Latest), Backups: w.Backups}
}

func settingsView(s cms.BackupSettings) BackupSettings {
	return BackupSettings{Enabled: s.Enabled, Interval: s.Interval.String(), Retention: s.Retention.String()}
}

// handleListBackups is GET /api/backups?instance=NAME: the backups (not
// deleted) of every instance, or of those that had the name, newest first.
func (s *Server) handleListBackups(w http.ResponseWriter, r *http.Request) {
	list, err := s.app.ListBackups(r.Context(), r.URL.Query().Get("instance"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, BackupList{Backups: backupViews(list)})
}

// handleGetBackup is GET /api/backups/{id}.
func (s *Server) handleGetBackup(w http.ResponseWriter, r *http.Request) {
	b, err := s.app.GetBackup(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, backupView(b))
}

// handleDeleteBackup is DELETE /api/backups/{id}: 202 while the
// delete-backup orchestration removes it; 409 for a running backup.
func (s *Server) handleDeleteBackup(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := detached(r)
	defer cancel()
	b, err := s.app.DeleteBackup(ctx, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/orchestrations/"+url.PathEscape(orchestrations.DeleteBackupID(b.ID)))
	writeJSON(w, http.StatusAccepted, backupView(b))
}

// handleCreateBackup is POST /api/instances/{name}/backups: 202 with the
// backup, running until verified; 409 unless the instance runs.
func (s *Server) handleCreateBackup(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ctx, cancel := detached(r)
	defer cancel()
	b, err := s.app.StartBackup(ctx, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/backups/"+url.PathEscape(b.ID))
	writeJSON(w, http.StatusAccepted, backupView(b))
}

// handleInstanceBackups is GET /api/instances/{name}/backups.
func (s *Server) handleInstanceBackups(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	inst, err := s.app.GetInstance(r.Context(), name)
	if errors.Is(err, cms.ErrNotFound) {
		err = notFound(name)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	win, _, err := s.app.RestoreWindowOf(r.Context(), inst)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	settings, list, err := s.app.InstanceBackups(r.Context(), inst)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, InstanceBackups{Instance: inst.Name, Window: windowView(win), Settings: settingsView(settings), Backups: backupViews(list)})
}

// handleBackupSettings is PUT /api/instances/{name}/backup-settings.
func (s *Server) handleBackupSettings(w http.ResponseWriter, r *http.Request) {
	var req BackupSettingsRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	ar := app.BackupSettingsRequest{Enabled: req.Enabled}
	for _, f := range []struct {
		in  string
		out **time.Duration
	}{{req.Interval, &ar.Interval}, {req.Retention, &ar.Retention}} {
		if f.in == "" {
			continue
		}
		d, err := time.ParseDuration(f.in)
		if err != nil {
			s.fail(w, r, errorf(http.StatusBadRequest, "invalid duration %q (want e.g. 24h or 30m)", f.in))
			return
		}
		*f.out = &d
	}
	name := r.PathValue("name")
	ctx, cancel := detached(r)
	defer cancel()
	set, err := s.app.SetBackupSettings(ctx, name, ar)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, settingsView(set))
}

// handleRestore is POST /api/restore: 202 with the new instance, made by
// create-instance from the backup and archive of another.
func (s *Server) handleRestore(w http.ResponseWriter, r *http.Request) {
	var req RestoreRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := detached(r)
	defer cancel()
	inst, err := s.app.Restore(ctx, req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/instances/"+url.PathEscape(inst.Name))
	writeJSON(w, http.StatusAccepted, instanceView(inst))
}
