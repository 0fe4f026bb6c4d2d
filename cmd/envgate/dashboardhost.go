package main

import (
	"net/http"
	"path"
	"slices"
	"strings"

	"github.com/envgate/envgate/gateway/admin"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/envname"
	"github.com/rs/zerolog"
)

// dashboardLabel is admin.dashboard_host's first label ("" without one),
// which access entries match.
func (c *Config) dashboardLabel() string {
	label, _, _ := strings.Cut(strings.ToLower(strings.TrimSuffix(c.Admin.DashboardHost, ".")), ".")
	return label
}

// validateDashboardHost checks admin.dashboard_host: a label under a
// configured domain, which some access entry matches (without one the
// dashboard refuses everyone).
func (c *Config) validateDashboardHost() []error {
	host := strings.ToLower(strings.TrimSuffix(c.Admin.DashboardHost, "."))
	label, domain, _ := strings.Cut(host, ".")
	if !envname.Valid(label) || !slices.ContainsFunc(c.Domains, func(d string) bool { return strings.EqualFold(d, domain) }) {
		return []error{c.errAt("admin.dashboard_host", "%q: want one label under a configured domain, e.g. envgate.<a domain>", c.Admin.DashboardHost)}
	}
	for _, a := range c.Access {
		m := a.Match
		if m == "" {
			m = "*"
		}
		if ok, _ := path.Match(m, label); ok {
			return nil
		}
	}
	return []error{c.errAt("admin.dashboard_host", "no access: entry matches %q, so the dashboard would refuse everyone; add one first in the list, e.g. {match: %s, basic: {htpasswd_file: /etc/envgate/admins.htpasswd}}", label, label)}
}

// dashboardHandler is the admin API as the dashboard host serves it
// (gateway.Handler.WithDashboard picks the routes): no reload, no
// metrics; cluster-wide with cl (nil: this node's envs). Without cl it
// is also what this node's API answers other nodes with.
func dashboardHandler(cfg *Config, envs *lifecycle.Manager, cl admin.Cluster, log zerolog.Logger) http.Handler {
	version, revision := buildVersion()
	return admin.New(admin.Config{
		Envs:      envs,
		Version:   version,
		Revision:  revision,
		Instance:  cfg.Instance,
		ValidName: envname.Valid,
		Cluster:   cl,
		Log:       log,
	})
}
