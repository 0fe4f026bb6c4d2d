package gateway_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/loadtest/demo"
)

// rawAnswer is a final response to bytes sent on a connection of their
// own: its status, its errorPage kind (the gateway's JSON "error") and
// body, and whether the gateway closed the connection after it.
type rawAnswer struct {
	Status int
	Kind   string
	Body   []byte
	Closed bool // Connection: close, and EOF after the response
}

// rawExchange writes req as it is on a new connection to addr and reads
// the first final (non-1xx) response.
func rawExchange(t *testing.T, addr, req string) rawAnswer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		if resp.StatusCode < 200 {
			continue
		}
		a := rawAnswer{Status: resp.StatusCode}
		a.Body, err = io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%q: body: %v", req, err)
		}
		var page struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(a.Body, &page) == nil {
			a.Kind = page.Error
		}
		if resp.Close {
			_, err := br.ReadByte()
			a.Closed = err == io.EOF
		}
		return a
	}
}

// TestBadPortAndBadChunkStartNothing: a Host whose port is no TCP port
// and a chunked body whose first chunk-size line is malformed get 400
// from the gateway itself, over HTTP/1.1 (a bodyless GET, which the
// direct path would take, and a POST, which ReverseProxy would) and over
// h2c, and none of them starts an env.
func TestBadPortAndBadChunkStartNothing(t *testing.T) {
	g := oddGateway(t)
	for _, c := range []struct {
		name, req, kind string
	}{
		{"GET port 99999", "GET / HTTP/1.1\r\nHost: a.localhost:99999\r\n\r\n", "bad_host"},
		{"GET port 0", "GET / HTTP/1.1\r\nHost: a.localhost:0\r\n\r\n", "bad_host"},
		{"GET named port, port 65536", "GET / HTTP/1.1\r\nHost: odd--a.localhost:65536\r\n\r\n", "bad_host"},
		{"POST port 99999", "POST /upload HTTP/1.1\r\nHost: a.localhost:99999\r\nContent-Length: 5\r\n\r\nhello", "bad_host"},
		{"POST chunked port 99999", "POST /upload HTTP/1.1\r\nHost: a.localhost:99999\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "bad_host"},
		{"bad first chunk", "POST /upload HTTP/1.1\r\nHost: a.localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad_request_body"},
		{"bad first chunk, named port", "POST / HTTP/1.1\r\nHost: odd--a.localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad_request_body"},
	} {
		a := rawExchange(t, g.Addr, c.req)
		if a.Status != http.StatusBadRequest || a.Kind != c.kind {
			t.Errorf("%s: %d %q (%s), want 400 %q", c.name, a.Status, a.Kind, a.Body, c.kind)
		}
		if c.kind == "bad_request_body" && !a.Closed {
			t.Errorf("%s: connection kept open after a malformed body", c.name)
		}
	}

	h2 := h2cClient(t, g.Addr)
	for _, c := range []struct {
		method, host string
		body         io.Reader
	}{
		{"GET", "a.localhost:99999", nil},
		{"GET", "odd--a.localhost:123456", nil},
		{"POST", "a.localhost:65536", strings.NewReader("hello")},
	} {
		req, err := http.NewRequest(c.method, "http://placeholder/upload", c.body)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = c.host
		resp, err := h2.Do(req)
		if err != nil {
			t.Fatalf("h2 %s %s: %v", c.method, c.host, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"bad_host"`) {
			t.Errorf("h2 %s :authority %s: %s %d %s, want HTTP/2 400 bad_host", c.method, c.host, resp.Proto, resp.StatusCode, body)
		}
	}

	if n := g.Fake.acquires.Load(); n != 0 {
		t.Fatalf("bad inputs acquired envs %d times", n)
	}
}

// TestBadBodyOfRunningEnv: a client body that turns out malformed while
// ReverseProxy sends it on to a running env, where the gateway could not
// look ahead (a later chunk, or a first chunk behind Expect:
// 100-continue, which is the env's to answer), is still the client's 400,
// not the env's 502; a failure of the env with a good body is still a
// 502. Chunked bodies that are fine arrive whole, the byte the gateway
// read ahead included. An empty port (RFC 3986: the default) is served.
func TestBadBodyOfRunningEnv(t *testing.T) {
	g := oddGateway(t)
	if a := rawExchange(t, g.Addr, "GET /healthz HTTP/1.1\r\nHost: b.localhost:\r\n\r\n"); a.Status != 200 {
		t.Fatalf("warm-up with an empty port: %d %s", a.Status, a.Body)
	}

	for _, c := range []struct{ name, req string }{
		{"bad second chunk", "POST /upload HTTP/1.1\r\nHost: b.localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"},
		{"bad first chunk after Expect", "POST /upload HTTP/1.1\r\nHost: b.localhost\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\nzz\r\n"},
		{"bad first chunk's end", "POST /upload HTTP/1.1\r\nHost: b.localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX"},
		{"bad trailer", "POST /upload HTTP/1.1\r\nHost: b.localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nbad trailer\r\n\r\n"},
	} {
		a := rawExchange(t, g.Addr, c.req)
		if a.Status != http.StatusBadRequest || a.Kind != "bad_request_body" || !a.Closed {
			t.Errorf("%s: %d %q closed=%v (%s), want 400 bad_request_body and the connection closed", c.name, a.Status, a.Kind, a.Closed, a.Body)
		}
	}

	for body, want := range map[string]int64{
		"0\r\n\r\n":                           0,
		"1\r\nx\r\n0\r\n\r\n":                 1,
		"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n": 8,
	} {
		a := rawExchange(t, g.Addr, "POST /upload HTTP/1.1\r\nHost: b.localhost\r\nTransfer-Encoding: chunked\r\n\r\n"+body)
		var up demo.UploadResponse
		if a.Status != 200 || json.Unmarshal(a.Body, &up) != nil || up.Bytes != want {
			t.Errorf("chunked %q: %d %s, want 200 and %d bytes", body, a.Status, a.Body, want)
		}
	}

	// The env answers a request that asked for no upgrade with a 101:
	// its fault, whatever the body.
	a := rawExchange(t, g.Addr, "POST /switch HTTP/1.1\r\nHost: odd--b.localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	if a.Status != http.StatusBadGateway || a.Kind != "upstream_error" {
		t.Errorf("env's unasked 101 to a POST: %d %q (%s), want 502 upstream_error", a.Status, a.Kind, a.Body)
	}

	if got := g.Fake.acquired(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("envs acquired: %q, want [b]", got)
	}
}
