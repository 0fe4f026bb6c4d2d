package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/envgate/envgate/gateway/access"
	"github.com/envgate/envgate/lifecycle"
	"github.com/rs/zerolog"
)

// ColdStartHeader is set on responses that waited for their env to start;
// its value is the wait, such as "412ms", so tools can tell cold from warm.
const ColdStartHeader = "Envgate-Cold-Start"

// Config configures a Handler.
type Config struct {
	// Domains are the parent domains envs live under, lowercase, without
	// a trailing dot: env "x" of domain "localhost" is x.localhost.
	Domains []string
	// Envs acquires envs. Required.
	Envs Envs
	// Requests, if set, is told of every request (metrics); see
	// RequestObserver.
	Requests RequestObserver
	// Log receives request logs (debug) and proxy failures (warn).
	Log zerolog.Logger
	// Templates are the gateway's settings for each template's envs
	// (waiting, upstream protocol, cookie scope), by template name.
	// Default: none, so every env gets the defaults.
	Templates TemplateSettings
	// PortSeparator joins a port name to an env name in a host label
	// (api--feature-x); see SplitPort. Default DefaultPortSeparator. Named
	// ports work when Envs also implements PortNamer.
	PortSeparator string
	// TrustedProxies are the networks of proxies in front of the gateway
	// whose X-Forwarded-*, Forwarded, X-Real-Ip and X-Request-Id headers
	// are kept (and appended to). Default none: every client's are
	// replaced by the gateway's own.
	TrustedProxies []netip.Prefix
	// Conns tracks upgraded (hijacked) connections such as WebSockets,
	// which Handler.Shutdown ends; default a private set. Share one with
	// a TCPProxy to end both at once.
	Conns *Conns
	// WaitingPageAfter is how long a browser navigation to an env that is
	// not ready waits before it gets the waiting page instead: a start
	// quicker than this shows no page at all. Default 250ms. The page
	// needs Envs to implement ProgressReporter; without it browsers wait
	// like every other client.
	WaitingPageAfter time.Duration
	// Access decides who may reach each env, before anything else is
	// done for a request. Default (nil): no rules, so envs under
	// localhost domains are open and all others refused with a 403.
	Access *access.Policy
	// NewEnvs limits the envs each client address may bring into being;
	// nil: no limit. It counts only when Envs implements EnvKnower.
	NewEnvs *NewEnvLimit
	// Cluster, in cluster mode, says which node serves each env; requests
	// for envs of other nodes are forwarded there (see cluster.go). Node
	// is this node's name, sent in HopHeader; ClusterSecret, the secret
	// all nodes share (at least MinClusterSecret bytes), signs and checks
	// hops (HopAuthHeader). Default nil: single node.
	Cluster       Placer
	Node          string
	ClusterSecret []byte
	// NodeAPI, in cluster mode, answers the other nodes' requests for
	// NodeAPIHost (this node's admin API). Default nil: none.
	NodeAPI http.Handler
}

// Handler routes each request by Host to its env and proxies it there.
type Handler struct {
	requests RequestObserver // Config.Requests; nil: none
	domains  []string
	envs     Envs
	log      zerolog.Logger
	debug    bool
	proxy    *httputil.ReverseProxy
	up       upstreams        // the transports to envs; see upstream.go
	sep      string           // Config.PortSeparator
	tmpls    TemplateSettings // Config.Templates
	ports    PortNamer        // Config.Envs, if it names ports
	envConns envConns         // the transports' connections, by env address
	protocolState
	// access, newEnvs: Config.Access (never nil) and Config.NewEnvs;
	// known: Config.Envs, if it tells known envs (see accessgate.go).
	access  *access.Policy
	newEnvs *NewEnvLimit
	known   EnvKnower
	cluster *clusterRoute // nil unless cluster mode
	nodeAPI http.Handler  // Config.NodeAPI
}

// NewHandler returns the gateway's HTTP handler.
func NewHandler(cfg Config) (*Handler, error) {
	if len(cfg.Domains) == 0 {
		return nil, errors.New("gateway: at least one domain is required")
	}
	if cfg.Envs == nil {
		return nil, errors.New("gateway: Config.Envs is required")
	}
	if cfg.PortSeparator == "" {
		cfg.PortSeparator = DefaultPortSeparator
	}
	h := &Handler{
		sep:     cfg.PortSeparator,
		tmpls:   cfg.Templates,
		domains: cfg.Domains,
		envs:    cfg.Envs,
		log:     cfg.Log,
		debug:   cfg.Log.GetLevel() <= zerolog.DebugLevel,
	}
	h.up = newUpstreams(&h.envConns)
	h.requests = cfg.Requests
	h.ports, _ = cfg.Envs.(PortNamer)
	h.known, _ = cfg.Envs.(EnvKnower)
	h.access, h.newEnvs = cfg.Access, cfg.NewEnvs
	if h.access == nil {
		h.access, _ = access.New(access.Config{})
	}
	h.initProtocols(cfg)
	if err := h.initCluster(cfg); err != nil {
		return nil, err
	}
	h.nodeAPI = cfg.NodeAPI
	h.proxy = &httputil.ReverseProxy{
		Rewrite:        h.rewrite,
		Transport:      h.up,
		ModifyResponse: h.modifyResponse,
		BufferPool:     bufferPool{},
		ErrorHandler:   h.proxyError,
		ErrorLog:       newStdLogger(cfg.Log, "proxy"),
	}
	return h, nil
}

// rewrite points the outbound request at the leased env. The Host header
// stays the client's, so dev servers see the name they were reached by.
// Rewrite mode has already dropped any X-Forwarded-* the client sent;
// setForwarded sets the gateway's own (see forwarded.go).
func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	p := pr.In.Context().Value(proxiedKey{}).(*proxied)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = p.target.String()
	pr.Out.Host = pr.In.Host
	h.setForwarded(pr)
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	if h.cluster != nil {
		r = h.cluster.authenticateHop(r)
	}
	h.setRequestID(r)
	if h.cluster != nil && h.serveNodeAPI(w, r) {
		return
	}
	if h.cluster != nil && isTCPHopUpgrade(r.Header) {
		if hp := h.hop(r); hp == nil || !hp.tcp {
			// The Upgrade token is the cluster's own: no client uses it.
			(&errorPage{Status: http.StatusForbidden, Error: "bad_tcp_hop", Message: "Only a node of the cluster opens TCP hops."}).write(w, r)
			h.log.Warn().Str("remote", r.RemoteAddr).Str("host", r.Host).Msg("tcp hop refused: not signed by a node of the cluster")
			h.logRequest(r, "", http.StatusForbidden, began)
			return
		}
	}
	label, err := ParseHost(r.Host, h.domains)
	if err != nil {
		var he *HostError
		errors.As(err, &he)
		(&errorPage{Status: he.Status, Error: "bad_host", Message: "Host " + quote(r.Host) + ": " + he.Reason + "."}).write(w, r)
		h.logRequest(r, "", he.Status, began)
		return
	}
	env, port := SplitPort(label, h.sep, h.ports)
	var dec access.Decision
	if hp := h.hop(r); hp != nil {
		// Forwarded by a node of the cluster, which admitted the client.
		dec = access.Decision{Outcome: access.Allowed, ShowOutput: hp.showOutput}
		if r.URL.Path == StatusPath && !hp.tcp {
			// Status is forwarded for refused clients too (gate), and
			// the hop says only whether to show output: a client shown
			// no output is treated as refused here (no commit either).
			sd := dec
			if !hp.showOutput {
				sd.Outcome = access.Refused
			}
			h.serveStatus(w, r, env, sd)
			h.logRequest(r, env, http.StatusOK, began)
			return
		}
	} else {
		var status int
		if dec, status = h.gate(w, r, env); status != 0 {
			h.logRequest(r, env, status, began)
			return
		}
	}
	if h.cluster != nil {
		if h.routeCluster(w, r, env, dec.ShowOutput, began) {
			return
		}
		if hp := h.hop(r); hp != nil && hp.tcp {
			h.serveTCPHop(w, r, env, began)
			return
		}
	}
	body := bodyOf(r)
	if body != nil && peekFirst(r) {
		if err := body.peek(); err != nil {
			h.logRequest(r, env, h.bodyError(w, r, env, err), began)
			return
		}
	}
	lease, err := h.acquire(w, r, env, dec.ShowOutput)
	if errors.Is(err, errPageShown) {
		h.logRequest(r, env, http.StatusServiceUnavailable, began)
		return
	}
	if err != nil {
		status := h.acquireError(w, r, env, err, dec.ShowOutput)
		h.logRequest(r, env, status, began)
		return
	}
	defer lease.Release()
	w, untrack, ok := h.trackUpgrade(w, r)
	if !ok {
		h.logRequest(r, env, http.StatusServiceUnavailable, began)
		return
	}
	defer untrack()
	target, ok := lease.Port(port)
	if !ok {
		target, _ = lease.Port("")
	}
	via := route(h.tmpls.of(lease.Template()).Upstream, r)
	if via == viaDirect {
		if !h.debug {
			h.observe(h.serveDirect(w, r, lease, target), began)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		h.serveDirect(sw, r, lease, target)
		h.logRequest(r, env, sw.status, began)
		return
	}
	if cold := lease.ColdStart(); cold > 0 {
		w.Header().Set(ColdStartHeader, formatMillis(cold))
	}
	p := &proxied{lease: lease, target: target, via: via, body: body}
	pr := r.WithContext(context.WithValue(r.Context(), proxiedKey{}, p))
	if body != nil {
		pr.Body = body
	}
	if !h.debug && h.requests == nil {
		h.proxy.ServeHTTP(w, pr)
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	h.proxy.ServeHTTP(sw, pr)
	h.logRequest(r, env, sw.status, began)
}

// acquireError answers a failed Acquire and returns the status sent. The
// dev server's output is shown only if showOutput.
func (h *Handler) acquireError(w http.ResponseWriter, r *http.Request, env string, err error, showOutput bool) int {
	p := &errorPage{Env: env}
	var se *lifecycle.StartError
	var ce *lifecycle.CapacityError
	switch {
	case errors.As(err, &se):
		p.Status, p.Error = http.StatusBadGateway, "start_failed"
		if se.Timeout {
			p.Status, p.Error = http.StatusGatewayTimeout, "start_timeout"
		}
		p.Message = "Environment " + env + " did not start: " + se.Reason + "."
		if showOutput {
			p.Output = se.Tail
		}
		if d := time.Until(se.RetryAt); d > 0 {
			p.RetryAfter = int(d.Seconds()) + 1
			p.Message += fmt.Sprintf(" It failed repeatedly; the next attempt is in %ds.", p.RetryAfter)
		}
	case errors.As(err, &ce):
		p.Status, p.Error = http.StatusServiceUnavailable, "at_capacity"
		p.RetryAfter = max(int(ce.RetryAfter.Seconds()), 1)
		p.Message = "The gateway is at capacity (" + ce.Limit + ") and cannot start environment " + env + " now; try again in a moment."
	case errors.Is(err, lifecycle.ErrNoTemplate):
		p.Status, p.Error = http.StatusNotFound, "unknown_env"
		p.Message = "No template runs an environment named " + env + "."
	case errors.Is(err, lifecycle.ErrNotAllowed):
		// 404, as for a name no template runs: the source (a branch, a
		// checkout, a list) has no such env, and a stranger learns no more.
		p.Status, p.Error = http.StatusNotFound, "no_such_env"
		p.Message = "There is no environment named " + env + " here."
	case errors.Is(err, lifecycle.ErrNotOwner):
		// Cluster mode: another node claimed the env meanwhile, or etcd
		// is out of reach; the next try is placed afresh.
		p.Status, p.Error, p.RetryAfter = http.StatusServiceUnavailable, "cluster_unavailable", 2
		p.Message = "The cluster cannot start environment " + env + " on this node now: " + err.Error() + ". Retry in a moment."
	case errors.Is(err, lifecycle.ErrClosed):
		p.Status, p.Error, p.RetryAfter = http.StatusServiceUnavailable, "shutting_down", 1
		p.Message = "The gateway is restarting; try again in a moment."
	case r.Context().Err() != nil:
		return 499 // the client left; nobody to answer
	default:
		p.Status, p.Error = http.StatusInternalServerError, "internal"
		p.Message = "The gateway could not acquire environment " + env + "."
		h.log.Error().Err(err).Str("env", env).Msg("acquire")
	}
	p.write(w, r)
	return p.Status
}

// proxyError answers when the env's dev server could not be reached or
// broke off, or when the client's body could not be read (see body.go).
func (h *Handler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	p := r.Context().Value(proxiedKey{}).(*proxied)
	env := p.lease.Env()
	if b := p.body; b != nil {
		if berr := b.readErr(); berr != nil {
			h.log.Debug().Err(berr).Str("env", env).Str("request_id", r.Header.Get(RequestIDHeader)).Msg("client body unreadable")
			h.bodyError(w, r, env, berr)
			return
		}
	}
	h.upstreamError(w, r, env, err)
}

// upstreamError answers r with a 502 for err, a failure to reach env's
// dev server or to get a proper answer from it.
func (h *Handler) upstreamError(w http.ResponseWriter, r *http.Request, env string, err error) {
	if r.Context().Err() != nil {
		return // client gone
	}
	h.log.Warn().Err(err).Str("env", env).Str("path", r.URL.Path).Str("request_id", r.Header.Get(RequestIDHeader)).Msg("proxy error")
	(&errorPage{
		Status:  http.StatusBadGateway,
		Error:   "upstream_error",
		Env:     env,
		Message: "Environment " + env + " is running but its dev server did not answer properly: " + err.Error() + ".",
	}).write(w, r)
}

func (h *Handler) logRequest(r *http.Request, env string, status int, began time.Time) {
	h.observe(status, began)
	if !h.debug {
		return
	}
	h.log.Debug().Str("env", env).Str("method", r.Method).Str("host", r.Host).Str("path", r.URL.Path).
		Int("status", status).Dur("took", time.Since(began)).Str("remote", r.RemoteAddr).
		Str("request_id", r.Header.Get(RequestIDHeader)).Msg("request")
}

// formatMillis renders d as whole milliseconds with a unit, e.g. "412ms".
func formatMillis(d time.Duration) string {
	return strconv.FormatInt(max(d.Milliseconds(), 1), 10) + "ms"
}

// CloseIdleConnections drops kept-alive connections to envs.
func (h *Handler) CloseIdleConnections() {
	h.up.closeIdle()
}

// statusWriter records the status for the request log. Unwrap lets
// http.ResponseController (used by ReverseProxy for flushing and upgrades)
// reach the real writer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 && code >= 200 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// bufferPool reuses the proxy's copy buffers.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
