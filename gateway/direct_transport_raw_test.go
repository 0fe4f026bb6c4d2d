package gateway

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Tests of directTransport against hand-written servers, for responses
// and failures net/http's server does not produce.

// rawServer serves each connection with fn on loopback and counts
// accepted connections.
type rawServer struct {
	addr     string
	accepted atomic.Int64
}

func newRawServer(t *testing.T, fn func(c net.Conn, br *bufio.Reader)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				fn(c, bufio.NewReader(c))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("raw test server: a connection handler still running 30s after its connection closed")
		}
	})
	return s
}

// readHead reads one request head; false at EOF or on garbage.
func readHead(br *bufio.Reader) bool {
	req, err := http.ReadRequest(br)
	return err == nil && req.Body.Close() == nil
}

func TestDirectTransportRawResponses(t *testing.T) {
	tests := []struct {
		name     string
		response string // sent for every request
		body     string
		wantConn int64 // connections for 3 requests
	}{
		{"HTTP/1.0 without keep-alive", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "ok", 3},
		{"HTTP/1.0 with keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", "ok", 1},
		{"length unknown", "HTTP/1.1 200 OK\r\n\r\nuntil close", "until close", 3},
		{"bytes beyond the body", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", "ok", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
				for readHead(br) {
					io.WriteString(c, tt.response)
					if tt.name == "length unknown" {
						return
					}
				}
			})
			ft := newTestDirect(t)
			for range 3 {
				if _, body := fastDo(t, ft, context.Background(), "GET", "http://"+s.addr+"/"); body != tt.body {
					t.Fatalf("body %q, want %q", body, tt.body)
				}
			}
			if got := s.accepted.Load(); got != tt.wantConn {
				t.Fatalf("server accepted %d connections, want %d", got, tt.wantConn)
			}
		})
	}
}

// TestDirectTransportStaleConn: a server that closes a kept-alive
// connection after one response. A GET on it is sent again on a new
// connection; a bodyless POST is not (it may have been acted on), unless
// the close was noticed before the request was written.
func TestDirectTransportStaleConn(t *testing.T) {
	tests := []struct {
		method     string
		checkAfter time.Duration
		wantErr    bool
	}{
		{"GET", time.Hour, false},
		{"HEAD", time.Hour, false},
		{"POST", time.Hour, true},
		{"DELETE", time.Hour, true},
		{"POST", 0, false}, // checked before reuse: never sent on it
	}
	for _, tt := range tests {
		t.Run(tt.method+"/check-after-"+tt.checkAfter.String(), func(t *testing.T) {
			closed := make(chan struct{}, 10)
			s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
				if readHead(br) {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
				c.Close()
				closed <- struct{}{}
			})
			ft := newTestDirect(t)
			ft.checkAfter = tt.checkAfter
			fastDo(t, ft, context.Background(), tt.method, "http://"+s.addr+"/")
			<-closed
			res, err := ft.RoundTrip(mustRequest(t, context.Background(), tt.method, "http://"+s.addr+"/"))
			if tt.wantErr {
				if err == nil {
					res.Body.Close()
					t.Fatal("a non-idempotent request was sent again")
				}
				if s.accepted.Load() != 1 {
					t.Fatalf("server accepted %d connections, want 1", s.accepted.Load())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != 200 || s.accepted.Load() != 2 {
				t.Fatalf("status %d after %d connections, want 200 after 2", res.StatusCode, s.accepted.Load())
			}
		})
	}
}

// TestDirectTransportFailures: a new connection that fails is not retried,
// and the error reads as http.Transport's for the same failure (the
// gateway's error page shows it).
func TestDirectTransportFailures(t *testing.T) {
	tests := []struct {
		name  string
		serve func(c net.Conn, br *bufio.Reader)
	}{
		{"hang up before answering", func(c net.Conn, br *bufio.Reader) { readHead(br) }},
		{"garbage", func(c net.Conn, br *bufio.Reader) {
			if readHead(br) {
				io.WriteString(c, "SMTP ready\r\n\r\n")
			}
		}},
		{"hang up mid-head", func(c net.Conn, br *bufio.Reader) {
			if readHead(br) {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newRawServer(t, tt.serve)
			_, err := newTestDirect(t).RoundTrip(mustRequest(t, context.Background(), "GET", "http://"+s.addr+"/"))
			if err == nil || s.accepted.Load() != 1 {
				t.Fatalf("err %v after %d connections; want an error after 1 (no retry on a new connection)", err, s.accepted.Load())
			}
			std := &http.Transport{}
			t.Cleanup(std.CloseIdleConnections)
			_, stdErr := std.RoundTrip(mustRequest(t, context.Background(), "GET", "http://"+s.addr+"/"))
			if stdErr == nil || err.Error() != stdErr.Error() {
				t.Fatalf("error %q, http.Transport's %q", err, stdErr)
			}
		})
	}
}

func TestDirectTransportSwitchingProtocols(t *testing.T) {
	s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		if readHead(br) {
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\n\r\nhi")
			io.Copy(c, br) // echo
		}
	})
	ft := newTestDirect(t)
	res, err := ft.RoundTrip(mustRequest(t, context.Background(), "GET", "http://"+s.addr+"/"))
	if err != nil {
		t.Fatal(err)
	}
	rw, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		t.Fatalf("101 body is a %T, not writable", res.Body)
	}
	defer rw.Close()
	io.WriteString(rw, "echo")
	b := make([]byte, 6)
	if _, err := io.ReadFull(rw, b); err != nil || string(b) != "hiecho" {
		t.Fatalf("read %q, %v", b, err)
	}
}

func TestDirectTransportDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = newTestDirect(t).RoundTrip(mustRequest(t, context.Background(), "GET", "http://"+addr+"/"))
	_, stdErr := (&http.Transport{}).RoundTrip(mustRequest(t, context.Background(), "GET", "http://"+addr+"/"))
	if err == nil || stdErr == nil || err.Error() != stdErr.Error() {
		t.Fatalf("error %v, http.Transport's %v", err, stdErr)
	}
}
