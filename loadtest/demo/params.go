package demo

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Bounds on query parameters: generous for tests and demos, small enough
// that a typo cannot park a handler for days or stream terabytes.
const (
	defaultSlow     = time.Second
	maxSlow         = time.Hour
	defaultInterval = time.Second
	maxInterval     = time.Hour
	defaultDownload = 1 << 20
	maxDownload     = 1 << 40
)

// paramError is a query parameter the client got wrong; it becomes a 400.
type paramError struct {
	name, value, want string
}

func (e *paramError) Error() string {
	return fmt.Sprintf("demo: bad query parameter %s=%q: want %s", e.name, e.value, e.want)
}

// intParam parses query parameter name as an integer in [lo, hi], or
// returns def when it is absent.
func intParam(r *http.Request, name string, def, lo, hi int64) (int64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, &paramError{name: name, value: s, want: fmt.Sprintf("a whole number from %d to %d", lo, hi)}
	}
	return n, nil
}

// millisParam parses a whole number of milliseconds in [0, hi].
func millisParam(r *http.Request, name string, def, hi time.Duration) (time.Duration, error) {
	n, err := intParam(r, name, def.Milliseconds(), 0, hi.Milliseconds())
	return time.Duration(n) * time.Millisecond, err
}

// durationParam parses a Go duration ("100ms", "2s") in (0, hi].
func durationParam(r *http.Request, name string, def, hi time.Duration) (time.Duration, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > hi {
		return 0, &paramError{name: name, value: s, want: fmt.Sprintf("a Go duration like 100ms or 2s, above 0 and at most %s", hi)}
	}
	return d, nil
}

// badParam answers 400 for a paramError.
func badParam(w http.ResponseWriter, err error) {
	http.Error(w, err.Error(), http.StatusBadRequest)
}
