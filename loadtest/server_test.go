package loadtest

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// envServer is an in-process stand-in for the gateway: it answers every
// request with X-Envgate-Env set to the env of its Host, unless wrongEnv
// says otherwise, and marks its first request per host as a cold start.
type envServer struct {
	cfg serverConfig
	srv *httptest.Server // nil when served in memory

	mu sync.Mutex
	// Guarded by mu:
	hosts     map[string]int // requests per host
	misrouted int            // responses that named the wrong env
}

// serverConfig shapes an envServer; every field is optional.
type serverConfig struct {
	// before runs first in each request, e.g. to stall it.
	before func(*http.Request)
	// wrongEnv picks hosts whose responses name another env.
	wrongEnv func(host string) bool
	// cold picks responses that carry the cold-start header; default: the
	// server's first request per host.
	cold func(host string, first bool) bool
}

// newEnvServer makes an envServer without a listener, to serve in memory
// (memTransport); startEnvServer serves one on loopback.
func newEnvServer(cfg serverConfig) *envServer {
	if cfg.cold == nil {
		cfg.cold = func(_ string, first bool) bool { return first }
	}
	return &envServer{cfg: cfg, hosts: map[string]int{}}
}

// startEnvServer starts an envServer on loopback.
func startEnvServer(t *testing.T, cfg serverConfig) *envServer {
	t.Helper()
	s := newEnvServer(cfg)
	s.srv = httptest.NewServer(s)
	t.Cleanup(s.srv.Close)
	return s
}

func (s *envServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.cfg.before != nil {
		s.cfg.before(r)
	}
	env := EnvName(r.Host)
	s.mu.Lock()
	s.hosts[r.Host]++
	first := s.hosts[r.Host] == 1
	if s.cfg.wrongEnv != nil && s.cfg.wrongEnv(r.Host) {
		env = "not-" + env
		s.misrouted++
	}
	s.mu.Unlock()
	if s.cfg.cold(r.Host, first) {
		w.Header().Set(ColdStartHeader, "1ms")
	}
	w.Header().Set("X-Envgate-Env", env)
	_, _ = w.Write([]byte("hello from " + env + "\n"))
}

func (s *envServer) addr() string {
	return s.srv.Listener.Addr().(*net.TCPAddr).String()
}

func (s *envServer) requestsTo(host string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hosts[host]
}

func (s *envServer) counts() (hosts, requests, misrouted int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.hosts {
		requests += n
	}
	return len(s.hosts), requests, s.misrouted
}

// startHandler serves h on loopback and returns its address.
func startHandler(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// memTransport hands each request to h in memory, so that a run can go in
// a testing/synctest bubble: a handler that sleeps moves the bubble's
// clock, and the latencies the run measures are exactly the handler's.
// Like a real transport, it gives up when the request's context ends.
type memTransport struct{ h http.Handler }

func (m memTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	done := make(chan *http.Response, 1)
	go func() {
		rec := httptest.NewRecorder()
		m.h.ServeHTTP(rec, r)
		done <- rec.Result()
	}()
	select {
	case resp := <-done:
		return resp, nil
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
}
