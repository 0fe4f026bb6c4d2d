package gateway

import (
	"io"
	"net/http"
	"sync/atomic"
)

// A request body can fail while the proxy reads it to send it on: a
// malformed chunk, a client that hangs up halfway. http.Transport then
// fails the round trip, and the failure would look like the env's (502).
// clientBody records such a failure where it happens, so the answer can
// be the client's 400 without guessing from error strings.
//
// Only requests with a body are wrapped, so a bodyless GET costs nothing.
// Those are also the only ones the direct path carries (directEligible),
// so a client body error can only surface through httputil.ReverseProxy's
// ErrorHandler, proxyError. That gets the outbound request, whose Body is
// ReverseProxy's own wrapper, so the clientBody travels in the request's
// context (proxied.body).

// clientBody is an inbound request body that remembers its first read
// error. Read is called by one goroutine at a time (the outbound
// transport's writer); Close and readErr may be called from others.
type clientBody struct {
	rc   io.ReadCloser
	head byte // read by peek, returned by the next Read when held
	held bool

	err    atomic.Pointer[error] // the first read error other than EOF
	closed atomic.Bool           // Close was called
}

// bodyOf returns a clientBody reading r's body, or nil when r has none.
// An HTTP/2 request always has a Body; a ContentLength of 0 there means
// the stream ended with its headers. r.Body itself stays as it is: the
// server looks at it after the handler has answered (an unread Expect:
// 100-continue body closes the connection instead of being read), so
// only the request handed to ReverseProxy gets the clientBody.
func bodyOf(r *http.Request) *clientBody {
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	return &clientBody{rc: r.Body}
}

// peekFirst reports whether the gateway reads the start of r's body
// before it acquires the env, so that a malformed first chunk is refused
// without starting anything: r is HTTP/1.x with a chunked body (the only
// framing of a body that can be malformed; a short Content-Length body
// is a client that left). Reading early only delays the start (and the
// env's sight of the request head) until the first chunk-size line has
// come, which a client sends right behind the head; an HTTP/1 response
// could not reach the client before that anyway, since net/http's server
// without full duplex reads on in the body (up to 256 KiB) before it
// writes a response head. It would change more with Expect (reading
// sends "100 Continue", which is the env's to send or to refuse) and with
// an upgrade. HTTP/2 frames bodies itself, and its full-duplex streams
// (gRPC) may send nothing until the env has answered.
func peekFirst(r *http.Request) bool {
	if r.ProtoMajor != 1 || len(r.TransferEncoding) == 0 || isUpgrade(r.Header) {
		return false
	}
	_, expect := r.Header["Expect"]
	return !expect
}

// peek reads the first byte of the body, which makes net/http's server
// parse the first chunk-size line, and keeps it for the next Read. It
// waits for the client as the proxy's first read would have. It returns
// the read error, if any; an empty body's EOF is none.
func (b *clientBody) peek() error {
	var p [1]byte
	n, err := b.Read(p[:])
	if n == 1 {
		b.head, b.held = p[0], true
	}
	if err == io.EOF {
		return nil
	}
	return err
}

func (b *clientBody) Read(p []byte) (int, error) {
	if b.held && len(p) > 0 {
		p[0], b.held = b.head, false
		return 1, nil
	}
	n, err := b.rc.Read(p)
	// A read that fails once Close has been called fails because of it,
	// not because of the client.
	if err != nil && err != io.EOF && !b.closed.Load() {
		b.err.CompareAndSwap(nil, &err)
	}
	return n, err
}

// Close closes the body. It marks the body closed first, so a Read that
// the close cuts short is not taken for the client's failure.
func (b *clientBody) Close() error {
	b.closed.Store(true)
	return b.rc.Close()
}

// readErr returns the error reading the client's body failed with, or
// nil.
func (b *clientBody) readErr() error {
	if e := b.err.Load(); e != nil {
		return *e
	}
	return nil
}

// bodyError answers r, whose body could not be read, with a 400 and
// returns the status sent. The connection is closed after it: what
// follows a malformed body cannot be read as the next request.
func (h *Handler) bodyError(w http.ResponseWriter, r *http.Request, env string, err error) int {
	if r.Context().Err() != nil {
		return 499 // the client left; nobody to answer
	}
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
	p := &errorPage{
		Status:  http.StatusBadRequest,
		Error:   "bad_request_body",
		Env:     env,
		Message: "The request's body could not be read (" + err.Error() + "); send it again, framed as HTTP requires.",
	}
	p.write(w, r)
	return p.Status
}
