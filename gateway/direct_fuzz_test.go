package gateway

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/rs/zerolog"
)

// FuzzDirectHead: for every request the direct path takes, the env gets
// the head httputil.ReverseProxy would have sent it. Each input is a
// request as a client writes it; the gateway's HTTP/1.1 server would
// parse it (http.ReadRequest and the checks net/http's server adds), and
// then, for a request that ServeHTTP would send the direct way (a valid
// Host, route viaDirect), the test sends it both ways to a loopback
// server that records the raw head, and compares the two.
//
// With h2 set, the request is given the shape the HTTP/2 server gives it
// (asHTTP2).
//
// Normalised, because it legitimately differs and means nothing to a
// server (RFC 9110 section 5.3): the order of fields of different names.
// Request.Write, which ReverseProxy's transport uses, writes Host and
// User-Agent first and the rest sorted by name; the direct path writes
// Host first and the rest in the header map's order. The order of the
// values of one name is compared as it is. Nothing else is normalised:
// the request ID, which would differ, is set once before both (as
// ServeHTTP does), and so the bytes must be equal.
func FuzzDirectHead(f *testing.F) {
	for _, seed := range directHeadSeeds {
		f.Add(seed.req, seed.trusted, false)
		f.Add(seed.req, seed.trusted, true)
	}
	env := newHeadRecorder(f)
	handlers := map[bool]*Handler{}
	for _, trusted := range []bool{false, true} {
		cfg := Config{Domains: []string{"localhost"}, Envs: fixedEnvs{}, Log: zerolog.Nop()}
		if trusted {
			cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		}
		h, err := NewHandler(cfg)
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(h.CloseIdleConnections)
		handlers[trusted] = h
	}
	lease := fixedLease{addr: env.addr}
	f.Fuzz(func(t *testing.T, raw string, trusted, h2 bool) {
		r := serverRequest(raw)
		if r == nil {
			return
		}
		if h2 {
			asHTTP2(r)
		}
		h := handlers[trusted]
		if _, err := ParseHost(r.Host, h.domains); err != nil || route(h.tmpls.of(lease.Template()).Upstream, r) != viaDirect {
			return
		}
		h.setRequestID(r)

		w := httptest.NewRecorder()
		h.serveDirect(w, r, lease, env.addr)
		direct := env.head(t, "direct path", w)
		w = httptest.NewRecorder()
		p := &proxied{lease: lease, target: env.addr, via: viaH1}
		h.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), proxiedKey{}, p)))
		proxy := env.head(t, "ReverseProxy", w)

		if !bytes.Equal(normalHead(direct), normalHead(proxy)) {
			t.Fatalf("request %q: the direct path sent\n%s\nReverseProxy sent\n%s", raw, direct, proxy)
		}
	})
}

// directHeadSeeds are FuzzDirectHead's seeds, besides testdata, each as
// HTTP/1.1 and as HTTP/2: each one the direct path takes
// (TestDirectHeadSeeds).
var directHeadSeeds = []struct {
	req     string
	trusted bool
}{
	{"GET / HTTP/1.1\r\nHost: x.localhost\r\n\r\n", false},
	{"GET /a/b?c=d&e=%20f HTTP/1.1\r\nHost: x.localhost:8080\r\nAccept: */*\r\nAccept: text/html\r\nUser-Agent: curl/8\r\n\r\n", false},
	{"HEAD /x HTTP/1.1\r\nHost: x.localhost\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: timeout=5\r\nTe: trailers, deflate\r\n\r\n", false},
	{"DELETE /item/1 HTTP/1.1\r\nHost: x.localhost\r\nContent-Length: 0\r\nX-Real-Ip: 1.2.3.4\r\n\r\n", false},
	{"POST /form HTTP/1.1\r\nHost: x.localhost\r\nContent-Length: 0\r\n\r\n", false},
	{"GET / HTTP/1.1\r\nHost: x.localhost\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Host: public.example\r\nX-Forwarded-Proto: https\r\nForwarded: for=203.0.113.9\r\nX-Request-Id: abc\r\n\r\n", true},
	{"GET / HTTP/1.1\r\nHost: x.localhost\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: X-Forwarded-For\r\n\r\n", true},
	{"OPTIONS /cors HTTP/1.0\r\nHost: x.localhost\r\nProxy-Authorization: Basic eDp4\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n", false},
}

// TestDirectHeadSeeds: FuzzDirectHead's seeds compare something.
func TestDirectHeadSeeds(t *testing.T) {
	for _, seed := range directHeadSeeds {
		for _, h2 := range []bool{false, true} {
			r := serverRequest(seed.req)
			if r != nil && h2 {
				asHTTP2(r)
			}
			if r == nil || route(UpstreamHTTP, r) != viaDirect {
				t.Errorf("seed %q (HTTP/2 %v): not a request the direct path takes", seed.req, h2)
			}
		}
	}
}

// serverRequest parses raw as the gateway's HTTP/1.1 server would, from
// a client on loopback, or returns nil if it would refuse it. (The
// server's further checks, of the Host and of field names and values,
// directEligible makes too.)
func serverRequest(raw string) *http.Request {
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		return nil
	}
	r.RemoteAddr = "127.0.0.1:40000"
	return r
}

// asHTTP2 makes r look like what the HTTP/2 server hands the handler for
// the same fields: the protocol, a Body even without data (ContentLength
// 0: the stream ended with its headers), and a "host" field, which it
// leaves in the header map beside :authority.
func asHTTP2(r *http.Request) {
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
	r.Body = io.NopCloser(strings.NewReader(""))
	r.Header["Host"] = []string{r.Host}
}

// normalHead is head with its field lines sorted by name, stably.
func normalHead(head []byte) []byte {
	lines := bytes.Split(bytes.TrimSuffix(head, []byte("\r\n\r\n")), []byte("\r\n"))
	name := func(l []byte) string { n, _, _ := bytes.Cut(l, []byte(":")); return string(n) }
	slices.SortStableFunc(lines[1:], func(a, b []byte) int { return strings.Compare(name(a), name(b)) })
	return bytes.Join(lines, []byte("\r\n"))
}

// headRecorder is an env on loopback that answers every request with a
// 204 and passes on its head, byte for byte.
type headRecorder struct {
	addr  netip.AddrPort
	heads chan []byte
}

func newHeadRecorder(tb testing.TB) *headRecorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	rec := &headRecorder{addr: ln.Addr().(*net.TCPAddr).AddrPort(), heads: make(chan []byte, 1)}
	done := make(chan struct{})
	conns := make(chan net.Conn, 100)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
			go rec.serve(c)
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		<-done
		close(conns)
		for c := range conns {
			c.Close()
		}
	})
	return rec
}

func (rec *headRecorder) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		var head []byte
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			head = append(head, line...)
			if len(line) <= 2 {
				break
			}
		}
		rec.heads <- head
		if _, err := c.Write([]byte("HTTP/1.1 204 No Content\r\n\r\n")); err != nil {
			return
		}
	}
}

// head returns the head the env got for one request, whose response w
// must be the env's 204.
func (rec *headRecorder) head(t *testing.T, way string, w *httptest.ResponseRecorder) []byte {
	t.Helper()
	if w.Code != http.StatusNoContent {
		t.Fatalf("%s: status %d %s, want the env's 204", way, w.Code, w.Body)
	}
	select {
	case h := <-rec.heads:
		return h
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the env got no request", way)
		return nil
	}
}

// fixedEnvs and fixedLease are a manager with one env, always ready, at
// addr.
type fixedEnvs struct{}

func (fixedEnvs) Acquire(context.Context, string) (Lease, error) {
	return nil, lifecycle.ErrNoTemplate
}

type fixedLease struct{ addr netip.AddrPort }

func (l fixedLease) Env() string                        { return "x" }
func (l fixedLease) Port(string) (netip.AddrPort, bool) { return l.addr, true }
func (l fixedLease) ColdStart() time.Duration           { return 0 }
func (l fixedLease) Template() *lifecycle.Template      { return nil }
func (l fixedLease) Release()                           {}
