package web

import (
	"context"

	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/redact"
)

// replicasView is the instance page's servers section.
type replicasView struct {
	app.ReplicaView
	// MaskedReadOnly is the read-only connection string with a placeholder
	// password.
	MaskedReadOnly string
}

// Show reports whether the instance has or had standbys (the section is
// left out otherwise).
func (v replicasView) Show() bool {
	return v.Replicas.Replicas > 0 || len(v.Servers) > 1 || v.ReadOnlyConnectionString != ""
}

func (c *Console) loadReplicas(ctx context.Context, inst *cms.Instance) (replicasView, error) {
	v, err := c.app.Replicas(ctx, inst)
	if err != nil {
		return replicasView{}, err
	}
	out := replicasView{ReplicaView: v}
	if v.ReadOnlyConnectionString != "" && inst.State != cms.StateDeleted {
		out.MaskedReadOnly = redact.ConnectionURL(v.ReadOnlyConnectionString, "••••••••")
	}
	return out, nil
}
