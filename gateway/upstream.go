package gateway

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/envgate/envgate/netns"
	"golang.org/x/net/http/httpguts"
)

// How a request reaches its env. route makes the one choice, per request:
//   - the direct path (direct.go) for a request without a body that
//     directEligible accepts, over the connections of its own transport
//     (direct_transport.go);
//   - httputil.ReverseProxy over HTTP/1.1 (http.Transport) for the rest:
//     bodies, upgrades, targets and fields it must rewrite;
//   - httputil.ReverseProxy over HTTP/2 without TLS (h2c) for every
//     request to an env whose template's upstream is h2c (EnvSettings;
//     gRPC servers speak nothing else), but upgrades, which HTTP/2 does
//     not have.

// via is a way to an env (see route).
type via uint8

const (
	viaDirect via = iota // the direct path
	viaH1                // ReverseProxy over HTTP/1.1
	viaH2C               // ReverseProxy over h2c
)

// route is how r reaches an env whose dev server speaks up.
func route(up Upstream, r *http.Request) via {
	if up == UpstreamH2C {
		if isUpgrade(r.Header) {
			return viaH1
		}
		return viaH2C
	}
	if directEligible(r) {
		return viaDirect
	}
	return viaH1
}

// isUpgrade reports whether a request asks to switch protocols, as
// httputil.ReverseProxy decides it.
func isUpgrade(h http.Header) bool {
	return h.Get("Upgrade") != "" && httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade")
}

// upstreams are the transports to envs. As ReverseProxy's Transport it
// takes the one route chose for the request (see proxied).
type upstreams struct {
	h1, h2c *http.Transport
	direct  *directTransport
}

// newUpstreams returns the transports to envs, whose connections conns
// tracks: one dialer, timeouts and idle limits for all.
func newUpstreams(conns *envConns) upstreams {
	h1 := &http.Transport{
		Proxy: nil, // never an outbound proxy: envs are on local veths
		DialContext: conns.track(dialEnv(&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
			// The firewall lets only the gateway's marked sockets
			// connect into envs (a lease that dials from inside its
			// env's namespace does not need it).
			Control: netns.MarkSocket,
		})),
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass Accept-Encoding through untouched
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
	h2c := h1.Clone()
	h2c.Protocols = new(http.Protocols)
	h2c.Protocols.SetUnencryptedHTTP2(true)
	return upstreams{h1: h1, h2c: h2c, direct: newDirectTransport(h1)}
}

// RoundTrip implements http.RoundTripper for ReverseProxy's requests.
func (u upstreams) RoundTrip(r *http.Request) (*http.Response, error) {
	if p, ok := r.Context().Value(proxiedKey{}).(*proxied); ok && p.via == viaH2C {
		return u.h2c.RoundTrip(r)
	}
	return u.h1.RoundTrip(r)
}

// closeIdle closes every transport's idle connections.
func (u upstreams) closeIdle() {
	u.h1.CloseIdleConnections()
	u.h2c.CloseIdleConnections()
	u.direct.CloseIdleConnections()
}

// proxied is what ReverseProxy's hooks need to know of a request that
// takes it, set by ServeHTTP in the request's context under proxiedKey.
type proxied struct {
	lease  Lease
	target netip.AddrPort // the env's port the request goes to
	via    via            // viaH1 or viaH2C
	body   *clientBody    // nil: the request has no body
}

type proxiedKey struct{}

// envDialer is a Lease that connects to its env from inside the env's
// network namespace (*lifecycle.Lease), so that the proxy's traffic
// crosses neither the env's veth nor the host's netfilter hooks.
type envDialer interface {
	DialContext(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error)
}

// dialLeaseKey is the context key of the Lease a dial to an env is for,
// set by serveDirect; the ReverseProxy's requests carry it in proxied.
type dialLeaseKey struct{}

// dialEnv returns d's DialContext, through the dial's Lease (in its
// context) when that is an envDialer.
func dialEnv(d *net.Dialer) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var l Lease
		if p, ok := ctx.Value(proxiedKey{}).(*proxied); ok {
			l = p.lease
		} else if dl, ok := ctx.Value(dialLeaseKey{}).(Lease); ok {
			l = dl
		}
		return dialLease(ctx, d, l, network, addr)
	}
}

// dialLease connects to addr, a port of l's env, with d: from inside the
// env's network namespace when l can (an envDialer), else from the
// gateway's (l nil, or a Lease of another kind).
func dialLease(ctx context.Context, d *net.Dialer, l Lease, network, addr string) (net.Conn, error) {
	if w, ok := l.(waitedLease); ok {
		l = w.Lease
	}
	if ed, ok := l.(envDialer); ok {
		return ed.DialContext(ctx, d, network, addr)
	}
	return d.DialContext(ctx, network, addr)
}
