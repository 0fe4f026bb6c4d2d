package main

import (
	"net"
	"path/filepath"
)

// AdminConfig is the admin: section: where the operator API (envgate ls,
// stop, restart, destroy, logs, status; the dashboard; /metrics) listens.
type AdminConfig struct {
	// Socket is the API's Unix socket, owned by root, mode 0660. Default
	// state_dir/run/<instance>.sock. The CLI finds it through the same
	// --config.
	Socket string `yaml:"socket"`
	// Group may use the socket besides root (a group name or gid).
	// Default: root's group only.
	Group string `yaml:"group"`
	// Listen is an optional TCP address (host:port) for the API and
	// dashboard; requests there need "Authorization: Bearer <token>" with
	// the token in TokenFile. Default "": none.
	Listen    string `yaml:"listen"`
	TokenFile string `yaml:"token_file"`
	// Metrics is an optional TCP address serving only /metrics (and
	// /healthz), without a token: keep it on loopback or a private
	// network. Default "": /metrics is on the socket (and Listen) only.
	Metrics string `yaml:"metrics"`
	// DashboardHost, e.g. envgate.dev.example.com (<label>.<a domain>),
	// serves the dashboard and the API it reads, with its stop, restart
	// and destroy buttons, on the gateway's listeners behind access
	// control: an access: entry must match the label (envgate) and admit
	// the client; env logs only with that entry's show_output. No
	// reload, no /metrics. An env of the same name is then unreachable.
	// Default "": none.
	DashboardHost string `yaml:"dashboard_host"`
}

// LogsConfig is the logs: section: each env's output on disk, in
// state_dir/logs/<env>.log.
type LogsConfig struct {
	// MaxSize rotates a file when it passes this size. Default 10MiB.
	MaxSize Size `yaml:"max_size"`
	// MaxBackups is how many rotated files are kept per env. Default 2.
	MaxBackups int `yaml:"max_backups"`
}

func (c *Config) setAdminDefaults() {
	if c.Admin.Socket == "" {
		c.Admin.Socket = filepath.Join(c.runDir(), c.Instance+".sock")
	}
	if c.Logs.MaxSize == 0 {
		c.Logs.MaxSize = 10 << 20
	}
	if c.Logs.MaxBackups == 0 {
		c.Logs.MaxBackups = 2
	}
}

func (c *Config) validateAdmin() []error {
	var errs []error
	if !filepath.IsAbs(c.Admin.Socket) {
		errs = append(errs, c.errAt("admin.socket", "%q: want an absolute path", c.Admin.Socket))
	}
	for _, a := range []struct{ key, addr string }{{"admin.listen", c.Admin.Listen}, {"admin.metrics", c.Admin.Metrics}} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, c.errAt(a.key, "%q: want host:port, e.g. 127.0.0.1:9464", a.addr))
		}
	}
	if c.Admin.Listen != "" && c.Admin.TokenFile == "" {
		errs = append(errs, c.errAt("admin.listen", "needs admin.token_file: the TCP API takes a bearer token (make one with: openssl rand -hex 32 > /etc/envgate/admin.token; chmod 600 it)"))
	}
	if c.Admin.DashboardHost != "" {
		errs = append(errs, c.validateDashboardHost()...)
	}
	if c.Logs.MaxSize < 1<<20 {
		errs = append(errs, c.errAt("logs.max_size", "want at least 1MiB"))
	}
	if c.Logs.MaxBackups < 0 {
		errs = append(errs, c.errAt("logs.max_backups", "want 0 or more"))
	}
	return errs
}

// logDir is where env output files are kept.
func (c *Config) logDir() string { return filepath.Join(c.StateDir, "logs") }
