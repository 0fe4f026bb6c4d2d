package gateway

import (
	"bufio"
	"io"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// The direct path proxies the commonest request, one without a body that
// asks for no upgrade, straight over the connections of its own transport:
// it writes the outbound request from the inbound one's fields instead of
// cloning it (httputil.ReverseProxy's Rewrite copies the request, its URL
// and its header map, and adds two contexts), and copies the response
// head into the client's header map as it is. That halves the
// allocations of a proxied GET. The rules are ReverseProxy's, and every
// request it does not take goes there (see Handler.ServeHTTP):
//   - hop-by-hop fields (RFC 9110 section 7.6.1), and every field the
//     client's Connection header names, stay behind; "Te: trailers" passes;
//   - the forwarding headers are the gateway's own (forwardingFor);
//   - 1xx responses other than 101 are passed on; a 101 to a request that
//     asked for no upgrade is an error (502);
//   - a response of unknown length or an event stream is flushed as it
//     comes; trailers are passed on;
//   - a body that breaks off aborts the client's response, so the client
//     does not take a truncated body for a whole one.

// hopHeaders are the fields that concern one connection only (RFC 9110
// section 7.6.1, and the obsolete ones httputil.ReverseProxy drops too).
var hopHeaders = map[string]bool{
	"Connection":          true,
	"Proxy-Connection":    true,
	"Keep-Alive":          true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
}

// ownHeaders are fields of the request head that the direct path writes
// as Request.Write (which ReverseProxy's transport uses) does, not as
// the header map has them: Host and Content-Length from the request's
// own fields (an HTTP/2 server leaves a client's "host" and
// "content-length" fields in the map), and one User-Agent.
var ownHeaders = map[string]bool{
	"Host":           true,
	"Content-Length": true,
	"User-Agent":     true,
}

// forwardingHeaders are the inbound fields the gateway writes itself.
var forwardingHeaders = map[string]bool{
	"X-Forwarded-For":   true,
	"X-Forwarded-Host":  true,
	"X-Forwarded-Proto": true,
	"Forwarded":         true,
	RequestIDHeader:     true,
}

// directEligible reports whether the direct path may carry r: no body, no
// upgrade, an origin-form target of visible ASCII (so it can be sent as
// the client wrote it), and canonical, valid header fields. An HTTP/2
// request always has a Body; a ContentLength of 0 there means a stream
// that ended with its headers (or says it carries nothing).
func directEligible(r *http.Request) bool {
	noBody := r.Body == nil || r.Body == http.NoBody || r.ProtoMajor == 2
	if !noBody || r.ContentLength != 0 || len(r.TransferEncoding) != 0 ||
		r.Method == http.MethodConnect || !validToken(r.Method) || !originForm(r.RequestURI) ||
		!httpguts.ValidHostHeader(r.Host) || r.Host == "" || isUpgrade(r.Header) {
		return false
	}
	// A Content-Length field other than 0 on a request without a body
	// (an HTTP/2 client's, which the HTTP/2 server does not check when
	// the stream ended) is a lie: ReverseProxy drops it.
	if cl, ok := r.Header["Content-Length"]; ok && (len(cl) != 1 || cl[0] != "0") {
		return false
	}
	for k, vv := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) || textproto.CanonicalMIMEHeaderKey(k) != k {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return true
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !httpguts.IsTokenRune(rune(s[i])) {
			return false
		}
	}
	return true
}

// originForm reports whether target is an origin-form request target
// ("/path?query") that httputil.ReverseProxy would send unchanged, so the
// direct path may send it as the client wrote it: a path of characters
// that need no escaping (else URL.EscapedPath re-escapes it) and valid
// %XX escapes, and a query of visible ASCII without ';' and with valid
// escapes (else ReverseProxy re-encodes it, against parameter smuggling).
func originForm(target string) bool {
	if target == "" || target[0] != '/' {
		return false
	}
	query := false
	for i := 0; i < len(target); i++ {
		c := target[i]
		switch {
		case c == '%':
			if i+2 >= len(target) || !isHex(target[i+1]) || !isHex(target[i+2]) {
				return false
			}
			i += 2
		case c == '?' && !query:
			query = true
		case query:
			if c <= ' ' || c >= 0x7f || c == '#' || c == ';' {
				return false
			}
		case !pathByte(c):
			return false
		}
	}
	return true
}

// pathByte reports whether c may stand unescaped in a path (RFC 3986
// pchar and "/"), as net/url's validEncoded accepts it.
func pathByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@/", c) >= 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// serveDirect proxies r, which directEligible accepted, to target.
// It returns the status it sent.
func (h *Handler) serveDirect(w http.ResponseWriter, r *http.Request, lease Lease, target netip.AddrPort) int {
	f := h.forwardingFor(r)
	conn := r.Header["Connection"]
	write := func(bw *bufio.Writer) error {
		writeRequestHead(bw, r, conn, f)
		return nil
	}
	got1xx := func(code int, hdr textproto.MIMEHeader) error {
		dst := w.Header()
		copyResponseHeader(dst, http.Header(hdr))
		w.WriteHeader(code)
		clear(dst)
		return nil
	}
	// The client's Connection: close is about its own connection, not
	// the gateway's to the env (ReverseProxy clears Close likewise).
	res, err := h.up.direct.exchange(r.Context(), lease, target, r, false, write, got1xx)
	if err != nil {
		h.upstreamError(w, r, lease.Env(), err)
		return upstreamErrorStatus(r)
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusSwitchingProtocols {
		h.upstreamError(w, r, lease.Env(), errUnaskedSwitch)
		return upstreamErrorStatus(r)
	}
	dst := w.Header()
	copyResponseHeader(dst, res.Header)
	if _, ok := dst["Set-Cookie"]; ok {
		h.scopeCookies(dst, lease.Template())
	}
	dst[RequestIDHeader] = []string{f.id}
	if cold := lease.ColdStart(); cold > 0 {
		dst[ColdStartHeader] = []string{formatMillis(cold)}
	}
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		dst["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	w.WriteHeader(res.StatusCode)
	if err := copyBody(w, res, streaming(res)); err != nil {
		// As httputil.ReverseProxy: the client must not take what it
		// got for the whole body.
		panic(http.ErrAbortHandler)
	}
	res.Body.Close() // now, so that res.Trailer is filled in
	if len(res.Trailer) == 0 {
		return res.StatusCode
	}
	// Force chunking, so net/http does not add a Content-Length to a
	// short body and drop the trailers.
	http.NewResponseController(w).Flush()
	if len(res.Trailer) == announced {
		copyResponseHeader(dst, res.Trailer)
		return res.StatusCode
	}
	for k, vv := range res.Trailer {
		dst[http.TrailerPrefix+k] = append(dst[http.TrailerPrefix+k], vv...)
	}
	return res.StatusCode
}

var errUnaskedSwitch = errorString("the dev server switched protocols, which the request did not ask for")

type errorString string

func (e errorString) Error() string { return string(e) }

// writeRequestHead writes r's request line and header fields as the env
// gets them: r's own fields but the hop-by-hop ones, those conn (r's
// Connection header) names, and the forwarding ones, which f replaces.
func writeRequestHead(bw *bufio.Writer, r *http.Request, conn []string, f forwarding) {
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(r.RequestURI)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.Host)
	bw.WriteString("\r\n")
	// Request.Write: the first User-Agent only, and none if it is empty.
	if ua := r.Header["User-Agent"]; len(ua) > 0 && ua[0] != "" &&
		(conn == nil || !httpguts.HeaderValuesContainsToken(conn, "User-Agent")) {
		writeField(bw, "User-Agent", ua[0])
	}
	// Request.Write: a request without a body whose method implies one
	// says it has none (servers may ask for the length of a POST).
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		writeField(bw, "Content-Length", "0")
	}
	for k, vv := range r.Header {
		if hopHeaders[k] || forwardingHeaders[k] || ownHeaders[k] || (f.dropRealIP && k == "X-Real-Ip") ||
			(conn != nil && httpguts.HeaderValuesContainsToken(conn, k)) {
			continue
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
	if httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers") {
		writeField(bw, "Te", "trailers")
	}
	if f.xff != "" {
		writeField(bw, "X-Forwarded-For", f.xff)
	}
	writeField(bw, "X-Forwarded-Host", f.host)
	writeField(bw, "X-Forwarded-Proto", f.proto)
	bw.WriteString("Forwarded: ")
	for _, p := range f.prior {
		bw.WriteString(p)
		bw.WriteString(", ")
	}
	writeForwardedElement(bw, f.client, f.inHost, f.inProto)
	bw.WriteString("\r\n")
	writeField(bw, RequestIDHeader, f.id)
	bw.WriteString("\r\n")
}

func writeField(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// copyResponseHeader adds src's fields to dst, but the hop-by-hop ones
// and those src's Connection header names. A field dst lacks takes src's
// slice as it is: src is not used again.
func copyResponseHeader(dst, src http.Header) {
	conn := src["Connection"]
	for k, vv := range src {
		if hopHeaders[k] || (conn != nil && httpguts.HeaderValuesContainsToken(conn, k)) {
			continue
		}
		if have, ok := dst[k]; ok {
			dst[k] = append(have, vv...)
		} else {
			dst[k] = vv
		}
	}
}

// streaming reports whether res must reach the client as it comes: its
// length is unknown, or it is an event stream (httputil.ReverseProxy
// flushes those at once too).
func streaming(res *http.Response) bool {
	if res.ContentLength == -1 {
		return true
	}
	ct := res.Header.Get("Content-Type")
	const es = "text/event-stream"
	return len(ct) >= len(es) && strings.EqualFold(ct[:len(es)], es) &&
		(len(ct) == len(es) || ct[len(es)] == ';' || ct[len(es)] == ' ')
}

// copyBody copies res's body to w, flushing after every write when
// flush is set.
func copyBody(w http.ResponseWriter, res *http.Response, flush bool) error {
	if res.Body == http.NoBody {
		return nil
	}
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	buf := *bp
	var rc *http.ResponseController
	if flush {
		rc = http.NewResponseController(w)
	}
	for {
		n, rerr := res.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			if rc != nil {
				if err := rc.Flush(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
