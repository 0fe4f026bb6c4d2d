package demo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func dialWS(t *testing.T, ctx context.Context, url string) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/ws", nil)
	if err != nil {
		t.Fatalf("dial /ws: %v", err)
	}
	if got := resp.Header.Get("X-Envgate-Env"); got == "" {
		t.Errorf("upgrade response lacks X-Envgate-Env")
	}
	t.Cleanup(func() { c.CloseNow() })
	c.SetReadLimit(4 << 20)
	return c
}

func TestWebSocketEcho(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, Options{Name: "feature-x"})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	c := dialWS(t, ctx, ts.URL)

	big := make([]byte, 1<<20)
	rand.Read(big)
	tests := []struct {
		name string
		typ  websocket.MessageType
		msg  []byte
	}{
		{"text", websocket.MessageText, []byte("hello, feature-x")},
		{"binary", websocket.MessageBinary, []byte{0, 1, 2, 0xff}},
		{"empty text", websocket.MessageText, []byte{}},
		{"1MiB binary", websocket.MessageBinary, big},
		{"1MiB text", websocket.MessageText, bytes.Repeat([]byte("a"), 1<<20)},
		{"text after big", websocket.MessageText, []byte("still here")},
	}
	// One connection for all: the echo must keep going message after
	// message, whatever their types and sizes.
	for _, tt := range tests {
		if err := c.Write(ctx, tt.typ, tt.msg); err != nil {
			t.Fatalf("%s: write: %v", tt.name, err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("%s: read: %v", tt.name, err)
		}
		if typ != tt.typ || !bytes.Equal(got, tt.msg) {
			t.Errorf("%s: echoed %v of %d bytes, want %v of %d bytes", tt.name, typ, len(got), tt.typ, len(tt.msg))
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("close: %v", err)
	}
}

// TestWebSocketHandlerEndsWhenClientGoes checks the echo goroutine does not
// outlive its client.
func TestWebSocketHandlerEndsWhenClientGoes(t *testing.T) {
	t.Parallel()
	h, err := Handler(Options{})
	if err != nil {
		t.Fatal(err)
	}
	probe := newHandlerProbe(h)
	ts := serveHandler(t, probe)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	c := dialWS(t, ctx, ts.URL)
	waitFor(t, probe.entered, "the /ws handler to start")
	c.CloseNow()
	waitFor(t, probe.left, "the /ws handler to return after the client dropped")
}

func TestEventsDeliversCount(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, Options{Name: "feature-x"})
	resp, err := http.Get(ts.URL + "/events?count=3&interval=1ms")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q, want text/event-stream", ct)
	}
	br := bufio.NewReader(resp.Body)
	var lastSent int64
	for want := int64(1); want <= 3; want++ {
		ev, err := readEvent(br)
		if err != nil {
			t.Fatalf("event %d: %v", want, err)
		}
		if ev.id != strconv.FormatInt(want, 10) {
			t.Errorf("event %d: id %q", want, ev.id)
		}
		var got Event
		if err := json.Unmarshal([]byte(ev.data), &got); err != nil {
			t.Fatalf("event %d: data %q: %v", want, ev.data, err)
		}
		if got.Env != "feature-x" || got.Seq != want || got.SentUnixNano < lastSent || got.SentUnixNano <= 0 {
			t.Errorf("event %d: %+v (previous sent at %d)", want, got, lastSent)
		}
		lastSent = got.SentUnixNano
	}
	if ev, err := readEvent(br); !errors.Is(err, io.EOF) {
		t.Errorf("after count events: got %+v, %v; want the stream to end", ev, err)
	}
}

// TestEventsFlushesEachEvent reads the first event of a stream whose second
// event is an hour away: it can only arrive if the server flushed it.
func TestEventsFlushesEachEvent(t *testing.T) {
	t.Parallel()
	h, err := Handler(Options{Name: "feature-x"})
	if err != nil {
		t.Fatal(err)
	}
	probe := newHandlerProbe(h)
	ts := serveHandler(t, probe)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/events?count=2&interval=1h", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ev, err := readEvent(bufio.NewReader(resp.Body))
	if err != nil || ev.id != "1" {
		t.Fatalf("first event = %+v, %v; want id 1 before the stream ends", ev, err)
	}
	waitFor(t, probe.entered, "the /events handler")
	cancel()
	waitFor(t, probe.left, "the /events handler to return after the client went")
}

func TestSlowWaits(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, Options{})
	start := time.Now()
	resp, body := get(t, ts.URL+"/slow?ms=50", nil)
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Errorf("/slow?ms=50 answered after %s", took)
	}
	if resp.StatusCode != http.StatusOK || string(body) != "slept 50ms\n" {
		t.Errorf("/slow?ms=50 = %d %q", resp.StatusCode, body)
	}
}

func TestSlowAbortsWhenClientGoes(t *testing.T) {
	t.Parallel()
	h, err := Handler(Options{})
	if err != nil {
		t.Fatal(err)
	}
	probe := newHandlerProbe(h)
	ts := serveHandler(t, probe)
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/slow?ms=3600000", nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	waitFor(t, probe.entered, "the /slow handler")
	cancel()
	waitFor(t, probe.left, "the /slow handler to give up on a departed client")
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("client: %v, want context.Canceled", err)
	}
}

func TestDownload(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, Options{})
	for _, n := range []int{0, 1, 255, 256, 100_000, 3 << 20} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			resp, body := get(t, fmt.Sprintf("%s/download?bytes=%d", ts.URL, n), nil)
			if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(n) || len(body) != n {
				t.Fatalf("status %d, Content-Length %d, %d bytes; want %d", resp.StatusCode, resp.ContentLength, len(body), n)
			}
			for i, b := range body {
				if b != byte(i) {
					t.Fatalf("byte %d = %d, want %d", i, b, byte(i))
				}
			}
		})
	}
}

func TestUploadHashes(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, Options{})
	body := make([]byte, 5<<20)
	rand.Read(body)
	sum := sha256.Sum256(body)
	want := UploadResponse{Bytes: int64(len(body)), SHA256: hex.EncodeToString(sum[:])}
	for _, method := range []string{http.MethodPost, http.MethodPut} {
		// A reader without a known size makes the client stream chunked.
		req, err := http.NewRequest(method, ts.URL+"/upload", io.MultiReader(bytes.NewReader(body)))
		if err != nil {
			t.Fatal(err)
		}
		resp, out := do(t, req)
		var got UploadResponse
		if err := json.Unmarshal(out, &got); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s /upload: %d %s (%v)", method, resp.StatusCode, out, err)
		}
		if got != want {
			t.Errorf("%s /upload = %+v, want %+v", method, got, want)
		}
	}
}
