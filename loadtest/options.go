package loadtest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"text/template"
	"time"
)

// Defaults applied by Options.Validate to zero-valued fields.
const (
	DefaultHostTemplate = "e{{.I}}.localhost"
	DefaultEnvs         = 10
	DefaultScheme       = "http"
	DefaultMethod       = http.MethodGet
	DefaultPath         = "/"
	DefaultTimeout      = 10 * time.Second
	DefaultMaxInflight  = 10000
	DefaultExpectHeader = "X-Envgate-Env"
	DefaultDuration     = 10 * time.Second
	// ColdStartHeader is the response header with which the gateway marks a
	// request that had to wait for its environment to start.
	ColdStartHeader = "Envgate-Cold-Start"
)

// Options configures one run. The zero value is not runnable: Addr and one of
// Rate or Concurrency are required; Validate fills in every other default.
// Field comments name the command-line flag that sets each field.
type Options struct {
	// Addr is the host:port every connection dials, whatever the hostname
	// (--addr). Required.
	Addr string
	// Scheme is "http" or "https" (--scheme). Default "http".
	Scheme string

	// HostTemplate is a text/template over {{.I}} (0..Envs-1) that makes the
	// hostnames (--hosts). Default "e{{.I}}.localhost". Ignored when HostList
	// is set.
	HostTemplate string
	// Envs is how many hostnames the template makes (--envs). Default 10.
	Envs int
	// HostList is an explicit list of hostnames (--host-list FILE, see
	// ReadHostList). It takes precedence over HostTemplate.
	HostList []string
	// Dist picks the hostname of each request (--dist): "uniform" (default),
	// "zipf:S" with S > 1, or "hotcold:H,P" (H hot hosts, and a fraction P of
	// requests to never-seen hosts, to force cold starts).
	Dist string
	// Seed makes host choice reproducible (--seed). Default 1.
	Seed uint64

	// Rate, in requests per second, selects the open-loop mode (--rate).
	Rate float64
	// Concurrency selects the closed-loop mode with that many workers
	// (--concurrency).
	Concurrency int
	// Duration of the measured part of the run (--duration). Default 10s
	// unless Requests is set.
	Duration time.Duration
	// Requests ends the run after that many measured requests (--requests).
	Requests int64
	// Warmup is run before the measured part and excluded from the report
	// (--warmup). Hosts first hit during the warm-up count as warm later.
	Warmup time.Duration
	// MaxInflight caps requests in flight in the open loop (--max-inflight),
	// so a dead server cannot make the generator grow without bound.
	// Default 10000.
	MaxInflight int
	// Timeout bounds each request, including reading its body (--timeout).
	// Default 10s.
	Timeout time.Duration

	// Method, Path, Header and Body shape every request (--method, --path,
	// --header, --body). Defaults GET and "/".
	Method string
	Path   string
	Header http.Header
	Body   []byte

	// ExpectHeader names the response header that must equal the env name
	// (--expect-header). Default "X-Envgate-Env".
	ExpectHeader string
	// ExpectBody, when set, replaces the header check: the response body must
	// contain this text/template over {{.Env}} and {{.Host}} (--expect-body).
	ExpectBody string
	// NoCheck turns the routing check off (--no-check).
	NoCheck bool

	// CAFile is a PEM file of CA certificates to trust instead of the
	// system's (--ca). Insecure skips verification (--insecure).
	CAFile   string
	Insecure bool
	// HTTP2 forces HTTP/2: over TLS via ALPN, over plain HTTP as h2c with
	// prior knowledge (--http2). Default HTTP/1.1.
	HTTP2 bool

	// dist is Dist parsed by Validate.
	dist distSpec
	// transport, when set, carries every request instead of a transport
	// that dials Addr: tests serve requests in memory with it, so that a
	// run can go in a testing/synctest bubble.
	transport http.RoundTripper
}

// ErrInvalidOptions is wrapped by every error Validate returns.
var ErrInvalidOptions = errors.New("loadtest: invalid options")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidOptions, fmt.Sprintf(format, args...))
}

// Validate checks the options, fills in defaults, and returns an error that
// names the offending flag.
func (o *Options) Validate() error {
	if o.Addr == "" {
		return invalid("--addr is required (host:port of the server to load)")
	}
	if _, _, err := net.SplitHostPort(o.Addr); err != nil {
		return invalid("--addr %q: want host:port: %v", o.Addr, err)
	}
	if o.Scheme == "" {
		o.Scheme = DefaultScheme
	}
	if o.Scheme != "http" && o.Scheme != "https" {
		return invalid("--scheme %q: want http or https", o.Scheme)
	}
	if o.Insecure && o.CAFile != "" {
		return invalid("--insecure and --ca exclude each other")
	}
	if (o.Insecure || o.CAFile != "") && o.Scheme != "https" {
		return invalid("--insecure and --ca need --scheme https")
	}

	switch {
	case o.Rate > 0 && o.Concurrency > 0:
		return invalid("--rate (open loop) and --concurrency (closed loop) exclude each other")
	case o.Rate < 0:
		return invalid("--rate %v: must be positive", o.Rate)
	case o.Concurrency < 0:
		return invalid("--concurrency %d: must be positive", o.Concurrency)
	case o.Rate == 0 && o.Concurrency == 0:
		return invalid("set --rate R (open loop) or --concurrency C (closed loop)")
	}
	if o.Duration < 0 || o.Requests < 0 || o.Warmup < 0 {
		return invalid("--duration, --requests and --warmup must not be negative")
	}
	if o.Duration > 0 && o.Requests > 0 {
		return invalid("--duration and --requests exclude each other")
	}
	if o.Duration == 0 && o.Requests == 0 {
		o.Duration = DefaultDuration
	}
	if o.MaxInflight == 0 {
		o.MaxInflight = DefaultMaxInflight
	}
	if o.MaxInflight < 0 {
		return invalid("--max-inflight %d: must be positive", o.MaxInflight)
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Timeout < 0 {
		return invalid("--timeout %v: must be positive", o.Timeout)
	}
	if o.Seed == 0 {
		o.Seed = 1
	}

	if o.Method == "" {
		o.Method = DefaultMethod
	}
	if strings.ContainsAny(o.Method, " \t\r\n") {
		return invalid("--method %q: not a method", o.Method)
	}
	if o.Header.Get("Host") != "" {
		return invalid("--header Host: the Host header comes from --hosts or --host-list")
	}
	if o.Path == "" {
		o.Path = DefaultPath
	}
	if _, err := url.ParseRequestURI(o.Path); err != nil || !strings.HasPrefix(o.Path, "/") {
		return invalid("--path %q: want an absolute path like /api?x=1", o.Path)
	}

	if err := o.validateHosts(); err != nil {
		return err
	}
	if err := o.validateCheck(); err != nil {
		return err
	}
	return nil
}

func (o *Options) validateHosts() error {
	if o.Dist == "" {
		o.Dist = "uniform"
	}
	d, err := parseDist(o.Dist)
	if err != nil {
		return invalid("--dist %q: %v", o.Dist, err)
	}
	o.dist = d

	if len(o.HostList) > 0 {
		for i, h := range o.HostList {
			if err := checkHostname(h); err != nil {
				return invalid("--host-list entry %d %q: %v", i+1, h, err)
			}
		}
		if d.kind == distHotCold && d.hot >= len(o.HostList) {
			return invalid("--dist %q: a host list needs more than H=%d hosts so that some are never-seen", o.Dist, d.hot)
		}
		return nil
	}
	if o.HostTemplate == "" {
		o.HostTemplate = DefaultHostTemplate
	}
	if o.Envs == 0 {
		o.Envs = DefaultEnvs
	}
	if o.Envs < 0 {
		return invalid("--envs %d: must be positive", o.Envs)
	}
	tmpl, err := template.New("hosts").Option("missingkey=error").Parse(o.HostTemplate)
	if err != nil {
		return invalid("--hosts %q: %v", o.HostTemplate, err)
	}
	h, err := renderHost(tmpl, 0)
	if err != nil {
		return invalid("--hosts %q: %v", o.HostTemplate, err)
	}
	if err := checkHostname(h); err != nil {
		return invalid("--hosts %q makes %q: %v", o.HostTemplate, h, err)
	}
	if o.Envs > 1 && !strings.Contains(o.HostTemplate, "{{") {
		return invalid("--hosts %q has no {{.I}}, so --envs %d would repeat one host", o.HostTemplate, o.Envs)
	}
	return nil
}

func (o *Options) validateCheck() error {
	if o.NoCheck {
		return nil
	}
	if o.ExpectBody != "" {
		if _, err := template.New("expect").Option("missingkey=error").Parse(o.ExpectBody); err != nil {
			return invalid("--expect-body %q: %v", o.ExpectBody, err)
		}
		return nil
	}
	if o.ExpectHeader == "" {
		o.ExpectHeader = DefaultExpectHeader
	}
	if strings.ContainsAny(o.ExpectHeader, " :\t\r\n") {
		return invalid("--expect-header %q: not a header name", o.ExpectHeader)
	}
	return nil
}

// checkHostname rejects what cannot be a URL host without a port.
func checkHostname(h string) error {
	switch {
	case h == "":
		return errors.New("empty hostname")
	case strings.ContainsAny(h, " \t\r\n/:?#@"):
		return errors.New("a hostname has no spaces, scheme, port or path")
	case strings.HasPrefix(h, "."):
		return errors.New("empty first label (the env name)")
	}
	return nil
}

// openLoop reports whether the run schedules requests at Rate.
func (o *Options) openLoop() bool { return o.Rate > 0 }

// ParseHeaders parses "Name: value" strings (repeated --header flags) into
// a header; a name may repeat.
func ParseHeaders(lines []string) (http.Header, error) {
	h := http.Header{}
	for _, l := range lines {
		name, value, ok := strings.Cut(l, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, invalid("--header %q: want \"Name: value\"", l)
		}
		h.Add(name, strings.TrimSpace(value))
	}
	return h, nil
}
