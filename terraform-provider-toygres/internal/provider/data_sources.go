package provider

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/toygres/toygres/client"
)

// addAPIError reports a client error, on the attribute the server named
// when it named one.
func addAPIError(d *diag.Diagnostics, what string, err error) {
	var ae *client.Error
	if errors.As(err, &ae) && ae.Field != "" {
		d.AddAttributeError(path.Root(ae.Field), "Cannot "+what, err.Error())
		return
	}
	d.AddError("Cannot "+what, err.Error())
}

func clientOf(data any, d *diag.Diagnostics) *client.Client {
	if data == nil {
		return nil
	}
	c, ok := data.(*client.Client)
	if !ok {
		d.AddError("Unexpected provider data", fmt.Sprintf("got %T", data))
	}
	return c
}

// instanceDataSource reads one instance by name.
type instanceDataSource struct{ c *client.Client }

func newInstanceDataSource() datasource.DataSource { return &instanceDataSource{} }

type instanceDataModel struct {
	ID               types.String `tfsdk:"id"`
	Name             types.String `tfsdk:"name"`
	PostgresVersion  types.String `tfsdk:"postgres_version"`
	StorageGB        types.Int64  `tfsdk:"storage_gb"`
	Internal         types.Bool   `tfsdk:"internal"`
	State            types.String `tfsdk:"state"`
	Health           types.String `tfsdk:"health"`
	InternalName     types.String `tfsdk:"internal_name"`
	ConnectionString types.String `tfsdk:"connection_string"`
	Host             types.String `tfsdk:"host"`
	Port             types.Int64  `tfsdk:"port"`
}

func instanceDataAttributes(nameRequired bool) map[string]schema.Attribute {
	return map[string]schema.Attribute{
		"id":                schema.StringAttribute{Computed: true, Description: "The instance record's id."},
		"name":              schema.StringAttribute{Required: nameRequired, Computed: !nameRequired, Description: "The instance's name."},
		"postgres_version":  schema.StringAttribute{Computed: true},
		"storage_gb":        schema.Int64Attribute{Computed: true},
		"internal":          schema.BoolAttribute{Computed: true},
		"state":             schema.StringAttribute{Computed: true},
		"health":            schema.StringAttribute{Computed: true},
		"internal_name":     schema.StringAttribute{Computed: true},
		"connection_string": schema.StringAttribute{Computed: true, Description: "postgresql:// URL without the password."},
		"host":              schema.StringAttribute{Computed: true},
		"port":              schema.Int64Attribute{Computed: true},
	}
}

func dataOf(in *client.Instance, cs string) instanceDataModel {
	return instanceDataModel{
		ID: types.StringValue(in.ID), Name: types.StringValue(in.Name), PostgresVersion: types.StringValue(in.PostgresVersion),
		StorageGB: types.Int64Value(int64(in.StorageGB)), Internal: types.BoolValue(in.Internal),
		State: types.StringValue(in.State), Health: types.StringValue(in.Health), InternalName: types.StringValue(in.InternalName),
		ConnectionString: types.StringValue(withoutPassword(cs)), Host: types.StringValue(in.Host), Port: types.Int64Value(int64(in.Port)),
	}
}

func (d *instanceDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_instance"
}

func (d *instanceDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{Description: "One instance, by name.", Attributes: instanceDataAttributes(true)}
}

func (d *instanceDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.c = clientOf(req.ProviderData, &resp.Diagnostics)
}

func (d *instanceDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m instanceDataModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	in, err := d.c.GetInstance(ctx, m.Name.ValueString(), client.GetInstanceOptions{Events: -1, Checks: -1})
	if err != nil {
		addAPIError(&resp.Diagnostics, "read instance "+m.Name.ValueString(), err)
		return
	}
	m = dataOf(&in.Instance, in.ConnectionString)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// instancesDataSource lists instances.
type instancesDataSource struct{ c *client.Client }

func newInstancesDataSource() datasource.DataSource { return &instancesDataSource{} }

type instancesDataModel struct {
	All       types.Bool          `tfsdk:"all"`
	States    []types.String      `tfsdk:"states"`
	Instances []instanceDataModel `tfsdk:"instances"`
}

func (d *instancesDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_instances"
}

func (d *instancesDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Instances, newest first. Default: live ones (creating, running, deleting).",
		Attributes: map[string]schema.Attribute{
			"all":    schema.BoolAttribute{Optional: true, Description: "Include failed and deleted instances."},
			"states": schema.ListAttribute{Optional: true, ElementType: types.StringType, Description: "Only these states (creating, running, failed, deleting, deleted, broken)."},
			"instances": schema.ListNestedAttribute{Computed: true,
				NestedObject: schema.NestedAttributeObject{Attributes: instanceDataAttributes(false)}},
		},
	}
}

func (d *instancesDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.c = clientOf(req.ProviderData, &resp.Diagnostics)
}

func (d *instancesDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m instancesDataModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	opts := client.ListInstancesOptions{All: m.All.ValueBool()}
	for _, s := range m.States {
		opts.States = append(opts.States, s.ValueString())
	}
	l, err := d.c.ListInstances(ctx, opts)
	if err != nil {
		addAPIError(&resp.Diagnostics, "list instances", err)
		return
	}
	m.Instances = make([]instanceDataModel, 0, len(l.Instances))
	for i := range l.Instances {
		m.Instances = append(m.Instances, dataOf(&l.Instances[i], ""))
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
