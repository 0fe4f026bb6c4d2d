package demo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// wsReadLimit caps one WebSocket message. The echo buffers each message
// whole (see serveWebSocket), so the cap bounds memory per connection; it
// sits well above the 1 MiB that tests and demos send.
const wsReadLimit = 16 << 20

// serveWebSocket echoes every message back with its type, for as long as
// the client stays: there is no idle timeout, a silent connection lives on.
func (s *server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if !s.beginStream() {
		http.Error(w, "demo: shutting down", http.StatusServiceUnavailable)
		return
	}
	defer s.endStream()

	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// The page may be served under any env hostname and dev tools
		// connect from anywhere; an echo server has nothing to protect
		// from cross-origin use.
		InsecureSkipVerify: true,
	})
	if err != nil {
		return // Accept has already answered the client
	}
	defer c.CloseNow()
	c.SetReadLimit(wsReadLimit)

	closed := make(chan struct{})
	stop := context.AfterFunc(s.streamsCtx, func() {
		defer close(closed)
		c.Close(websocket.StatusGoingAway, "server shutting down")
	})
	defer func() {
		if !stop() {
			<-closed
		}
	}()

	// The request context is not cancelled when a hijacked connection
	// drops; a failed Read is what ends this loop.
	ctx := r.Context()
	for {
		// Read the whole message before echoing: streaming it back while
		// the client is still sending would deadlock a client that writes
		// a large message before it reads, once both socket buffers fill.
		typ, msg, err := c.Read(ctx)
		if err != nil {
			status := websocket.CloseStatus(err)
			if status == -1 && !errors.Is(err, context.Canceled) {
				s.log.Debug().Err(err).Msg("websocket read")
			}
			return
		}
		if err := c.Write(ctx, typ, msg); err != nil {
			s.log.Debug().Err(err).Msg("websocket write")
			return
		}
	}
}

// Event is the JSON in each /events message's data field.
type Event struct {
	Env string `json:"env"`
	Seq int64  `json:"seq"`
	// SentUnixNano is the server's clock when it wrote the event, so a
	// client on the same machine can measure delivery latency.
	SentUnixNano int64 `json:"sent_unix_nano"`
}

// serveEvents streams server-sent events: the first at once, then one per
// ?interval= (default 1s), each flushed as soon as written, until ?count=
// events were sent (default: no limit) or the client goes.
func (s *server) serveEvents(w http.ResponseWriter, r *http.Request) {
	interval, err := durationParam(r, "interval", defaultInterval, maxInterval)
	if err != nil {
		badParam(w, err)
		return
	}
	count, err := intParam(r, "count", 0, 1, math.MaxInt64)
	if err != nil {
		badParam(w, err)
		return
	}

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	// Tells nginx-style proxies in front of us not to buffer the stream.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}

	name := s.envName(r)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for seq := int64(1); ; seq++ {
		data, err := json.Marshal(Event{Env: name, Seq: seq, SentUnixNano: time.Now().UnixNano()})
		if err != nil {
			return
		}
		if _, err := fmt.Fprintf(w, "id: %d\ndata: %s\n\n", seq, data); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		if count > 0 && seq >= count {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-s.streamsCtx.Done():
			return
		case <-ticker.C:
		}
	}
}

// serveSlow answers 200 after ?ms= milliseconds (default 1000), or gives up
// as soon as the client goes.
func serveSlow(w http.ResponseWriter, r *http.Request) {
	d, err := millisParam(r, "ms", defaultSlow, maxSlow)
	if err != nil {
		badParam(w, err)
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.Context().Done():
		return
	case <-t.C:
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "slept %dms\n", d.Milliseconds())
}

// downloadBlock holds the /download pattern: byte i of a download is
// byte(i % 256). Its length is a multiple of 256, so writing it again and
// again continues the pattern. It is made at the first download, not at
// start (see pageTemplate).
var downloadBlock = sync.OnceValue(func() []byte {
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = byte(i)
	}
	return b
})

// serveDownload streams ?bytes= bytes (default 1 MiB) of the pattern in
// downloadBlock, with a Content-Length, without holding them in memory.
func serveDownload(w http.ResponseWriter, r *http.Request) {
	n, err := intParam(r, "bytes", defaultDownload, 0, maxDownload)
	if err != nil {
		badParam(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	block := downloadBlock()
	for n > 0 {
		chunk := block[:min(n, int64(len(block)))]
		if _, err := w.Write(chunk); err != nil {
			return
		}
		n -= int64(len(chunk))
	}
}

// UploadResponse is what /upload answers.
type UploadResponse struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// serveUpload hashes the body as it streams in, so uploads of any size take
// constant memory.
func serveUpload(w http.ResponseWriter, r *http.Request) {
	sum := sha256.New()
	n, err := io.Copy(sum, r.Body)
	if err != nil {
		http.Error(w, fmt.Sprintf("demo: read upload after %d bytes: %v", n, err), http.StatusBadRequest)
		return
	}
	writeJSON(w, http.StatusOK, UploadResponse{Bytes: n, SHA256: hex.EncodeToString(sum.Sum(nil))})
}
