package gateway

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// goAwayTimeout bounds how long a WebSocket gets, once the shutdown grace
// is over, to finish the frame in flight and take the close frame before
// its connection is cut anyway.
const goAwayTimeout = time.Second

// goAwayReason is sent with close code 1001.
const goAwayReason = "gateway shutting down"

var errGoneAway = errors.New("gateway: connection closed for shutdown")

// trackUpgrade registers an upgrade request with h.conns before it is
// proxied, so Shutdown can end the connection it turns into. Ordinary
// requests pass through untouched. ok is false, and a 503 has been
// written, when shutdown has already begun. The caller must call done
// when the request's handling is over.
func (h *Handler) trackUpgrade(w http.ResponseWriter, r *http.Request) (_ http.ResponseWriter, done func(), ok bool) {
	if !isUpgrade(r.Header) {
		return w, func() {}, true
	}
	u := &upgradeWriter{ResponseWriter: w, ws: strings.EqualFold(r.Header.Get("Upgrade"), "websocket")}
	done, ok = h.conns.Add(u.goAway)
	if !ok {
		(&errorPage{Status: http.StatusServiceUnavailable, Error: "shutting_down", RetryAfter: 1,
			Message: "The gateway is restarting; try again in a moment."}).write(w, r)
		return w, done, false
	}
	return u, done, true
}

// upgradeWriter hands httputil.ReverseProxy, which hijacks the client's
// connection on a 101, an upgradedConn instead of the bare one.
type upgradeWriter struct {
	http.ResponseWriter
	ws bool

	mu   sync.Mutex
	conn *upgradedConn // guarded by mu; set by Hijack
	gone bool          // guarded by mu; goAway came before Hijack
}

// Hijack implements http.Hijacker; http.ResponseController finds it
// before it unwraps.
func (u *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(u.ResponseWriter).Hijack()
	if err != nil {
		return c, brw, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.gone {
		c.Close()
		return nil, nil, errGoneAway
	}
	u.conn = &upgradedConn{Conn: c, ws: u.ws}
	return u.conn, brw, nil
}

func (u *upgradeWriter) Unwrap() http.ResponseWriter { return u.ResponseWriter }

// goAway is the close function Conns.Shutdown calls when the grace is
// over.
func (u *upgradeWriter) goAway() {
	u.mu.Lock()
	c := u.conn
	u.gone = c == nil
	u.mu.Unlock()
	if c != nil {
		c.goAway()
	}
}

// upgradedConn is the client side of an upgraded connection. For a
// WebSocket it follows the frames the env sends to the client, so that at
// shutdown it can put its close frame between two of them rather than in
// the middle of one.
type upgradedConn struct {
	net.Conn
	ws     bool
	closed atomic.Bool

	mu      sync.Mutex // held across writes to the client
	frames  wsFrames   // guarded by mu; position in the env's frames
	leaving bool       // guarded by mu; send the close frame at the next frame boundary
}

func (c *upgradedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	if !c.ws {
		return c.Conn.Write(p)
	}
	if !c.leaving {
		n, err := c.Conn.Write(p)
		c.frames.consume(p[:n], false)
		return n, err
	}
	// Finish the frame in flight, then say goodbye.
	k := c.frames.consume(p, true)
	n, err := c.Conn.Write(p[:k])
	if err != nil {
		return n, err
	}
	if c.frames.atBoundary() {
		c.sayGoodbyeLocked()
		return n, errGoneAway
	}
	return n, nil
}

func (c *upgradedConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.Conn.Close()
}

// goAway ends the connection: a WebSocket at its next frame boundary with
// a close frame, anything else at once. Blocked writes (a client that
// stopped reading) fail after goAwayTimeout, and the connection is cut
// then if the frame in flight never completes.
func (c *upgradedConn) goAway() {
	c.Conn.SetWriteDeadline(time.Now().Add(goAwayTimeout))
	if !c.ws {
		c.Close()
		return
	}
	time.AfterFunc(goAwayTimeout, func() { c.Close() })
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.frames.atBoundary() {
		c.sayGoodbyeLocked()
		return
	}
	c.leaving = true
}

// sayGoodbyeLocked sends close frame 1001 and closes; c.mu must be held.
func (c *upgradedConn) sayGoodbyeLocked() {
	if !c.closed.Load() {
		c.Conn.Write(closeFrame(1001, goAwayReason))
	}
	c.Close()
}

// closeFrame is a server-to-client (unmasked) WebSocket close frame, RFC
// 6455 section 5.5.1. The reason must be under 124 bytes.
func closeFrame(code uint16, reason string) []byte {
	f := []byte{0x88, byte(2 + len(reason)), 0, 0}
	binary.BigEndian.PutUint16(f[2:], code)
	return append(f, reason...)
}

// wsFrames follows a stream of WebSocket frames (RFC 6455 section 5.2) as
// it is written, without keeping their payloads.
type wsFrames struct {
	hdr  [14]byte // the frame header read so far
	nhdr int      // bytes in hdr; 0 between frames
	left uint64   // payload bytes still to come once the header is complete
	body bool     // the header is complete; left counts the payload
}

func (f *wsFrames) atBoundary() bool { return f.nhdr == 0 && !f.body }

// consume advances over p and returns how many bytes it took: all of p,
// or, when stop is set, only up to the end of the frame in progress (0 if
// p starts a new frame).
func (f *wsFrames) consume(p []byte, stop bool) int {
	i := 0
	for i < len(p) {
		if stop && f.atBoundary() {
			return i
		}
		if f.body {
			n := min(uint64(len(p)-i), f.left)
			i += int(n)
			f.left -= n
			if f.left == 0 {
				f.body = false
			}
			continue
		}
		f.hdr[f.nhdr] = p[i]
		f.nhdr++
		i++
		if need := f.headerLen(); f.nhdr == need {
			f.left = f.payloadLen()
			f.nhdr = 0
			f.body = f.left > 0
		}
	}
	return i
}

// headerLen is the full header's length as far as the bytes so far tell.
func (f *wsFrames) headerLen() int {
	if f.nhdr < 2 {
		return 2
	}
	n := 2
	switch f.hdr[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if f.hdr[1]&0x80 != 0 { // masked: only clients mask, but be exact
		n += 4
	}
	return n
}

func (f *wsFrames) payloadLen() uint64 {
	switch l := f.hdr[1] & 0x7f; l {
	case 126:
		return uint64(binary.BigEndian.Uint16(f.hdr[2:]))
	case 127:
		return binary.BigEndian.Uint64(f.hdr[2:])
	default:
		return uint64(l)
	}
}
