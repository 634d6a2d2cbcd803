// Package provider implements the Toygres provider with the Terraform
// plugin framework.
package provider

import (
	"context"
	"os"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/toygres/toygres/client"
)

// Address is the provider's registry address; configurations use
// `source = "toygres/toygres"`.
const Address = "registry.opentofu.org/toygres/toygres"

// New returns the provider factory for providerserver.Serve.
func New(version string) func() provider.Provider {
	return func() provider.Provider { return &toygresProvider{version: version} }
}

type toygresProvider struct {
	version string
}

type providerModel struct {
	URL         types.String `tfsdk:"url"`
	Token       types.String `tfsdk:"token"`
	Fingerprint types.String `tfsdk:"fingerprint"`
}

func (p *toygresProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "toygres"
	resp.Version = p.version
}

func (p *toygresProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Manages PostgreSQL instances on a Toygres server.",
		Attributes: map[string]schema.Attribute{
			"url": schema.StringAttribute{
				Optional:    true,
				Description: "The Toygres server's URL (https://host:port). Default: $TOYGRES_URL.",
			},
			"token": schema.StringAttribute{
				Optional: true, Sensitive: true,
				Description: "A bearer token (`toygres login`, or the server's credentials.json). Default: $TOYGRES_TOKEN.",
			},
			"fingerprint": schema.StringAttribute{
				Optional: true,
				Description: "The SHA-256 fingerprint of the server's TLS certificate (\"SHA256:…\", as `toygres server start` prints it): " +
					"exactly that certificate is accepted. Default: $TOYGRES_TLS_FINGERPRINT; none: the system's CAs decide.",
			},
		},
	}
}

func (p *toygresProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var m providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	pick := func(v types.String, env string) string {
		if !v.IsNull() && !v.IsUnknown() {
			return v.ValueString()
		}
		return os.Getenv(env)
	}
	url, token, fp := pick(m.URL, "TOYGRES_URL"), pick(m.Token, "TOYGRES_TOKEN"), pick(m.Fingerprint, "TOYGRES_TLS_FINGERPRINT")
	if url == "" {
		resp.Diagnostics.AddAttributeError(path.Root("url"), "No Toygres server URL",
			"Set the provider's url or $TOYGRES_URL to the server's URL (toygres server start prints it).")
		return
	}
	opts := []client.Option{client.WithToken(token), client.WithUserAgent("terraform-provider-toygres/" + p.version)}
	if fp != "" {
		opts = append(opts, client.WithFingerprint(fp))
	}
	c, err := client.New(url, opts...)
	if err != nil {
		resp.Diagnostics.AddError("Invalid Toygres provider settings", err.Error())
		return
	}
	resp.ResourceData = c
	resp.DataSourceData = c
}

func (p *toygresProvider) Resources(context.Context) []func() resource.Resource {
	return []func() resource.Resource{newInstanceResource}
}

func (p *toygresProvider) DataSources(context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{newInstanceDataSource, newInstancesDataSource}
}
