package main

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/envgate/envgate/certs"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/envname"
	"github.com/envgate/envgate/netns"
	"go.yaml.in/yaml/v3"
)

//go:embed default.yaml
var defaultConfig []byte

// Config is envgate's YAML configuration (see DESIGN.md, "Configuration").
// Every key has a default; unknown keys are errors.
type Config struct {
	// Instance prefixes every namespace and link this gateway creates
	// (1-8 of [a-z0-9], starting with a letter). Default "envgate". Two
	// gateways on one machine need different instances.
	Instance string `yaml:"instance"`
	// Domains envs live under: env x of domain d is x.d. Default [localhost].
	Domains []string `yaml:"domains"`
	Listen  struct {
		// HTTP listen address. Default "localhost:8080" (127.0.0.1 and ::1).
		HTTP string `yaml:"http"`
		// HTTPS listen address, used when tls.mode is not off. Default ":443".
		HTTPS string `yaml:"https"`
		// H2C lets clients speak HTTP/2 without TLS (prior knowledge, as
		// gRPC clients do) on listen.http. Default false.
		H2C bool `yaml:"h2c"`
	} `yaml:"listen"`
	// TrustedProxies lists the proxies in front of the gateway (CIDRs or
	// addresses) whose X-Forwarded-*, Forwarded and X-Request-Id headers
	// are kept and appended to. Default none: every client's are replaced.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// StateDir holds env data dirs, certificates and the local CA.
	// Default /var/lib/envgate.
	StateDir string    `yaml:"state_dir"`
	TLS      TLSConfig `yaml:"tls"`
	Network  struct {
		// Pool is carved into one /30 per env. Default 10.213.0.0/16.
		Pool string `yaml:"pool"`
		// WarmPool is how many namespaces, with veths and addresses, are
		// kept ready so that a cold start only spawns the dev server (and
		// never waits on the kernel's namespace setup). Default 0.
		WarmPool int `yaml:"warm_pool"`
		// Firewall confines every env with the instance's nftables
		// table (see TemplateNetworkConfig): on (default) or off, which
		// logs a warning at every env start.
		Firewall string `yaml:"firewall"`
		// TrackListeners keeps connection tracking on for the clients'
		// connections to listen.http, listen.https and the tcp:
		// listeners. Default false: with the firewall on, their packets
		// skip it (docs/operations.md says what that changes on the
		// host); set true for a host firewall that accepts those ports
		// only in conntrack state new.
		TrackListeners bool `yaml:"track_listeners"`
	} `yaml:"network"`
	// Users says where dynamic users come from; see UsersConfig.
	Users  UsersConfig  `yaml:"users"`
	Limits LimitsConfig `yaml:"limits"`
	// Access says who may reach which envs; see AccessConfig. Default
	// none: envs under localhost domains are open, others refused.
	Access []AccessConfig `yaml:"access"`
	// Admin is the operator API; see AdminConfig.
	Admin AdminConfig `yaml:"admin"`
	// Logs keeps each env's output on disk; see LogsConfig.
	Logs LogsConfig `yaml:"logs"`
	// Source decides which env names exist; see SourceConfig. Default
	// kind any: every name a template matches.
	Source SourceConfig `yaml:"source"`
	// Previews are pull-request previews: webhooks, deployments and
	// comments; see PreviewsConfig. Default nil: none.
	Previews *PreviewsConfig `yaml:"previews"`
	// OnRestart says what a gateway starting after a crash does with the
	// envs the previous process left running (recorded in
	// state_dir/run/<instance>.state.json): adopt (default) keeps those
	// still alive, clean stops them all.
	OnRestart string `yaml:"on_restart"`
	// PortSeparator joins a template's port name to an env name in one
	// DNS label: api--feature-x.<domain>. Default "--".
	PortSeparator string `yaml:"port_separator"`
	// TCP lists the TLS-over-TCP listeners routed by SNI; see
	// TCPListenerConfig. Default none.
	TCP []TCPListenerConfig `yaml:"tcp"`
	// ShutdownTimeout bounds the drain of in-flight requests on SIGTERM.
	// Default 10s.
	ShutdownTimeout Duration         `yaml:"shutdown_timeout"`
	Templates       []TemplateConfig `yaml:"templates"`
	// Cluster shares envs among several gateways through etcd; see
	// ClusterConfig. Default nil: this gateway runs alone.
	Cluster *ClusterConfig `yaml:"cluster"`

	file string     // where it came from, for messages
	root *yaml.Node // for line numbers in validation errors
}

// TLSConfig is the tls: section; see certs.Config for each field.
type TLSConfig struct {
	Mode                string `yaml:"mode"`
	Email               string `yaml:"email"`
	CA                  string `yaml:"ca"`
	CARoot              string `yaml:"ca_root"`
	MaxIssuancesPerHour int    `yaml:"max_issuances_per_hour"`
	MaxOrdersPerWeek    int    `yaml:"max_orders_per_week"`
	CertFile            string `yaml:"cert_file"`
	KeyFile             string `yaml:"key_file"`
	RedirectHTTP        *bool  `yaml:"redirect_http"`
	DisableHTTP01       bool   `yaml:"disable_http01"`
	DisableTLSALPN      bool   `yaml:"disable_tls_alpn"`
	// AltHTTPPort and AltTLSALPNPort are where certmagic opens its own
	// challenge listener if nothing serves that port. Default: the ports of
	// listen.http and listen.https, which the gateway already answers
	// challenges on, so certmagic opens nothing.
	AltHTTPPort    int `yaml:"alt_http_port"`
	AltTLSALPNPort int `yaml:"alt_tls_alpn_port"`
	EAB            *struct {
		KeyID  string `yaml:"key_id"`
		MACKey string `yaml:"mac_key"`
		// MACKeyFile holds mac_key instead (surrounding whitespace is
		// ignored), so that the config itself holds no secret.
		MACKeyFile string `yaml:"mac_key_file"`
	} `yaml:"eab"`
	// Wildcard, in acme mode, obtains one *.<domain> certificate per
	// domain through DNS-01 (RFC 2136 updates) instead of one per env.
	Wildcard *WildcardConfig `yaml:"wildcard"`
}

// WildcardConfig is tls.wildcard; see certs.WildcardConfig.
type WildcardConfig struct {
	// Nameserver is the primary accepting dynamic updates, host:port.
	Nameserver string `yaml:"nameserver"`
	// TSIGKeyName, TSIGAlgorithm (default hmac-sha256) and TSIGSecret
	// (base64) sign the updates; no key means unsigned updates.
	TSIGKeyName   string `yaml:"tsig_key_name"`
	TSIGAlgorithm string `yaml:"tsig_algorithm"`
	TSIGSecret    string `yaml:"tsig_secret"`
	// TSIGSecretFile holds tsig_secret instead (surrounding whitespace is
	// ignored), so that the config itself holds no secret.
	TSIGSecretFile string `yaml:"tsig_secret_file"`
	// Resolvers answer zone and propagation lookups, host:port each.
	// Default: the system's.
	Resolvers []string `yaml:"resolvers"`
	// PropagationTimeout bounds the wait for the TXT record to show on the
	// authoritative servers: a duration (default 2m), or "off" to skip the
	// check.
	PropagationTimeout string `yaml:"propagation_timeout"`
}

// propagationTimeout parses tls.wildcard.propagation_timeout into
// certs.WildcardConfig's convention: 0 default, -1 no check.
func (w *WildcardConfig) propagationTimeout() (time.Duration, error) {
	switch w.PropagationTimeout {
	case "":
		return 0, nil
	case "off", "-1":
		return -1, nil
	}
	d, err := time.ParseDuration(w.PropagationTimeout)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q: want a duration such as 2m, or off", w.PropagationTimeout)
	}
	return d, nil
}

// TemplateConfig is one entry of templates:.
type TemplateConfig struct {
	Name    string            `yaml:"name"`
	Match   string            `yaml:"match"`
	Command []string          `yaml:"command"`
	Dir     string            `yaml:"dir"`
	Env     map[string]string `yaml:"env"`
	Port    int               `yaml:"port"`
	// Ports names several ports (web: 3000, api: 8080); DefaultPort picks
	// the one <env>.<domain> and the readiness probe use.
	Ports       map[string]int `yaml:"ports"`
	DefaultPort string         `yaml:"default_port"`
	Ready       struct {
		HTTP    string   `yaml:"http"`
		TCP     bool     `yaml:"tcp"`
		Timeout Duration `yaml:"timeout"`
	} `yaml:"ready"`
	IdleTimeout Duration `yaml:"idle_timeout"`
	MaxLifetime Duration `yaml:"max_lifetime"`
	// User runs the dev servers as this user, with no capabilities and
	// no_new_privs: dynamic (a uid of each env's own from users.uid_range,
	// owning only its data dir), or a name, uid or uid:gid shared by all
	// the template's envs (which can then read each other's data).
	// Default: dynamic, or root when allow_root is true.
	User string `yaml:"user"`
	// AllowRoot says dev servers may run as root. Default false.
	AllowRoot bool `yaml:"allow_root"`
	// RLimits are the dev servers' rlimits. Defaults: nofile 65536 (or the
	// gateway's own hard limit, if lower), nproc 1024 for dynamic users.
	RLimits struct {
		// NoFile is RLIMIT_NOFILE, open files per process.
		NoFile uint64 `yaml:"nofile"`
		// NProc is RLIMIT_NPROC, counted over every process and thread of
		// the user on the machine: for a named user, across all its envs.
		NProc uint64 `yaml:"nproc"`
	} `yaml:"rlimits"`
	// TmpSize bounds each env's private /tmp (and /dev/shm), a tmpfs
	// whose pages count as the env's memory. Default 256MiB.
	TmpSize Size `yaml:"tmp_size"`
	// Resources limit each env of the template through its cgroup.
	Resources ResourcesConfig `yaml:"resources"`
	StopGrace Duration        `yaml:"stop_grace"`
	// Waiting is what a browser sees while the env starts: page (default:
	// a page that follows the start and reloads when ready) or block
	// (wait, like every other client). The gateway's, with upstream and
	// cookies: see gatewayTemplates.
	Waiting string `yaml:"waiting"`
	// Upstream is how the gateway talks to the dev server: http (default)
	// or h2c (HTTP/2 without TLS, for gRPC servers).
	Upstream string `yaml:"upstream"`
	Cookies  struct {
		// SharedDomain lets the dev servers set cookies for the shared
		// domain (Domain=.<domain>), which every other env then gets.
		// Default false: the gateway makes them host-only.
		SharedDomain bool `yaml:"shared_domain"`
	} `yaml:"cookies"`
	// Network is what the envs may reach; see TemplateNetworkConfig.
	Network TemplateNetworkConfig `yaml:"network"`
	// Prepare are commands run in the env's checkout (source.checkouts),
	// as the env's user inside its namespace, before the dev server
	// starts, when the checkout is new or its commit changed since they
	// last succeeded. Default none.
	Prepare [][]string `yaml:"prepare"`
	// PrepareTimeout bounds the checkout and all its prepare steps
	// together; the ready timeout starts after them, when the dev server
	// does. Default 10m.
	PrepareTimeout Duration `yaml:"prepare_timeout"`
}

// Duration is a time.Duration written as "30s", "15m".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("%q is not a duration (write e.g. 500ms, 30s, 15m)", n.Value)
	}
	*d = Duration(v)
	return nil
}

// LoadConfig reads path, or the embedded default when path is "".
func LoadConfig(path string) (*Config, error) {
	if path == "" {
		return parseConfig("(embedded default)", defaultConfig)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parseConfig(path, b)
}

func parseConfig(file string, b []byte) (*Config, error) {
	c := &Config{file: file}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, &FieldError{File: file, Err: err} // yaml's syntax errors name the line
	}
	c.root = &root
	if errs := checkConfig(file, &root); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// checkConfig found every key known and every value decodable, so
	// this fails only where the two disagree: a bug.
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, &FieldError{File: file, Err: err}
	}
	c.setDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) setDefaults() {
	if c.Instance == "" {
		c.Instance = "envgate"
	}
	if len(c.Domains) == 0 {
		c.Domains = []string{"localhost"}
	}
	for i, d := range c.Domains {
		c.Domains[i] = strings.TrimSuffix(strings.ToLower(d), ".")
	}
	if c.Listen.HTTP == "" {
		c.Listen.HTTP = "localhost:8080"
	}
	if c.Listen.HTTPS == "" {
		c.Listen.HTTPS = ":443"
	}
	if c.StateDir == "" {
		c.StateDir = "/var/lib/envgate"
	}
	if c.Network.Pool == "" {
		c.Network.Pool = netns.DefaultPool.String()
	}
	c.setPortDefaults()
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = Duration(10 * time.Second)
	}
	if len(c.Templates) == 0 && certs.DefaultMode(c.Domains) == certs.ModeInternal {
		// No templates on localhost: run the demo dev server, as the
		// embedded default does. Elsewhere it is an error (validate).
		var d Config
		if err := yaml.Unmarshal(defaultConfig, &d); err == nil {
			c.Templates = d.Templates
		}
	}
	if c.TLS.Mode == "" {
		c.TLS.Mode = string(certs.DefaultMode(c.Domains))
	}
	c.setAccessDefaults()
	c.setClusterDefaults() // before the admin socket's, in runDir
	c.setAdminDefaults()
}

func (c *Config) validate() error {
	var errs []error
	add := func(e *FieldError) { errs = append(errs, e) }
	if err := netns.ValidatePrefix(c.Instance); err != nil {
		add(c.errAt("instance", "%q: want 1-8 characters of a-z and 0-9, starting with a letter", c.Instance))
	}
	for i, d := range c.Domains {
		labels := strings.Split(d, ".")
		ok := len(d) > 0 && len(d) < 200
		for _, l := range labels {
			ok = ok && envname.Valid(l)
		}
		if !ok {
			add(c.errAt(fmt.Sprintf("domains.%d", i), "%q is not a domain name", d))
		}
	}
	if _, _, err := net.SplitHostPort(c.Listen.HTTP); err != nil {
		add(c.errAt("listen.http", "%q: want host:port, e.g. :80 or localhost:8080", c.Listen.HTTP))
	}
	if _, _, err := net.SplitHostPort(c.Listen.HTTPS); err != nil {
		add(c.errAt("listen.https", "%q: want host:port, e.g. :443", c.Listen.HTTPS))
	}
	if p, err := netip.ParsePrefix(c.Network.Pool); err != nil || !p.Addr().Is4() || p.Bits() > 30 {
		add(c.errAt("network.pool", "%q: want an IPv4 prefix of /30 or larger, e.g. 10.213.0.0/16", c.Network.Pool))
	}
	switch certs.Mode(c.TLS.Mode) {
	case certs.ModeACME, certs.ModeInternal, certs.ModeFiles, certs.ModeOff:
		for _, e := range c.validateTLS() {
			if !reported(errs, e.Field) {
				add(e)
			}
		}
	default:
		add(c.errAt("tls.mode", "%q: want acme, internal, files or off", c.TLS.Mode))
	}
	errs = append(errs, c.validateLimits()...)
	errs = append(errs, c.validateSource()...)
	errs = append(errs, c.validatePreviews()...)
	errs = append(errs, c.validatePorts()...)
	errs = append(errs, c.validateProxying()...)
	errs = append(errs, c.validateUsers()...)
	errs = append(errs, c.validateAccess()...)
	errs = append(errs, c.validateAdmin()...)
	errs = append(errs, c.validateNetwork()...)
	errs = append(errs, c.validateCluster()...)
	if len(c.Templates) == 0 {
		add(c.noTemplatesError())
	}
	names := map[string]bool{}
	for i, tc := range c.Templates {
		p := fmt.Sprintf("templates.%d", i)
		if names[tc.Name] && tc.Name != "" {
			add(c.errAt(p+".name", "%q used twice", tc.Name))
		}
		names[tc.Name] = true
		if tc.Ready.HTTP != "" && tc.Ready.TCP {
			add(c.errAt(p+".ready", "set http or tcp, not both"))
		}
		if _, err := c.template(i); err != nil {
			if te, ok := errors.AsType[*lifecycle.TemplateError](err); ok {
				add(c.errAt(p+"."+dottedPath(te.Field), "%w", te.Err))
			} else {
				add(c.errAt(p, "%w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// template builds lifecycle template i, prepared.
func (c *Config) template(i int) (*lifecycle.Template, error) {
	tc := c.Templates[i]
	self, err := os.Executable()
	if err != nil {
		self = "envgate"
	}
	// {{.Self}} is the envgate binary, so templates can run its demo
	// server; it is resolved here, before lifecycle sees the template.
	cmd := make([]string, len(tc.Command))
	for j, a := range tc.Command {
		cmd[j] = strings.ReplaceAll(a, "{{.Self}}", self)
	}
	if len(tc.Command) > 1 && tc.Command[0] == "{{.Self}}" && tc.Command[1] == "demo-server" {
		cmd[0] = demoProgram(self)
	}
	t := &lifecycle.Template{
		Name:        tc.Name,
		Match:       tc.Match,
		Command:     cmd,
		Dir:         tc.Dir,
		Env:         tc.Env,
		Port:        tc.Port,
		Ports:       tc.Ports,
		DefaultPort: tc.DefaultPort,
		Ready:       lifecycle.Probe{HTTPPath: tc.Ready.HTTP, Timeout: time.Duration(tc.Ready.Timeout)},
		IdleTimeout: time.Duration(tc.IdleTimeout),
		MaxLifetime: time.Duration(tc.MaxLifetime),
		User:        tc.lifecycleUser(),
		AllowRoot:   tc.AllowRoot,
		RLimits:     lifecycle.RLimits{OpenFiles: tc.RLimits.NoFile, Processes: tc.RLimits.NProc},
		TmpSize:     int64(tc.TmpSize),
		Resources:   tc.Resources.lifecycle(),
		StopGrace:   time.Duration(tc.StopGrace),
	}
	t.PrepareSteps = tc.Prepare
	t.PrepareTimeout = time.Duration(tc.PrepareTimeout)
	if err := t.Prepare(); err != nil {
		return nil, err
	}
	return t, nil
}

// Templates returns the prepared lifecycle templates.
func (c *Config) lifecycleTemplates() ([]*lifecycle.Template, error) {
	out := make([]*lifecycle.Template, len(c.Templates))
	for i := range c.Templates {
		t, err := c.template(i)
		if err != nil {
			return nil, err
		}
		out[i] = t
	}
	return out, nil
}
