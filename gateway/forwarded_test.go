package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/loadtest/demo"
	"github.com/envgate/envgate/netns/netnstest/wait"
	"github.com/rs/zerolog"
)

func decodeEcho(t *testing.T, resp *http.Response) demo.EchoResponse {
	t.Helper()
	var e demo.EchoResponse
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatalf("decode /echo (status %d): %v", resp.StatusCode, err)
	}
	return e
}

// forwardingHeaders are the ones a client could use to lie about where a
// request came from.
var forwardingHeaders = []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "X-Real-Ip", "X-Request-Id"}

// TestForwardedHeaders checks what the env sees of the gateway's hop:
// from an untrusted client exactly the gateway's values, however the
// client tries to smuggle its own in; from a trusted proxy its values with
// the gateway's hop appended.
func TestForwardedHeaders(t *testing.T) {
	g := startFake(t, gwOptions{}, func(string) *fakeEnv { return &fakeEnv{} })
	// A second handler on the same envs that trusts loopback, as if a
	// load balancer ran on this machine. Its request log is kept.
	var logs lockedBuffer
	trusting, err := gateway.NewHandler(gateway.Config{
		Domains:        []string{"localhost"},
		Envs:           g.Fake,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		Log:            zerolog.New(&logs).Level(zerolog.DebugLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	trustedAddr := serveHandler(t, trusting)

	spoofed := map[string]string{
		"X-Forwarded-For":   "203.0.113.9",
		"X-Forwarded-Host":  "public.example",
		"X-Forwarded-Proto": "https",
		"Forwarded":         "for=203.0.113.9;proto=https",
		"X-Real-Ip":         "203.0.113.9",
		"X-Request-Id":      "lb-1234",
	}
	ours := func(id string) map[string]string {
		return map[string]string{
			"X-Forwarded-For":   "127.0.0.1",
			"X-Forwarded-Host":  "fwd.localhost",
			"X-Forwarded-Proto": "http",
			"Forwarded":         "for=127.0.0.1;host=fwd.localhost;proto=http",
			"X-Request-Id":      id,
		}
	}
	for _, tc := range []struct {
		name       string
		trusted    bool
		connection string            // the request's Connection header
		want       map[string]string // "" X-Request-Id: any generated one
	}{
		{"untrusted", false, "", ours("")},
		{"untrusted, Connection names X-Forwarded-For", false, "X-Forwarded-For", ours("")},
		{"untrusted, Connection names them all", false, "X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto, Forwarded, X-Request-Id", ours("")},
		{"trusted", true, "", map[string]string{
			"X-Forwarded-For":   "203.0.113.9, 127.0.0.1",
			"X-Forwarded-Host":  "public.example",
			"X-Forwarded-Proto": "https",
			"Forwarded":         "for=203.0.113.9;proto=https, for=127.0.0.1;host=fwd.localhost;proto=http",
			"X-Real-Ip":         "203.0.113.9",
			"X-Request-Id":      "lb-1234",
		}},
		// A trusted proxy that marks them hop-by-hop did not mean them
		// for the env.
		{"trusted, Connection names X-Forwarded-For and X-Request-Id", true, "X-Forwarded-For, X-Request-Id", map[string]string{
			"X-Forwarded-For":   "127.0.0.1",
			"X-Forwarded-Host":  "public.example",
			"X-Forwarded-Proto": "https",
			"Forwarded":         "for=203.0.113.9;proto=https, for=127.0.0.1;host=fwd.localhost;proto=http",
			"X-Real-Ip":         "203.0.113.9",
			"X-Request-Id":      "",
		}},
	} {
		// A GET takes the direct path, a POST with a body
		// httputil.ReverseProxy: both must tell the env the same.
		for _, method := range []string{"GET", "POST"} {
			t.Run(tc.name+"/"+method, func(t *testing.T) {
				addr := g.Addr
				if tc.trusted {
					addr = trustedAddr
				}
				var body io.Reader
				if method == "POST" {
					body = strings.NewReader("payload")
				}
				req, _ := http.NewRequest(method, "http://fwd.localhost/echo", body)
				want := maps.Clone(tc.want)
				for k, v := range spoofed {
					req.Header.Set(k, v)
				}
				if tc.connection != "" {
					req.Header.Set("Connection", tc.connection)
				}
				resp := doVia(t, addr, req)
				echo := decodeEcho(t, resp)
				got := map[string]string{}
				for _, k := range forwardingHeaders {
					if v, ok := echo.Headers[k]; ok {
						if len(v) != 1 {
							t.Errorf("env got %s %q, want one value", k, v)
						}
						got[k] = v[0]
					}
				}
				id := resp.Header.Get(gateway.RequestIDHeader)
				if want["X-Request-Id"] == "" {
					if id == "" || id == spoofed["X-Request-Id"] {
						t.Errorf("request ID %q: want a generated one", id)
					}
					want["X-Request-Id"] = id
				}
				if !maps.Equal(got, want) {
					t.Errorf("env saw\n %v\nwant\n %v", got, want)
				}
				if id != got["X-Request-Id"] {
					t.Errorf("client got request ID %q, env %q", id, got["X-Request-Id"])
				}
				if wantBytes := int64(map[string]int{"GET": 0, "POST": 7}[method]); echo.BodyBytes != wantBytes || echo.Method != method {
					t.Errorf("env got %s with %d body bytes, want %s with %d", echo.Method, echo.BodyBytes, method, wantBytes)
				}
			})
		}
	}
	// The request log line carries the ID (it is written once the
	// response is, so give it a moment).
	want := `"request_id":"lb-1234"`
	if !wait.Until(10*time.Second, func() bool { return strings.Contains(logs.String(), want) }) {
		t.Fatalf("request log lacks %s:\n%s", want, logs.String())
	}
}

// lockedBuffer is a log sink safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serveHandler serves h on a loopback port until the test ends.
func serveHandler(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return ln.Addr().String()
}

// doVia sends req to addr, whatever its URL's host, and closes the
// response body when the test ends.
func doVia(t *testing.T, addr string, req *http.Request) *http.Response {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: tr, Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}
