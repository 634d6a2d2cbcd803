package provider

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/boolplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/toygres/toygres/client"
)

// createTimeout and deleteTimeout bound the waits for running and deleted.
const (
	createTimeout = 15 * time.Minute
	deleteTimeout = 10 * time.Minute
	pollInterval  = time.Second
)

// The API cannot change an instance in place (there is no update
// endpoint), so every setting forces a replacement. The password is the
// exception after an import: the API never returns it, so an imported
// instance has none in state and the configured one is taken as is.
type instanceResource struct {
	c *client.Client
}

func newInstanceResource() resource.Resource { return &instanceResource{} }

type instanceModel struct {
	ID               types.String `tfsdk:"id"`
	Name             types.String `tfsdk:"name"`
	PostgresVersion  types.String `tfsdk:"postgres_version"`
	StorageGB        types.Int64  `tfsdk:"storage_gb"`
	Password         types.String `tfsdk:"password"`
	Internal         types.Bool   `tfsdk:"internal"`
	State            types.String `tfsdk:"state"`
	InternalName     types.String `tfsdk:"internal_name"`
	ConnectionString types.String `tfsdk:"connection_string"`
	Host             types.String `tfsdk:"host"`
	Port             types.Int64  `tfsdk:"port"`
}

func (r *instanceResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_instance"
}

func (r *instanceResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	resp.Schema = schema.Schema{
		Description: "A PostgreSQL instance. Create waits until it is running, delete until it is deleted. " +
			"Toygres cannot change an instance in place: changing a setting replaces the instance (and its data).",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, Description: "The instance record's id.",
				PlanModifiers: keep},
			"name": schema.StringAttribute{Required: true, PlanModifiers: replace,
				Description: "1-40 lower-case letters, digits and hyphens, starting with a letter. Import by name."},
			"postgres_version": schema.StringAttribute{Optional: true, Computed: true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace(), stringplanmodifier.UseStateForUnknown()},
				Description:   "A PostgreSQL major version the data plane has (default: the newest)."},
			"storage_gb": schema.Int64Attribute{Optional: true, Computed: true,
				PlanModifiers: []planmodifier.Int64{int64planmodifier.RequiresReplace(), int64planmodifier.UseStateForUnknown()},
				Description:   "Storage in GB, 1-16384 (default 10)."},
			"password": schema.StringAttribute{Required: true, Sensitive: true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplaceIf(passwordChanged,
					"A changed password replaces the instance (the API cannot change it); after an import it is taken as is.",
					"A changed password replaces the instance (the API cannot change it); after an import it is taken as is.")},
				Description: "The postgres superuser's password, 8-128 characters. Kept in the state (sensitive): " +
					"the server never returns it."},
			"internal": schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(false),
				PlanModifiers: []planmodifier.Bool{boolplanmodifier.RequiresReplace()},
				Description:   "Reachable only inside the data plane."},
			"state": schema.StringAttribute{Computed: true,
				Description: "creating, running, failed, deleting or deleted."},
			"internal_name": schema.StringAttribute{Computed: true, PlanModifiers: keep,
				Description: "The data plane's name of the instance."},
			"connection_string": schema.StringAttribute{Computed: true,
				Description: "postgresql:// URL of the instance, without the password."},
			"host": schema.StringAttribute{Computed: true, Description: "The endpoint's host."},
			"port": schema.Int64Attribute{Computed: true, Description: "The endpoint's port."},
		},
	}
}

// passwordChanged requires a replacement for a changed password, but not
// when the state has none (an imported instance).
func passwordChanged(_ context.Context, req planmodifier.StringRequest, resp *stringplanmodifier.RequiresReplaceIfFuncResponse) {
	resp.RequiresReplace = !req.StateValue.IsNull() && !req.PlanValue.Equal(req.StateValue)
}

func (r *instanceResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	if req.ProviderData == nil {
		return
	}
	c, ok := req.ProviderData.(*client.Client)
	if !ok {
		resp.Diagnostics.AddError("Unexpected provider data", fmt.Sprintf("got %T", req.ProviderData))
		return
	}
	r.c = c
}

// fill copies an instance into the model's computed attributes.
func fill(m *instanceModel, d *client.InstanceDetail) {
	m.ID = types.StringValue(d.ID)
	m.Name = types.StringValue(d.Name)
	m.PostgresVersion = types.StringValue(d.PostgresVersion)
	m.StorageGB = types.Int64Value(int64(d.StorageGB))
	m.Internal = types.BoolValue(d.Internal)
	m.State = types.StringValue(d.State)
	m.InternalName = types.StringValue(d.InternalName)
	m.ConnectionString = types.StringValue(withoutPassword(d.ConnectionString))
	m.Host = types.StringValue(d.Host)
	m.Port = types.Int64Value(int64(d.Port))
}

// withoutPassword drops the password from a postgresql:// URL.
func withoutPassword(cs string) string {
	u, err := url.Parse(cs)
	if err != nil || u.User == nil {
		return cs
	}
	u.User = url.User(u.User.Username())
	return u.String()
}

// progress logs the steps of a create or delete as the orchestration
// reports them (its custom status), once per change.
func progress(ctx context.Context, name string) func(*client.InstanceDetail, string) {
	last := ""
	return func(d *client.InstanceDetail, step string) {
		state := "gone"
		if d != nil {
			state = d.State
		}
		line := state + " " + step
		if line == last {
			return
		}
		last = line
		tflog.Info(ctx, "toygres instance progress", map[string]any{"name": name, "state": state, "step": step})
	}
}

func (r *instanceResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan instanceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	cr := client.CreateInstanceRequest{Name: plan.Name.ValueString(), Password: plan.Password.ValueString(),
		Internal: plan.Internal.ValueBool()}
	if !plan.PostgresVersion.IsNull() && !plan.PostgresVersion.IsUnknown() {
		cr.PostgresVersion = plan.PostgresVersion.ValueString()
	}
	if !plan.StorageGB.IsNull() && !plan.StorageGB.IsUnknown() {
		cr.StorageGB = int(plan.StorageGB.ValueInt64())
	}
	in, err := r.c.CreateInstance(ctx, cr)
	if err != nil {
		addAPIError(&resp.Diagnostics, "create instance "+cr.Name, err)
		return
	}
	tflog.Info(ctx, "toygres instance creating", map[string]any{"name": in.Name, "orchestration": in.CreateOrchestrationID})
	wctx, cancel := context.WithTimeout(ctx, createTimeout)
	defer cancel()
	lastStep := ""
	prog := progress(ctx, cr.Name)
	d, werr := r.c.WaitForInstance(wctx, cr.Name, client.WaitOptions{Interval: pollInterval,
		Progress: func(d *client.InstanceDetail, step string) { lastStep = step; prog(d, step) }})
	if d == nil {
		d = &client.InstanceDetail{Instance: *in}
	}
	fill(&plan, d)
	// Saved even when the wait failed: the instance exists, and an error
	// after state is set makes the next apply replace it (tainted).
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	if werr != nil {
		detail := werr.Error()
		if lastStep != "" {
			detail += " (last step: " + lastStep + ")"
		}
		if d.CreateOrchestrationID != "" {
			detail += "; see `toygres orchestrations get " + d.CreateOrchestrationID + "`"
		}
		resp.Diagnostics.AddError("Instance "+cr.Name+" did not reach running", detail)
	}
}

func (r *instanceResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var st instanceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &st)...)
	if resp.Diagnostics.HasError() {
		return
	}
	d, err := r.c.GetInstance(ctx, st.Name.ValueString(), client.GetInstanceOptions{Events: -1, Checks: -1})
	switch {
	case errors.Is(err, client.ErrNotFound):
		// Deleted outside: drop it, so that the plan creates it again.
		resp.State.RemoveResource(ctx)
		return
	case err != nil:
		addAPIError(&resp.Diagnostics, "read instance "+st.Name.ValueString(), err)
		return
	}
	if d.State == client.StateDeleted || d.State == client.StateDeleting ||
		(!st.ID.IsNull() && st.ID.ValueString() != "" && st.ID.ValueString() != d.ID) {
		// Deleted (or being deleted), or the name now stands for another
		// instance than the one this state created.
		resp.State.RemoveResource(ctx)
		return
	}
	fill(&st, d)
	resp.Diagnostics.Append(resp.State.Set(ctx, &st)...)
}

// Update is reached only for a password after an import (every other
// change replaces the instance): the server has nothing to change, the
// state takes the configured password.
func (r *instanceResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, st instanceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &st)...)
	if resp.Diagnostics.HasError() {
		return
	}
	st.Password = plan.Password
	resp.Diagnostics.Append(resp.State.Set(ctx, &st)...)
}

func (r *instanceResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var st instanceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &st)...)
	if resp.Diagnostics.HasError() {
		return
	}
	name := st.Name.ValueString()
	if _, err := r.c.DeleteInstance(ctx, name); err != nil && !errors.Is(err, client.ErrNotFound) {
		addAPIError(&resp.Diagnostics, "delete instance "+name, err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, deleteTimeout)
	defer cancel()
	if _, err := r.c.WaitForInstance(wctx, name, client.WaitOptions{State: client.StateDeleted, Interval: pollInterval,
		Progress: progress(ctx, name)}); err != nil {
		resp.Diagnostics.AddError("Instance "+name+" was not deleted", err.Error())
	}
}

func (r *instanceResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("name"), req, resp)
}

var (
	_ resource.ResourceWithConfigure   = (*instanceResource)(nil)
	_ resource.ResourceWithImportState = (*instanceResource)(nil)
)
