package gateway

import (
	"net/http"
	"time"
)

// RequestObserver is told of every request the handler answers, for
// metrics: the status sent (0 if none was, e.g. the client went away) and
// the time from the request's arrival until the handler returned (for an
// upgraded connection or a stream, until it ended). It is called on the
// request path: it must not allocate or lock (atomic counters,
// pre-resolved metric children).
type RequestObserver interface {
	Request(status int, took time.Duration)
}

// observe reports a request to Config.Requests, if set.
func (h *Handler) observe(status int, began time.Time) {
	if h.requests != nil {
		h.requests.Request(status, time.Since(began))
	}
}

// upstreamErrorStatus is the status upstreamError sent for r: 502, or
// none when the client had gone.
func upstreamErrorStatus(r *http.Request) int {
	if r.Context().Err() != nil {
		return 0
	}
	return http.StatusBadGateway
}
