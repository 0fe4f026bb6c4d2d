package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// directTransport is the direct path's HTTP/1.1 client: it carries the
// requests route sends that way (directEligible: no body, no upgrade),
// written by serveDirect. It writes the request and reads the response
// on the calling goroutine, where http.Transport passes every request to
// its connection's write loop goroutine and the response back from its
// read loop: two goroutine handoffs per request, which under load cost
// the gateway about as much CPU as all of net/http's parsing
// (BENCHMARKS.md section 1). Everything else goes through http.Transport
// (see upstream.go).
//
// It follows http.Transport's rules where they are visible to a client:
// its 1xx handling, its response header size limit, its keep-alive rules
// and when it retries a request on a new connection after a kept-alive
// one failed. What it writes is serveDirect's, which FuzzDirectHead
// compares with what httputil.ReverseProxy sends.
type directTransport struct {
	dial        dialFunc
	maxIdle     int           // idle connections kept per address
	maxIdleAll  int           // idle connections kept in all
	idleTimeout time.Duration // an idle connection is closed after this
	readSize    int           // bufio sizes per connection
	writeSize   int
	checkAfter  time.Duration // checkIdleAfter; tests change it
	// Buffers of connections in use; an idle connection holds none (one
	// idle connection per env, 64 KiB of buffers each, was most of the
	// gateway's heap with a thousand envs).
	readers, writers sync.Pool

	mu       sync.Mutex
	idle     map[netip.AddrPort][]*directConn // guarded by mu; by address, most recently used last
	nidle    int                              // guarded by mu; connections in idle
	sweeping bool                             // guarded by mu; a sweep of idle connections is scheduled
	sweep    *time.Timer                      // guarded by mu
}

// maxResponseHeaderBytes is http.Transport's default limit on a
// response's headers (1xx responses included).
const maxResponseHeaderBytes = 10 << 20

// checkIdleAfter is how long a connection must have been idle before it
// is checked, without blocking, for a close or stray bytes from the
// server before reuse. http.Transport's read loop notices those while the
// connection is idle; servers close idle connections after seconds
// (Node's default is 5 s), so a connection reused sooner skips the system
// call, and the rare close in flight is what the retry is for.
const checkIdleAfter = 100 * time.Millisecond

// newDirectTransport returns a directTransport with t's dialer, buffer sizes
// and idle limits.
func newDirectTransport(t *http.Transport) *directTransport {
	return &directTransport{
		dial:        t.DialContext,
		maxIdle:     t.MaxIdleConnsPerHost,
		maxIdleAll:  t.MaxIdleConns,
		idleTimeout: t.IdleConnTimeout,
		readSize:    t.ReadBufferSize,
		writeSize:   t.WriteBufferSize,
		checkAfter:  checkIdleAfter,
	}
}

// exchange sends a request to addr, written by write, and reads the
// response head: on an idle connection if there is one, else (or when
// the kept-alive one turns out closed, and req may be retried) on a new
// one. req gives the method (for the response's framing and retries);
// closeAfter says the request asked the env to close the connection
// (Connection: close); lease, if not nil, is what a new connection is
// dialed through (dialEnv); got1xx, if not nil, receives informational
// responses other than 101.
func (t *directTransport) exchange(ctx context.Context, lease Lease, addr netip.AddrPort, req *http.Request, closeAfter bool, write func(*bufio.Writer) error, got1xx func(int, textproto.MIMEHeader) error) (*http.Response, error) {
	fc := t.get(addr)
	if fc != nil {
		res, err := fc.roundTrip(t, ctx, req, closeAfter, write, got1xx)
		if err == nil || !retryable(req, err) {
			return res, err
		}
		// A kept-alive connection the server had closed: once more on a
		// new one, which is what http.Transport does too.
	}
	// The lease goes with a dial only (dialEnv dials through it), not
	// with every request on a kept-alive connection.
	dctx := ctx
	if lease != nil {
		dctx = context.WithValue(ctx, dialLeaseKey{}, lease)
	}
	c, err := t.dial(dctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	return t.newConn(c, addr).roundTrip(t, ctx, req, closeAfter, write, got1xx)
}

// retryable reports whether a request that failed on a kept-alive
// connection may be sent again: when none of it was written, or when the
// connection broke before any of the response came and the method is
// idempotent (http.Transport's shouldRetryRequest).
func retryable(req *http.Request, err error) bool {
	var fe *directError
	if !errors.As(err, &fe) || req.Context().Err() != nil {
		return false
	}
	return !fe.wrote || (!fe.read && replayable(req))
}

// replayable is http.Request's isReplayable for a request without a
// body.
func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, a := req.Header["Idempotency-Key"]
	_, b := req.Header["X-Idempotency-Key"]
	return a || b
}

// directError is a failed exchange on a connection, with how far it got.
type directError struct {
	err   error
	wrote bool // some of the request was written
	read  bool // some of the response was read
	sent  bool // all of the request was written
}

// Error words it as http.Transport does: the bare error when the
// exchange broke at a message boundary (such as "EOF" from a server that
// hung up before answering), else as a broken connection.
func (e *directError) Error() string {
	if e.read || (e.wrote && !e.sent) {
		return "net/http: HTTP/1.x transport connection broken: " + e.err.Error()
	}
	return e.err.Error()
}

func (e *directError) Unwrap() error { return e.err }

// get takes a usable idle connection to addr, or returns nil.
func (t *directTransport) get(addr netip.AddrPort) *directConn {
	for {
		t.mu.Lock()
		conns := t.idle[addr]
		if len(conns) == 0 {
			t.mu.Unlock()
			return nil
		}
		fc := conns[len(conns)-1]
		conns[len(conns)-1] = nil
		if len(conns) == 1 {
			delete(t.idle, addr)
		} else {
			t.idle[addr] = conns[:len(conns)-1]
		}
		t.nidle--
		t.mu.Unlock()
		if (!fc.bodiless && time.Since(fc.idleAt) < t.checkAfter) || fc.quiet() {
			t.takeBuffers(fc)
			return fc
		}
		fc.close()
	}
}

// put keeps fc for reuse, or closes it when addr has enough idle ones.
// When all addresses together have, the one idle longest makes room.
func (t *directTransport) put(fc *directConn) {
	if fc.br.Buffered() != 0 { // bytes beyond the response: not HTTP we understand
		fc.close()
		return
	}
	t.dropBuffers(fc)
	fc.idleAt = time.Now()
	t.mu.Lock()
	conns := t.idle[fc.addr]
	if len(conns) >= t.maxIdle {
		t.mu.Unlock()
		fc.close()
		return
	}
	if t.idle == nil {
		t.idle = make(map[netip.AddrPort][]*directConn)
	}
	t.idle[fc.addr] = append(conns, fc)
	t.nidle++
	var evicted *directConn
	if t.maxIdleAll > 0 && t.nidle > t.maxIdleAll {
		evicted = t.removeOldestLocked()
	}
	if !t.sweeping {
		t.sweeping = true
		if t.sweep == nil {
			t.sweep = time.AfterFunc(t.idleTimeout, t.sweepIdle)
		} else {
			t.sweep.Reset(t.idleTimeout)
		}
	}
	t.mu.Unlock()
	if evicted != nil {
		evicted.close()
	}
}

// removeOldestLocked takes the connection idle longest out of t.idle;
// t.mu must be held. It scans the addresses, which only a gateway at its
// limit of idle connections does.
func (t *directTransport) removeOldestLocked() *directConn {
	var oldest netip.AddrPort
	for addr, conns := range t.idle {
		if !oldest.IsValid() || conns[0].idleAt.Before(t.idle[oldest][0].idleAt) {
			oldest = addr
		}
	}
	conns := t.idle[oldest]
	fc := conns[0]
	if len(conns) == 1 {
		delete(t.idle, oldest)
	} else {
		t.idle[oldest] = conns[1:]
	}
	t.nidle--
	return fc
}

// sweepIdle closes connections idle for longer than idleTimeout and
// schedules itself again while any are left.
func (t *directTransport) sweepIdle() {
	now := time.Now()
	var old []*directConn
	t.mu.Lock()
	next := time.Duration(-1)
	for addr, conns := range t.idle {
		n := 0 // oldest first: conns are appended as they become idle
		for n < len(conns) && now.Sub(conns[n].idleAt) >= t.idleTimeout {
			n++
		}
		old = append(old, conns[:n]...)
		t.nidle -= n
		if n == len(conns) {
			delete(t.idle, addr)
			continue
		}
		t.idle[addr] = append(conns[:0], conns[n:]...)
		if d := t.idleTimeout - now.Sub(t.idle[addr][0].idleAt); next < 0 || d < next {
			next = d
		}
	}
	t.sweeping = next >= 0
	if t.sweeping {
		t.sweep.Reset(next)
	}
	t.mu.Unlock()
	for _, fc := range old {
		fc.close()
	}
}

// CloseIdleConnections closes every idle connection.
func (t *directTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle, t.nidle = nil, 0
	t.mu.Unlock()
	for _, conns := range idle {
		for _, fc := range conns {
			fc.close()
		}
	}
}

// directConn is a connection to an env with its buffers. It is used by one
// request at a time: from get to put or close.
type directConn struct {
	conn   net.Conn
	raw    syscall.RawConn // for quiet; nil if conn has no file descriptor
	addr   netip.AddrPort
	br     *bufio.Reader // reads c, not conn, to count and limit
	bw     *bufio.Writer // writes c, not conn, to count
	idleAt time.Time     // when it was last put
	// bodiless: its last response had no body by its framing (HEAD, 204,
	// 304); a server that sends one anyway would have the next request
	// read it as its response, so reuse checks for stray bytes at once.
	bodiless bool

	limit   int64 // bytes Read may still return; bounds response headers
	nread   int64 // bytes read from conn
	nwrite  int64 // bytes written to conn
	closing atomic.Bool
}

func (t *directTransport) newConn(c net.Conn, addr netip.AddrPort) *directConn {
	fc := &directConn{conn: c, addr: addr, limit: 1<<63 - 1}
	inner := c
	if ec, ok := c.(*envConn); ok {
		inner = ec.Conn
	}
	if sc, ok := inner.(syscall.Conn); ok {
		fc.raw, _ = sc.SyscallConn()
	}
	t.takeBuffers(fc)
	return fc
}

// takeBuffers gives fc its read and write buffers.
func (t *directTransport) takeBuffers(fc *directConn) {
	if br, ok := t.readers.Get().(*bufio.Reader); ok {
		br.Reset(fc)
		fc.br = br
	} else {
		fc.br = bufio.NewReaderSize(fc, t.readSize)
	}
	if bw, ok := t.writers.Get().(*bufio.Writer); ok {
		bw.Reset(fc)
		fc.bw = bw
	} else {
		fc.bw = bufio.NewWriterSize(fc, t.writeSize)
	}
}

// dropBuffers takes back the buffers of fc, which is going idle with
// nothing buffered.
func (t *directTransport) dropBuffers(fc *directConn) {
	fc.br.Reset(nil)
	fc.bw.Reset(nil)
	t.readers.Put(fc.br)
	t.writers.Put(fc.bw)
	fc.br, fc.bw = nil, nil
}

func (c *directConn) Read(p []byte) (int, error) {
	if c.limit <= 0 {
		return 0, fmt.Errorf("net/http: server response headers exceeded %d bytes; aborted", maxResponseHeaderBytes)
	}
	if int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.conn.Read(p)
	c.limit -= int64(n)
	c.nread += int64(n)
	return n, err
}

func (c *directConn) Write(p []byte) (int, error) {
	n, err := c.conn.Write(p)
	c.nwrite += int64(n)
	return n, err
}

func (c *directConn) close() {
	if !c.closing.Swap(true) {
		c.conn.Close()
	}
}

// quiet reports, without blocking, that the server has neither closed
// the idle connection nor sent anything on it.
func (c *directConn) quiet() bool {
	if c.raw == nil {
		return true
	}
	quiet := false
	var b [1]byte
	err := c.raw.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		quiet = err == syscall.EAGAIN
		return true
	})
	return err == nil && quiet
}

// roundTrip sends a request on c, written by write, and reads the
// response head (see exchange). The response's body gives c back to t
// when read to its end, if the response lets the connection be kept.
// Errors are *directError, or the context's.
func (c *directConn) roundTrip(t *directTransport, ctx context.Context, req *http.Request, closeAfter bool, write func(*bufio.Writer) error, got1xx func(int, textproto.MIMEHeader) error) (*http.Response, error) {
	stop := context.AfterFunc(ctx, c.close)
	fail := func(err error, wrote, sent, read bool) (*http.Response, error) {
		stop()
		c.close()
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, &directError{err: err, wrote: wrote, sent: sent, read: read}
	}
	nw := c.nwrite
	err := write(c.bw)
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		return fail(err, c.nwrite != nw, false, false)
	}
	nr := c.nread // put made sure nothing was buffered
	c.limit = maxResponseHeaderBytes
	res, err := c.readResponse(req, got1xx)
	c.limit = 1<<63 - 1
	if err != nil {
		return fail(err, true, true, c.nread != nr)
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// The caller owns the connection now, as with http.Transport.
		if !stop() {
			return fail(context.Cause(ctx), true, true, true)
		}
		res.Body = &switchedBody{br: c.br, conn: c.conn}
		return res, nil
	}
	keep := !res.Close && !closeAfter
	if res.Body == http.NoBody || req.Method == http.MethodHead {
		c.bodiless = true
		if stop() && keep {
			t.put(c)
		} else {
			c.close()
		}
		return res, nil
	}
	c.bodiless = false
	res.Body = &directBody{t: t, c: c, body: res.Body, ctx: ctx, stop: stop, keep: keep}
	return res, nil
}

// readResponse reads the final response head, passing 1xx responses
// other than 101 to got1xx, if set, as http.Transport passes them to the
// request's ClientTrace (httputil.ReverseProxy forwards them to the
// client that way).
func (c *directConn) readResponse(req *http.Request, got1xx func(int, textproto.MIMEHeader) error) (*http.Response, error) {
	// A server that hangs up before answering gives EOF here, where
	// ReadResponse would say "unexpected EOF"; http.Transport peeks too.
	if _, err := c.br.Peek(1); err != nil {
		return nil, err
	}
	for {
		res, err := http.ReadResponse(c.br, req)
		if err != nil {
			return nil, err
		}
		if res.StatusCode < 100 || res.StatusCode > 199 || res.StatusCode == http.StatusSwitchingProtocols {
			return res, nil
		}
		if got1xx != nil {
			if err := got1xx(res.StatusCode, textproto.MIMEHeader(res.Header)); err != nil {
				return nil, err
			}
			c.limit = maxResponseHeaderBytes
		}
	}
}

// directBody is a response body on a directConn.
type directBody struct {
	t    *directTransport
	c    *directConn
	body io.ReadCloser // http.ReadResponse's
	ctx  context.Context
	stop func() bool // unregisters the close on ctx's cancellation
	keep bool        // the response lets the connection be reused

	done atomic.Bool // read to its end, failed or closed: c is no longer ours
	eof  atomic.Bool // read to its end
}

var errBodyClosed = errors.New("http: read on closed response body")

func (b *directBody) Read(p []byte) (int, error) {
	if b.done.Load() {
		if b.eof.Load() {
			return 0, io.EOF
		}
		return 0, errBodyClosed
	}
	n, err := b.body.Read(p)
	switch {
	case err == io.EOF:
		b.eof.Store(true)
		if b.done.CompareAndSwap(false, true) {
			if b.stop() && b.keep {
				b.t.put(b.c)
			} else {
				b.c.close()
			}
		}
	case err != nil:
		b.finish()
		if b.ctx.Err() != nil {
			err = context.Cause(b.ctx)
		}
	}
	return n, err
}

// Close closes the connection unless the body was read to its end:
// draining an unread rest could take as long as the env likes.
func (b *directBody) Close() error {
	b.finish()
	return nil
}

func (b *directBody) finish() {
	if b.done.CompareAndSwap(false, true) {
		b.stop()
		b.c.close()
	}
}

// switchedBody is a 101 response's body: the connection itself, after
// what the response head's reads had buffered.
type switchedBody struct {
	br   *bufio.Reader
	conn net.Conn
}

func (b *switchedBody) Read(p []byte) (int, error) {
	if b.br != nil {
		if n := b.br.Buffered(); n > 0 {
			return b.br.Read(p[:min(len(p), n)])
		}
		b.br = nil
	}
	return b.conn.Read(p)
}

func (b *switchedBody) Write(p []byte) (int, error) { return b.conn.Write(p) }
func (b *switchedBody) Close() error                { return b.conn.Close() }
