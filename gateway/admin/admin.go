// Package admin is envgate's operator API: a JSON API over HTTP to list,
// inspect, stop, restart and destroy envs, follow their output, reload the
// gateway and read its status, served on a Unix socket (access by file
// permissions) and optionally on TCP (access by bearer token). It owns no
// env state: it drives an Envs (lifecycle.Manager in production, a fake in
// tests). It must never be reachable without one of those two checks.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/rs/zerolog"
)

// Envs is what the API needs of the lifecycle manager.
type Envs interface {
	Details() []lifecycle.EnvDetail
	Detail(name string) (lifecycle.EnvDetail, bool)
	Stop(name, reason string) bool
	Restart(ctx context.Context, name string) (lifecycle.EnvDetail, error)
	Destroy(name string) error
	Tail(name string, n int) []string
	LogFile(name string) string
	Limits() lifecycle.Limits
}

// Config configures a Handler.
type Config struct {
	Envs Envs
	// Version and Revision identify the running build (envgate version).
	Version, Revision string
	// Instance is the gateway's instance name, for status.
	Instance string
	// Started is when the gateway process started; default now.
	Started time.Time
	// ValidName, if set, says whether an env name from a URL is one
	// (the gateway's label check); default: any name without '/'.
	ValidName func(string) bool
	// Reload, if set, reloads the gateway's configuration; nil makes
	// POST /v1/reload a 501.
	Reload func() error
	// Metrics, if set, serves GET /metrics.
	Metrics http.Handler
	// Cluster, in cluster mode, makes the env list and the env actions
	// cluster-wide (see Cluster). Default nil: this gateway's envs.
	Cluster Cluster
	Log     zerolog.Logger
}

// Handler serves the API. Make it with New.
type Handler struct {
	cfg Config
	mux *http.ServeMux
}

// New returns the API handler for cfg.
func New(cfg Config) *Handler {
	if cfg.Started.IsZero() {
		cfg.Started = time.Now()
	}
	if cfg.ValidName == nil {
		cfg.ValidName = func(s string) bool {
			return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00")
		}
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /healthz", h.health)
	h.mux.HandleFunc("GET /v1/status", h.status)
	h.mux.HandleFunc("GET /v1/envs", h.list)
	h.mux.HandleFunc("GET /v1/envs/{name}", h.env(h.get))
	h.mux.HandleFunc("POST /v1/envs/{name}/stop", h.env(h.stop))
	h.mux.HandleFunc("POST /v1/envs/{name}/restart", h.env(h.restart))
	h.mux.HandleFunc("POST /v1/envs/{name}/destroy", h.env(h.destroy))
	h.mux.HandleFunc("DELETE /v1/envs/{name}", h.env(h.destroy))
	h.mux.HandleFunc("GET /v1/envs/{name}/logs", h.env(h.logs))
	h.mux.HandleFunc("POST /v1/reload", h.reload)
	if cfg.Metrics != nil {
		h.mux.Handle("GET /metrics", cfg.Metrics)
	}
	h.mux.HandleFunc("GET /{$}", h.dashboard)
	return h
}

// ActionHeader must be set (to anything) on every request that changes
// something (POST, DELETE): a browser sends a custom header only from a
// script of the same origin, so another site's page cannot make a
// browser that can reach the API (a forwarded socket, a token cookie)
// stop or destroy envs.
const ActionHeader = "X-Envgate-Admin"

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Header.Get(ActionHeader) == "" {
		writeError(w, http.StatusForbidden, "a request that changes something needs the header "+ActionHeader+": 1 (the CLI and the dashboard send it)")
		return
	}
	h.mux.ServeHTTP(w, r)
}

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, Error{Error: msg})
}

func (h *Handler) health(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// Status is the body of GET /v1/status.
type Status struct {
	Version       string         `json:"version"`
	Revision      string         `json:"revision,omitempty"`
	Instance      string         `json:"instance,omitempty"`
	Pid           int            `json:"pid"`
	Started       time.Time      `json:"started"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	Limits        Limits         `json:"limits"`
	Envs          int            `json:"envs"`
	ByState       map[string]int `json:"by_state"`
	InFlight      int64          `json:"in_flight"`
	Reload        bool           `json:"reload"`
}

// Limits are the limits in force (limits: in the config).
type Limits struct {
	MaxEnvs            int   `json:"max_envs"`
	MaxStarting        int   `json:"max_starting"`
	MaxQueuedStarts    int   `json:"max_queued_starts"`
	MinAvailableMemory int64 `json:"min_available_memory"`
}

func (h *Handler) status(w http.ResponseWriter, _ *http.Request) {
	l := h.cfg.Envs.Limits()
	s := Status{
		Version: h.cfg.Version, Revision: h.cfg.Revision, Instance: h.cfg.Instance,
		Pid: pid, Started: h.cfg.Started.UTC(), UptimeSeconds: time.Since(h.cfg.Started).Seconds(),
		Limits: Limits{MaxEnvs: l.MaxEnvs, MaxStarting: l.MaxStarting, MaxQueuedStarts: l.MaxQueuedStarts,
			MinAvailableMemory: l.MinAvailableMemory},
		ByState: map[string]int{},
		Reload:  h.cfg.Reload != nil,
	}
	for _, d := range h.cfg.Envs.Details() {
		s.Envs++
		s.ByState[d.State.String()]++
		s.InFlight += d.InFlight
	}
	writeJSON(w, http.StatusOK, s)
}

func (h *Handler) reload(w http.ResponseWriter, _ *http.Request) {
	if h.cfg.Reload == nil {
		writeError(w, http.StatusNotImplemented, "this gateway has no reload path")
		return
	}
	if err := h.cfg.Reload(); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"reload": "started",
		"detail": "the gateway re-executes itself and re-reads its config (as on SIGHUP); envs and connections are handed over; GET /v1/status shows the new pid once it serves"})
}

// errNotFound is answered for an env the manager does not know.
var errNotFound = errors.New("no such env")
