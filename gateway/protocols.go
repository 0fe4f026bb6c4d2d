package gateway

import (
	"context"
	"net/http"
	"net/netip"
	"time"

	"github.com/envgate/envgate/lifecycle"
)

// DefaultWaitingPageAfter is Config.WaitingPageAfter's default.
const DefaultWaitingPageAfter = 250 * time.Millisecond

// protocolState is the part of a Handler that the protocol features use:
// forwarding headers, upgraded connections and the waiting page. It is
// set once by initProtocols.
type protocolState struct {
	trusted   []netip.Prefix   // Config.TrustedProxies
	conns     *Conns           // upgraded connections, for Shutdown
	pageAfter time.Duration    // Config.WaitingPageAfter
	progress  ProgressReporter // Config.Envs, if it reports progress
}

// ProgressReporter is what the waiting page needs of the lifecycle
// manager besides Acquire. *lifecycle.Manager implements it.
type ProgressReporter interface {
	// Progress reports how env name's start is going, with up to tail
	// lines of its output, without starting or waiting for anything.
	Progress(name string, tail int) (lifecycle.Progress, error)
}

func (h *Handler) initProtocols(cfg Config) {
	h.trusted = cfg.TrustedProxies
	h.conns = cfg.Conns
	if h.conns == nil {
		h.conns = &Conns{}
	}
	h.pageAfter = cfg.WaitingPageAfter
	if h.pageAfter <= 0 {
		h.pageAfter = DefaultWaitingPageAfter
	}
	h.progress, _ = cfg.Envs.(ProgressReporter)
}

// Shutdown ends upgraded connections (WebSockets and other hijacked
// streams), which http.Server.Shutdown neither waits for nor closes: it
// lets them run until ctx is done, the shutdown grace, then sends each
// WebSocket client a close frame 1001 "going away", closes every one and
// waits until their handlers have returned. Call it alongside
// http.Server.Shutdown with the same deadline, and before the envs are
// stopped. It returns ctx's cause when it had to close any.
func (h *Handler) Shutdown(ctx context.Context) error { return h.conns.Shutdown(ctx) }

// EnableH2C lets srv, a server without TLS, speak HTTP/2 to clients that
// start with the HTTP/2 preface (prior knowledge), besides HTTP/1.
// Config key listen.h2c.
func EnableH2C(srv *http.Server) {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	srv.Protocols = p
}

// modifyResponse gives every proxied response, 101 included, the
// request's ID, replacing whatever the env sent under that name, and
// makes cookies for the shared domain host-only (see cookies.go).
func (h *Handler) modifyResponse(res *http.Response) error {
	if id := res.Request.Header.Get(RequestIDHeader); id != "" {
		res.Header.Set(RequestIDHeader, id)
	}
	if _, ok := res.Header["Set-Cookie"]; ok {
		var t *lifecycle.Template
		if p, ok := res.Request.Context().Value(proxiedKey{}).(*proxied); ok {
			t = p.lease.Template()
		}
		h.scopeCookies(res.Header, t)
	}
	return nil
}
