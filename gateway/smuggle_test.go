package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/gateway"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// oddGateway is a gateway with h2c in front of fake envs, each of which
// runs oddHandler on its port "odd" (odd--<env>.localhost) and the demo
// on its default port.
func oddGateway(t *testing.T) *gw {
	t.Helper()
	return startFake(t, gwOptions{Server: gateway.EnableH2C}, func(string) *fakeEnv {
		e := &fakeEnv{}
		e.Ports = map[string]http.Handler{"odd": oddHandler(&e.conns)}
		return e
	})
}

// h2cClient is an HTTP/2 client without TLS (prior knowledge) whose every
// connection goes to addr.
func h2cClient(t *testing.T, addr string) *http.Client {
	t.Helper()
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: p, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// seenHead is what oddHandler's /head/ reports of the request it got.
type seenHead struct {
	Target string      `json:"target"`
	Host   string      `json:"host"`
	Header http.Header `json:"header"`
}

// TestHTTP2FieldsDoNotReachTheEnvRaw sends, over h2c with a raw framer,
// a bodyless GET carrying "host" and "content-length" fields, which the
// HTTP/2 server leaves in the request's header map. Written to the env's
// HTTP/1.1 connection they would give it a second Host and a body to wait
// for: the next request on that kept-alive connection would be read as
// this one's body.
func TestHTTP2FieldsDoNotReachTheEnvRaw(t *testing.T) {
	g := oddGateway(t)
	c, err := net.DialTimeout("tcp", g.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{
		{":method", "GET"}, {":scheme", "http"}, {":authority", "odd--sm.localhost"}, {":path", "/head/x"},
		{"host", "other--sm.localhost"}, {"content-length", "5"},
	} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	status, body := readH2Response(t, fr, 1)
	if status != "200" {
		t.Fatalf("status %s: %s", status, body)
	}
	var seen seenHead
	if err := json.Unmarshal(body, &seen); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if seen.Host != "odd--sm.localhost" || seen.Header["Content-Length"] != nil || seen.Header["Host"] != nil {
		t.Fatalf("env got host %q and fields %v; want the gateway's Host only and no Content-Length", seen.Host, seen.Header)
	}
	// The env's connection is still in step: plain requests work.
	for range 3 {
		if r := g.get(t, "odd--sm.localhost", "/head/after"); r.StatusCode != 200 {
			t.Fatalf("next request: status %d", r.StatusCode)
		}
	}
}

// readH2Response reads frames until stream id ends and returns its
// :status and body.
func readH2Response(t *testing.T, fr *http2.Framer, id uint32) (string, []byte) {
	t.Helper()
	var status string
	var body []byte
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == ":status" {
			status = f.Value
		}
	})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("read frame: %v (status %q, body %q)", err, status, body)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if f.StreamID == id {
				if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
					t.Fatal(err)
				}
				if f.StreamEnded() {
					return status, body
				}
			}
		case *http2.DataFrame:
			if f.StreamID == id {
				body = append(body, f.Data()...)
				if f.StreamEnded() {
					return status, body
				}
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				t.Fatalf("stream reset: %v", f.ErrCode)
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY: %v", f.ErrCode)
		}
	}
}

// TestOddTargetsSameOnBothPaths sends request targets that
// httputil.ReverseProxy would re-escape or re-encode, as a GET (which the
// direct path must then leave to ReverseProxy) and as a POST (always
// ReverseProxy): the env must see the same target both ways.
func TestOddTargetsSameOnBothPaths(t *testing.T) {
	g := oddGateway(t)
	for _, target := range []string{
		"/head/plain?a=1&b=%20c",
		"/head/semi?a=1;b=2",
		"/head/badescape?a=%zz",
		"/head/quote'and(parens)",
		`/head/needs"escape`,
		"/head/brackets[1]",
		"/head/caf\xc3\xa9",
	} {
		get := rawHead(t, g.Addr, "GET", target)
		post := rawHead(t, g.Addr, "POST", target)
		if get != post {
			t.Errorf("target %q: GET reached the env as %q, POST as %q", target, get, post)
		}
	}
}

// rawHead sends method target to odd--sm.localhost on a connection of its
// own, written byte for byte, and returns the target the env saw.
func rawHead(t *testing.T, addr, method, target string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	body := ""
	if method == "POST" {
		body = "payload"
	}
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: odd--sm.localhost\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", method, target, len(body), body)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %q: %v", method, target, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		return fmt.Sprintf("status %d", res.StatusCode)
	}
	var seen seenHead
	if err := json.Unmarshal(b, &seen); err != nil {
		t.Fatalf("%s %q: %v: %s", method, target, err, b)
	}
	return strings.TrimSpace(seen.Target)
}

// TestClientCloseKeepsEnvConnection: a client's "Connection: close" ends
// its own connection to the gateway, not the gateway's kept-alive one to
// the env; else clients without keep-alive would cost a new connection
// to the env (and a TIME_WAIT on the gateway's side) per request.
func TestClientCloseKeepsEnvConnection(t *testing.T) {
	g := oddGateway(t)
	conns := func() string {
		c, err := net.DialTimeout("tcp", g.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /conns HTTP/1.1\r\nHost: odd--sm.localhost\r\nConnection: close\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return string(b)
	}
	first := conns()
	for range 10 {
		conns()
	}
	if last := conns(); last != first {
		t.Fatalf("the env accepted %s connections for 12 requests (first answer %s); want one, kept alive", last, first)
	}
}
