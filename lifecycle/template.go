package lifecycle

import (
	"bytes"
	"fmt"
	"path"
	"slices"
	"strings"
	"text/template"
	"time"
)

// Defaults for template fields left zero.
const (
	DefaultStartTimeout = 60 * time.Second
	DefaultIdleTimeout  = 15 * time.Minute
	DefaultStopGrace    = 5 * time.Second
	// DefaultPrepareTimeout is PrepareTimeout left zero: room for an
	// npm ci or a build on a cold cache.
	DefaultPrepareTimeout = 10 * time.Minute
	// DefaultPids is Resources.Pids where the env gets a cgroup and its
	// template sets none.
	DefaultPids = 1024
)

// Template says how to run the envs whose names it matches.
type Template struct {
	// Name identifies the template in logs and errors.
	Name string
	// Match is a glob (path.Match syntax) over env names; "" or "*"
	// matches every name. The first matching template wins.
	Match string
	// Command is the dev server's argv. Each element, like Dir and Env's
	// values, may use {{.Name}}, {{.Port}} and {{.DataDir}}.
	Command []string
	// Dir is the working directory; default the env's data dir.
	Dir string
	// PrepareSteps are commands run, in order, in the env's checkout
	// (devserver.Config.Checkouts), as the env's user inside its sandbox, before
	// the dev server starts, whenever the checkout is new or its commit
	// changed since the last successful run. Elements are not expanded.
	// Default none.
	PrepareSteps [][]string
	// PrepareTimeout bounds the checkout and all of its prepare steps
	// together, apart from Ready.Timeout, which starts when the dev
	// server does; default DefaultPrepareTimeout.
	PrepareTimeout time.Duration
	// Env is added to the dev server's environment, which otherwise holds
	// only PATH, HOME (the data dir), PORT, ENVGATE_ENV and
	// ENVGATE_DATA_DIR: the gateway's own environment is not passed on.
	Env map[string]string
	// Port is where the dev server listens inside its sandbox. Every env
	// may use the same port. With Ports set, Prepare sets it to the
	// default port's number.
	Port int
	// Ports, when set, names every port the dev server listens on (web:
	// 3000, api: 8080); <name>--<env>.<domain> reaches a named one (see
	// gateway.SplitPort). Names are DNS labels without "--". Optional.
	Ports map[string]int
	// DefaultPort names the port in Ports that plain <env>.<domain> and
	// the readiness probe use; default the only port, or the one numbered
	// Port.
	DefaultPort string
	// Ready is the readiness probe.
	Ready Probe
	// IdleTimeout stops an env with no activity for this long; default
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// User runs the dev server as this user: a name, a uid or uid:gid,
	// or DynamicUser ("dynamic"): a uid of the env's own from
	// devserver.Config.Users, kept while its data dir exists. Either way with no
	// supplementary groups, no capabilities and no_new_privs, and its
	// data dir is made its own. Envs of a named user can read each
	// other's data; a dynamic user's cannot. Default "": the gateway's
	// own user (the gateway's config makes that "dynamic" unless
	// AllowRoot is set).
	User string
	// AllowRoot allows User to be root (uid 0). Default false.
	AllowRoot bool
	// RLimits are the dev server's rlimits; see RLimits for defaults.
	RLimits RLimits
	// TmpSize bounds an isolated env's private /tmp (devserver.Config.Isolate), in
	// bytes; default DefaultTmpSize.
	TmpSize int64
	// Resources limit each env's memory, CPU and processes (through its
	// cgroup; see devserver.Config.CgroupParent). Default: no limits but
	// DefaultPids processes where envs get cgroups.
	Resources Resources
	// MaxLifetime, when set, stops an env that has run this long the
	// next time nothing is in flight, however active it is (the next
	// request starts it afresh). Default 0: no limit.
	MaxLifetime time.Duration
	// StopGrace is how long a dev server has between SIGTERM and SIGKILL;
	// default DefaultStopGrace.
	StopGrace time.Duration

	parsed  []*template.Template // Command, then Dir, then Env in key order
	cred    *credential          // from User; nil: the gateway's own or dynamic
	dynamic bool                 // User is DynamicUser
}

// Probe says when a dev server is ready.
type Probe struct {
	// HTTPPath, when set, is fetched with GET; any status below 500 means
	// ready. When empty, a TCP connect to the port means ready.
	HTTPPath string
	// Timeout bounds the start from sandbox creation to ready, the
	// checkout and its prepare steps excepted (Template.PrepareTimeout
	// bounds those); default DefaultStartTimeout.
	Timeout time.Duration
}

// Vars are the values template placeholders expand to.
type Vars struct {
	Name    string
	Port    int
	DataDir string
	// Checkout is the env's checkout of its branch (devserver.Config.Checkouts);
	// "" without checkouts.
	Checkout string
	Ports    map[string]int // the template's named ports: {{.Ports.api}}
}

// Prepare checks t and fills in defaults. An error is a *TemplateError,
// which names the field.
func (t *Template) Prepare() error {
	if t.Name == "" {
		return fieldError("name", "required")
	}
	if len(t.Command) == 0 {
		return fieldError("command", "required")
	}
	if err := t.preparePorts(); err != nil {
		return err
	}
	if t.Match == "" {
		t.Match = "*"
	}
	if _, err := path.Match(t.Match, "x"); err != nil {
		return fieldError("match", "%q: %w", t.Match, err)
	}
	for i, step := range t.PrepareSteps {
		if len(step) == 0 || step[0] == "" {
			return fieldError(fmt.Sprintf("prepare[%d]", i), "empty command")
		}
	}
	if t.Ready.HTTPPath != "" && !strings.HasPrefix(t.Ready.HTTPPath, "/") {
		return fieldError("ready.http", "%q must start with /", t.Ready.HTTPPath)
	}
	if t.Ready.Timeout <= 0 {
		t.Ready.Timeout = DefaultStartTimeout
	}
	if t.PrepareTimeout <= 0 {
		t.PrepareTimeout = DefaultPrepareTimeout
	}
	if t.IdleTimeout <= 0 {
		t.IdleTimeout = DefaultIdleTimeout
	}
	if t.StopGrace <= 0 {
		t.StopGrace = DefaultStopGrace
	}
	if err := t.prepareUser(); err != nil {
		return err
	}
	t.parsed = t.parsed[:0]
	parse := func(field, s string) error {
		tp, err := template.New(field).Option("missingkey=error").Parse(s)
		if err != nil {
			return fieldError(field, "%w", err)
		}
		// Execute once with sample values so a bad field ({{.Nmae}}) fails
		// now, not at the first request.
		if err := tp.Execute(&bytes.Buffer{}, Vars{Name: "x", Port: 1, DataDir: "/x", Checkout: "/x", Ports: t.Ports}); err != nil {
			return fieldError(field, "%w", err)
		}
		t.parsed = append(t.parsed, tp)
		return nil
	}
	for i, a := range t.Command {
		if err := parse(fmt.Sprintf("command[%d]", i), a); err != nil {
			return err
		}
	}
	if err := parse("dir", t.Dir); err != nil {
		return err
	}
	for _, k := range t.envKeys() {
		if err := parse("env."+k, t.Env[k]); err != nil {
			return err
		}
	}
	return nil
}

func (t *Template) envKeys() []string {
	keys := make([]string, 0, len(t.Env))
	for k := range t.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Matches reports whether the template applies to env name.
func (t *Template) Matches(name string) bool {
	ok, _ := path.Match(t.Match, name)
	return ok
}

// Expanded is a template's command with its placeholders filled in for
// one env.
type Expanded struct {
	Argv []string
	Dir  string // "" when the template sets none
	Env  map[string]string
}

// Expand fills in the template's Command, Dir and Env for v.
func (t *Template) Expand(v Vars) (Expanded, error) {
	var out Expanded
	v.Ports = t.Ports
	exec := func(i int) (string, error) {
		var b strings.Builder
		err := t.parsed[i].Execute(&b, v)
		return b.String(), err
	}
	n := len(t.Command)
	for i := range n {
		s, err := exec(i)
		if err != nil {
			return out, err
		}
		out.Argv = append(out.Argv, s)
	}
	dir, err := exec(n)
	if err != nil {
		return out, err
	}
	out.Dir = dir
	out.Env = make(map[string]string, len(t.Env))
	for j, k := range t.envKeys() {
		s, err := exec(n + 1 + j)
		if err != nil {
			return out, err
		}
		out.Env[k] = s
	}
	return out, nil
}
