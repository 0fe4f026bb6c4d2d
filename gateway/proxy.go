package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/rs/zerolog"
)

// ColdStartHeader is set on responses that waited for their env to start;
// its value is the wait, such as "412ms", so tools can tell cold from warm.
const ColdStartHeader = "Envgate-Cold-Start"

// Envs is what the gateway needs of the lifecycle manager.
type Envs interface {
	Acquire(ctx context.Context, name string) (*lifecycle.Lease, error)
}

// Config configures a Handler.
type Config struct {
	// Domains are the parent domains envs live under, lowercase, without
	// a trailing dot: env "x" of domain "localhost" is x.localhost.
	Domains []string
	// Envs acquires envs. Required.
	Envs Envs
	// Log receives request logs (debug) and proxy failures (warn).
	Log zerolog.Logger
}

// Handler routes each request by Host to its env and proxies it there.
type Handler struct {
	domains   []string
	envs      Envs
	log       zerolog.Logger
	debug     bool
	proxy     *httputil.ReverseProxy
	transport *http.Transport
}

type leaseKey struct{}

// NewHandler returns the gateway's HTTP handler.
func NewHandler(cfg Config) (*Handler, error) {
	if len(cfg.Domains) == 0 {
		return nil, errors.New("gateway: at least one domain is required")
	}
	if cfg.Envs == nil {
		return nil, errors.New("gateway: Config.Envs is required")
	}
	h := &Handler{
		domains: cfg.Domains,
		envs:    cfg.Envs,
		log:     cfg.Log,
		debug:   cfg.Log.GetLevel() <= zerolog.DebugLevel,
		transport: &http.Transport{
			Proxy: nil, // never an outbound proxy: envs are on local veths
			DialContext: (&net.Dialer{
				Timeout:   5 * time.Second,
				KeepAlive: 30 * time.Second,
			}).DialContext,
			MaxIdleConns:          4096,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
			DisableCompression:    true, // pass Accept-Encoding through untouched
			WriteBufferSize:       32 << 10,
			ReadBufferSize:        32 << 10,
		},
	}
	h.proxy = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    h.transport,
		BufferPool:   bufferPool{},
		ErrorHandler: h.proxyError,
		ErrorLog:     newStdLogger(cfg.Log, "proxy"),
	}
	return h, nil
}

// rewrite points the outbound request at the leased env. The Host header
// stays the client's, so dev servers see the name they were reached by.
// Rewrite mode has already dropped any X-Forwarded-* the client sent;
// SetXForwarded sets the gateway's own.
func rewrite(pr *httputil.ProxyRequest) {
	l := pr.In.Context().Value(leaseKey{}).(*lifecycle.Lease)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = l.Addr.String()
	pr.Out.Host = pr.In.Host
	pr.SetXForwarded()
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	env, err := ParseHost(r.Host, h.domains)
	if err != nil {
		var he *HostError
		errors.As(err, &he)
		(&errorPage{Status: he.Status, Error: "bad_host", Message: "Host " + quote(r.Host) + ": " + he.Reason + "."}).write(w, r)
		h.logRequest(r, "", he.Status, began)
		return
	}
	lease, err := h.envs.Acquire(r.Context(), env)
	if err != nil {
		status := h.acquireError(w, r, env, err)
		h.logRequest(r, env, status, began)
		return
	}
	defer lease.Release()
	if lease.Cold > 0 {
		w.Header().Set(ColdStartHeader, formatMillis(lease.Cold))
	}
	ctx := context.WithValue(r.Context(), leaseKey{}, lease)
	if !h.debug {
		h.proxy.ServeHTTP(w, r.WithContext(ctx))
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	h.proxy.ServeHTTP(sw, r.WithContext(ctx))
	h.logRequest(r, env, sw.status, began)
}

// acquireError answers a failed Acquire and returns the status sent.
func (h *Handler) acquireError(w http.ResponseWriter, r *http.Request, env string, err error) int {
	p := &errorPage{Env: env}
	var se *lifecycle.StartError
	switch {
	case errors.As(err, &se):
		p.Status, p.Error = http.StatusBadGateway, "start_failed"
		if se.Timeout {
			p.Status, p.Error = http.StatusGatewayTimeout, "start_timeout"
		}
		p.Message = "Environment " + env + " did not start: " + se.Reason + "."
		p.Output = se.Tail
		if d := time.Until(se.RetryAt); d > 0 {
			p.RetryAfter = int(d.Seconds()) + 1
			p.Message += fmt.Sprintf(" It failed repeatedly; the next attempt is in %ds.", p.RetryAfter)
		}
	case errors.Is(err, lifecycle.ErrNoTemplate):
		p.Status, p.Error = http.StatusNotFound, "unknown_env"
		p.Message = "No template runs an environment named " + env + "."
	case errors.Is(err, lifecycle.ErrNotAllowed):
		p.Status, p.Error = http.StatusForbidden, "not_allowed"
		p.Message = "Environment " + env + " is not allowed here."
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
// broke off.
func (h *Handler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // client gone
	}
	l := r.Context().Value(leaseKey{}).(*lifecycle.Lease)
	h.log.Warn().Err(err).Str("env", l.Env()).Str("path", r.URL.Path).Msg("proxy error")
	(&errorPage{
		Status:  http.StatusBadGateway,
		Error:   "upstream_error",
		Env:     l.Env(),
		Message: "Environment " + l.Env() + " is running but its dev server did not answer properly: " + err.Error() + ".",
	}).write(w, r)
}

func (h *Handler) logRequest(r *http.Request, env string, status int, began time.Time) {
	if !h.debug {
		return
	}
	h.log.Debug().Str("env", env).Str("method", r.Method).Str("host", r.Host).Str("path", r.URL.Path).
		Int("status", status).Dur("took", time.Since(began)).Str("remote", r.RemoteAddr).Msg("request")
}

// formatMillis renders d as whole milliseconds with a unit, e.g. "412ms".
func formatMillis(d time.Duration) string {
	return strconv.FormatInt(max(d.Milliseconds(), 1), 10) + "ms"
}

// CloseIdleConnections drops kept-alive connections to envs.
func (h *Handler) CloseIdleConnections() { h.transport.CloseIdleConnections() }

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
