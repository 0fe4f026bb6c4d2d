package access

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"
)

// maxReplyBody bounds the body of an authentication service's answer
// passed on to the client.
const maxReplyBody = 64 << 10

// defaultAuthTimeout is ForwardAuth.Timeout's default.
const defaultAuthTimeout = 5 * time.Second

// forwardHeaders are the client's headers the authentication service
// gets as they are: its session cookie or token, and what it needs to
// decide between a 401 and a redirect to its login page.
var forwardHeaders = []string{"Cookie", "Authorization", "Accept", "User-Agent", "X-Requested-With"}

// replyHop are fields of the service's answer that concern its own
// connection, not the client's.
var replyHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true, "Content-Length": true,
}

// forwardAuth asks ru's service about r. d is the decision so far.
func (p *Policy) forwardAuth(r *http.Request, ru *rule, d Decision) Decision {
	fa := ru.ForwardAuth
	timeout := fa.Timeout
	if timeout <= 0 {
		timeout = defaultAuthTimeout
	}
	ctx, cancel := context.WithTimeoutCause(r.Context(), timeout, errors.New("access: forward_auth took too long"))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fa.URL, nil)
	if err != nil {
		return authFailed(d, err)
	}
	for _, k := range forwardHeaders {
		if v, ok := r.Header[k]; ok {
			req.Header[k] = v
		}
	}
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	// Origin form even when the client sent the absolute form.
	uri := r.URL.RequestURI()
	req.Header.Set("X-Forwarded-Method", r.Method)
	req.Header.Set("X-Forwarded-Proto", proto)
	req.Header.Set("X-Forwarded-Host", r.Host)
	req.Header.Set("X-Forwarded-Uri", uri)
	if a := ClientAddr(r, p.trusted); a.IsValid() {
		req.Header.Set("X-Forwarded-For", a.String())
	}
	if id := r.Header.Get("X-Request-Id"); id != "" {
		req.Header.Set("X-Request-Id", id)
	}
	res, err := p.client.Do(req)
	if err != nil {
		return authFailed(d, context.Cause(ctx))
	}
	defer res.Body.Close()
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		io.Copy(io.Discard, io.LimitReader(res.Body, maxReplyBody))
		for _, k := range ru.copied {
			if v := res.Header.Values(k); len(v) > 0 {
				if d.copied == nil {
					d.copied = make(http.Header, len(ru.copied))
				}
				d.copied[k] = v
			}
		}
		return d
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, maxReplyBody+1))
	if err != nil {
		return authFailed(d, err)
	}
	if len(body) > maxReplyBody {
		body = body[:maxReplyBody]
	}
	hdr := make(http.Header, len(res.Header))
	for k, v := range res.Header {
		if !replyHop[k] {
			hdr[k] = v
		}
	}
	return Decision{Outcome: Replied, Reply: &Reply{Status: res.StatusCode, Header: hdr, Body: body}, strip: d.strip}
}

// authFailed is the decision when the service could not be asked. The
// client is not told why: the service's address is the operator's.
func authFailed(d Decision, err error) Decision {
	return Decision{Outcome: Refused, Status: http.StatusBadGateway, Kind: "auth_unavailable",
		Message: "The gateway could not reach its authentication service; try again in a moment.",
		strip:   d.strip, Err: err}
}
