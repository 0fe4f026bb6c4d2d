package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// newTestDirect is a directTransport as NewHandler makes it, dialing plainly.
func newTestDirect(t *testing.T) *directTransport {
	t.Helper()
	ft := newDirectTransport(&http.Transport{
		DialContext:         (&net.Dialer{}).DialContext,
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		ReadBufferSize:      32 << 10,
		WriteBufferSize:     32 << 10,
	})
	t.Cleanup(ft.CloseIdleConnections)
	return ft
}

// RoundTrip sends req, a request without a body to an http URL with a
// port, as Request.Write writes it, so that the tests can hold the
// transport's connection handling against http.Transport's. (The direct
// path writes its own head: see FuzzDirectHead.)
func (t *directTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var got1xx func(int, textproto.MIMEHeader) error
	if trace := httptrace.ContextClientTrace(req.Context()); trace != nil {
		got1xx = trace.Got1xxResponse
	}
	addr, err := netip.ParseAddrPort(req.URL.Host)
	if err != nil {
		return nil, err
	}
	return t.exchange(req.Context(), nil, addr, req, req.Close, func(w *bufio.Writer) error { return req.Write(w) }, got1xx)
}

// connServer is an httptest server that counts the connections it
// accepted and closed.
type connServer struct {
	*httptest.Server
	opened, closed atomic.Int64
	closedc        chan struct{} // gets a value per closed connection
}

func newConnServer(t *testing.T, h http.HandlerFunc) *connServer {
	t.Helper()
	s := &connServer{closedc: make(chan struct{}, 1000)}
	s.Server = httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			s.closed.Add(1)
			s.closedc <- struct{}{}
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// waitClosed waits for the server to see one more of its connections closed.
func (s *connServer) waitClosed(t *testing.T) {
	t.Helper()
	select {
	case <-s.closedc:
	case <-time.After(30 * time.Second):
		t.Fatalf("no more connections closed within 30s (%d opened, %d closed)", s.opened.Load(), s.closed.Load())
	}
}

// fastDo sends a request without a body through ft and reads the whole body.
func fastDo(t *testing.T, ft *directTransport, ctx context.Context, method, rawURL string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ft.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, rawURL, err)
	}
	if n, err := res.Body.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("%s %s: Read after the end = %d, %v; want 0, EOF", method, rawURL, n, err)
	}
	res.Body.Close()
	return res, string(b)
}

func TestDirectTransportResponses(t *testing.T) {
	big := strings.Repeat("x", 100<<10)
	tests := []struct {
		name     string
		method   string
		handler  http.HandlerFunc
		status   int
		body     string
		trailer  string // want Trailer "T"
		wantConn int64  // connections the server saw for 3 requests
	}{
		{"content-length", "GET", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }, 200, "ok", "", 1},
		{"large", "GET", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) }, 200, big, "", 1},
		{"chunked", "GET", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "a")
			w.(http.Flusher).Flush()
			io.WriteString(w, "b")
		}, 200, "ab", "", 1},
		{"trailers", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "T")
			io.WriteString(w, "body")
			w.Header().Set("T", "v")
		}, 200, "body", "v", 1},
		{"connection close", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		}, 200, "bye", "", 3},
		{"head", "HEAD", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
		}, 200, "", "", 1},
		{"204", "GET", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }, 204, "", "", 1},
		{"304", "GET", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(304) }, 304, "", "", 1},
		{"delete", "DELETE", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Method) }, 200, "DELETE", "", 1},
		{"empty 200", "GET", func(w http.ResponseWriter, r *http.Request) {}, 200, "", "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newConnServer(t, tt.handler)
			ft := newTestDirect(t)
			for range 3 {
				res, body := fastDo(t, ft, context.Background(), tt.method, s.URL+"/x")
				if res.StatusCode != tt.status || body != tt.body {
					t.Fatalf("got %d %.20q, want %d %.20q", res.StatusCode, body, tt.status, tt.body)
				}
				if got := res.Trailer.Get("T"); got != tt.trailer {
					t.Fatalf("trailer T = %q, want %q", got, tt.trailer)
				}
			}
			if got := s.opened.Load(); got != tt.wantConn {
				t.Fatalf("server saw %d connections, want %d", got, tt.wantConn)
			}
		})
	}
}

func TestDirectTransportEarlyClose(t *testing.T) {
	s := newConnServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			io.WriteString(w, strings.Repeat("x", 1<<20))
			return
		}
		io.WriteString(w, "ok")
	})
	ft := newTestDirect(t)
	res, err := ft.RoundTrip(mustRequest(t, context.Background(), "GET", s.URL+"/big"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(res.Body, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if _, err := res.Body.Read(make([]byte, 1)); err == nil || err == io.EOF {
		t.Fatalf("Read after Close = %v, want an error", err)
	}
	s.waitClosed(t) // closed, not drained into the pool
	if _, body := fastDo(t, ft, context.Background(), "GET", s.URL+"/small"); body != "ok" {
		t.Fatalf("body %q", body)
	}
	if got := s.opened.Load(); got != 2 {
		t.Fatalf("server saw %d connections, want 2", got)
	}
}

func TestDirectTransport1xx(t *testing.T) {
	s := newConnServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "final")
	})
	ft := newTestDirect(t)
	var codes []int
	var link string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			codes = append(codes, code)
			link = h.Get("Link")
			return nil
		},
	})
	res, body := fastDo(t, ft, ctx, "GET", s.URL)
	if res.StatusCode != 200 || body != "final" || len(codes) != 1 || codes[0] != 103 || link == "" {
		t.Fatalf("got %d %q after 1xx %v (Link %q); want 200 \"final\" after [103]", res.StatusCode, body, codes, link)
	}
}

func TestDirectTransportCancel(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	waiting := make(chan struct{}, 1) // the server has the request for /head
	s := newConnServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/head" {
			waiting <- struct{}{}
		}
		if r.URL.Path == "/mid" {
			io.WriteString(w, "part")
			w.(http.Flusher).Flush()
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	ft := newTestDirect(t)
	t.Run("before headers", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		req := mustRequest(t, ctx, "GET", s.URL+"/head")
		go func() {
			res, err := ft.RoundTrip(req)
			if err == nil {
				res.Body.Close()
			}
			errc <- err
		}()
		<-waiting // the transport waits for the response head
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("RoundTrip = %v, want context.Canceled", err)
		}
		s.waitClosed(t)
	})
	t.Run("mid body", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		res, err := ft.RoundTrip(mustRequest(t, ctx, "GET", s.URL+"/mid"))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if _, err := io.ReadFull(res.Body, make([]byte, 4)); err != nil {
			t.Fatal(err)
		}
		go cancel()
		if _, err := io.ReadAll(res.Body); !errors.Is(err, context.Canceled) {
			t.Fatalf("body read = %v, want context.Canceled", err)
		}
		s.waitClosed(t)
	})
}

func TestDirectTransportConcurrent(t *testing.T) {
	var inflight, most atomic.Int64
	s := newConnServer(t, func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		io.WriteString(w, r.URL.Query().Get("i"))
	})
	ft := newTestDirect(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				want := strings.Repeat("x", g) + string(rune('a'+i%26))
				req, _ := http.NewRequest("GET", s.URL+"/?i="+want, nil)
				res, err := ft.RoundTrip(req)
				if err != nil {
					t.Error(err)
					return
				}
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || string(b) != want {
					t.Errorf("body %q, %v; want %q", b, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := s.opened.Load(); got > 8 {
		t.Fatalf("server saw %d connections for 8 concurrent clients", got)
	}
}

func TestDirectTransportIdleLimits(t *testing.T) {
	t.Run("cap per address", func(t *testing.T) {
		gate := make(chan struct{})
		arrived := make(chan struct{}, 5)
		s := newConnServer(t, func(w http.ResponseWriter, r *http.Request) {
			arrived <- struct{}{}
			<-gate
			io.WriteString(w, "ok")
		})
		ft := newTestDirect(t)
		ft.maxIdle = 2
		var wg sync.WaitGroup
		for range 5 {
			req := mustRequest(t, context.Background(), "GET", s.URL)
			wg.Go(func() {
				res, err := ft.RoundTrip(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			})
		}
		for range 5 { // all five on connections of their own
			<-arrived
		}
		close(gate)
		wg.Wait()
		for range 3 {
			s.waitClosed(t)
		}
		ft.mu.Lock()
		idle := len(ft.idle[netip.MustParseAddrPort(strings.TrimPrefix(s.URL, "http://"))])
		ft.mu.Unlock()
		if idle != 2 {
			t.Fatalf("%d idle connections kept, want 2", idle)
		}
	})
	t.Run("cap in all", func(t *testing.T) {
		var servers []*connServer
		for range 3 {
			servers = append(servers, newConnServer(t, func(w http.ResponseWriter, r *http.Request) {}))
		}
		ft := newTestDirect(t)
		ft.maxIdleAll = 2
		for _, s := range servers {
			fastDo(t, ft, context.Background(), "GET", s.URL)
		}
		servers[0].waitClosed(t) // the one idle longest made room
		ft.mu.Lock()
		n, nidle := len(ft.idle), ft.nidle
		ft.mu.Unlock()
		if n != 2 || nidle != 2 || servers[1].closed.Load()+servers[2].closed.Load() != 0 {
			t.Fatalf("%d addresses with %d idle connections; want the 2 newest kept", n, nidle)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		s := newConnServer(t, func(w http.ResponseWriter, r *http.Request) {})
		ft := newTestDirect(t)
		ft.idleTimeout = 10 * time.Millisecond
		fastDo(t, ft, context.Background(), "GET", s.URL)
		s.waitClosed(t) // by the sweep
		ft.mu.Lock()
		n, sweeping := len(ft.idle)+ft.nidle, ft.sweeping
		ft.mu.Unlock()
		if n != 0 || sweeping {
			t.Fatalf("%d addresses with idle connections, sweeping %v; want none", n, sweeping)
		}
	})
	t.Run("CloseIdleConnections", func(t *testing.T) {
		s := newConnServer(t, func(w http.ResponseWriter, r *http.Request) {})
		ft := newTestDirect(t)
		fastDo(t, ft, context.Background(), "GET", s.URL)
		ft.CloseIdleConnections()
		s.waitClosed(t)
	})
}

func mustRequest(t *testing.T, ctx context.Context, method, rawURL string) *http.Request {
	t.Helper()
	r, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestDirectTransportStrayBodyAfterBodilessResponse: a server that answers
// HEAD with a body anyway (a moment later) must not have the next request
// on that connection read those bytes as its response.
func TestDirectTransportStrayBodyAfterBodilessResponse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	// The stray bytes go out when the test says, after the HEAD's answer
	// was read, and the test goes on once they are out.
	release, written := make(chan struct{}), make(chan struct{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if req.Method == http.MethodHead {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
						<-release
						io.WriteString(c, "hello") // not allowed after a HEAD
						written <- struct{}{}
						continue
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	ft := newTestDirect(t)
	url := "http://" + ln.Addr().String() + "/"
	for range 3 {
		fastDo(t, ft, context.Background(), "HEAD", url)
		release <- struct{}{}
		<-written // on loopback, they have arrived once the write returned
		if res, body := fastDo(t, ft, context.Background(), "GET", url); res.StatusCode != 200 || body != "ok" {
			t.Fatalf("GET after HEAD: %d %q", res.StatusCode, body)
		}
	}
}
