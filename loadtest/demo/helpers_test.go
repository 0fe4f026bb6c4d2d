package demo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitLimit bounds waits for things that should happen at once; it is
// generous because a loaded 2-core CI box can stall for seconds, and it
// only turns a hang into a clear failure.
const waitLimit = 30 * time.Second

// newTestServer serves Handler(opts) on a loopback httptest server.
func newTestServer(t *testing.T, opts Options) *httptest.Server {
	t.Helper()
	h, err := Handler(opts)
	if err != nil {
		t.Fatalf("Handler: %v", err)
	}
	return serveHandler(t, h)
}

func serveHandler(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts
}

// do sends req and returns the response with its body read.
func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return resp, body
}

func get(t *testing.T, url string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return do(t, req)
}

// handlerProbe wraps a handler and reports when requests enter and leave
// it, so tests can wait for server-side events instead of sleeping.
type handlerProbe struct {
	h       http.Handler
	entered chan string
	left    chan string
}

func newHandlerProbe(h http.Handler) *handlerProbe {
	return &handlerProbe{h: h, entered: make(chan string, 16), left: make(chan string, 16)}
}

func (p *handlerProbe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.entered <- r.URL.Path
	defer func() { p.left <- r.URL.Path }()
	p.h.ServeHTTP(w, r)
}

func waitFor(t *testing.T, ch <-chan string, what string) string {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out after %s waiting for %s", waitLimit, what)
		return ""
	}
}

var listeningLine = regexp.MustCompile(`demo-server: env=(\S+) listening on (\S+)`)

// logWatcher is an Options.Log that remembers everything written and
// reports the address of the first listening line.
type logWatcher struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	addr chan string
	sent bool
}

func newLogWatcher() *logWatcher { return &logWatcher{addr: make(chan string, 1)} }

func (w *logWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if m := listeningLine.FindSubmatch(p); m != nil && !w.sent {
		w.sent = true
		w.addr <- string(m[2])
	}
	return len(p), nil
}

func (w *logWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// runHandle is a Run started by startRun.
type runHandle struct {
	addr   string
	logs   *logWatcher
	cancel context.CancelFunc
	done   chan struct{}
	err    error // Run's result, set before done is closed
}

// wait waits for Run to return and gives its result.
func (h *runHandle) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-h.done:
		return h.err
	case <-time.After(waitLimit):
		t.Fatalf("Run did not return within %s", waitLimit)
		return nil
	}
}

// startRun runs Run(opts), on a loopback port unless opts.Listen says
// otherwise, and waits for its listening line. Cleanup cancels Run and
// waits for it.
func startRun(t *testing.T, opts Options) *runHandle {
	t.Helper()
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	h := &runHandle{logs: newLogWatcher(), done: make(chan struct{})}
	opts.Log = h.logs
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		defer close(h.done)
		h.err = Run(ctx, opts)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(waitLimit):
			t.Errorf("Run did not return within %s of cancel", waitLimit)
		}
	})
	select {
	case h.addr = <-h.logs.addr:
	case <-h.done:
		t.Fatalf("Run returned before listening: %v\nlog:\n%s", h.err, h.logs)
	case <-time.After(waitLimit):
		t.Fatalf("no listening line within %s; log:\n%s", waitLimit, h.logs)
	}
	return h
}

// sseEvent is one parsed server-sent event.
type sseEvent struct {
	id, data string
}

// readEvent reads the next event from an SSE stream.
func readEvent(r *bufio.Reader) (sseEvent, error) {
	var ev sseEvent
	seen := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && seen {
				return ev, io.ErrUnexpectedEOF
			}
			return ev, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if seen {
				return ev, nil
			}
			continue
		}
		seen = true
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			ev.id = value
		case "data":
			ev.data += value
		}
	}
}
